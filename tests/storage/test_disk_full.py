"""A full disk is a fault like any other, on real small filesystems (tmpfs of a few hundred
KiB, mounted for the test): an upload, a conversion, a checkpoint, the model's save and its
archive each fail with `storage_full`, delete their partial files and keep what was complete.

Mounting needs root or CAP_SYS_ADMIN; without it these tests fail, they are not skipped.
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory, transaction
from app.error_codes import hint_for
from app.jobs import lifecycle
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.models import DEFAULT_PROJECT_ID, Checkpoint, Job, JobAttempt, new_id
from app.storage import LocalStorage
from tests.api.helpers import assert_error, upload_file
from tests.conftest import TINY_MODEL
from tests.factories import (
    sentiment_rows,
    stored_sentiment_dataset,
    write_rows,
    write_tiny_bert,
)

ROOT = Path(__file__).resolve().parents[2]
Mount = Callable[..., Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Mount]:
    """Mounts a tmpfs of `size` (mount's notation: "512k") and answers its folder; every
    one is unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str, *, inodes: int | None = None) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                  capture_output=True, text=True, timeout=30, check=False)
            refused = done.returncode != 0 and (done.stderr.strip() or f"status {done.returncode}")
        except OSError as exc:
            refused = str(exc)
        if refused:
            pytest.fail(f"the disk-full tests mount a small tmpfs, which needs root or "
                        f"CAP_SYS_ADMIN; mount refused: {refused}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=True, timeout=30)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """A migrated SQLite database, off the small disks; its URL and a session factory."""
    url = f"sqlite:///{tmp_path_factory.mktemp('disk-full') / 'service.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    yield url, make_session_factory(engine)
    engine.dispose()


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture(params=["local", "bucket"])
def settings(request: pytest.FixtureRequest, settings: Settings,
             small_disk: Mount) -> Settings:
    """The API's folder on a disk of 512 KiB; with a bucket, the folder still takes the
    upload first."""
    local = {"storage_url": None} if request.param == "local" else {}
    return settings.model_copy(update={"storage_dir": small_disk("512k"), **local})


def assert_refused_for_room(api: TestClient, settings: Settings, path: Path) -> None:
    before = api.get("/v1/datasets").json()["data"]
    error = assert_error(upload_file(api, path), 507, "storage_full")
    assert "FT_STORAGE_DIR" in error["message"] and "bytes free" in error["message"]
    assert list((settings.storage_dir / "tmp").iterdir()) == []
    assert api.get("/v1/datasets").json()["data"] == before
    # The room is back, and the API answers the next upload.
    small = upload_file(api, write_rows(path.with_name("small.csv"), sentiment_rows(20)))
    assert small.status_code == 201, small.text


def test_an_upload_larger_than_the_free_space_is_refused_with_507(
        api: TestClient, settings: Settings, tmp_path: Path) -> None:
    big = write_rows(tmp_path / "big.csv", sentiment_rows(12_000))
    assert 600_000 < big.stat().st_size < settings.max_upload_bytes
    assert_refused_for_room(api, settings, big)


def test_a_conversion_larger_than_the_free_space_is_refused_with_507(
        api: TestClient, settings: Settings, tmp_path: Path) -> None:
    # Each question's row repeats its paragraph: 24 KiB of SQuAD become 700 KiB of rows.
    context = "the river runs north to the sea. " * 700
    squad = {"version": "v1.1", "data": [{"title": "rivers", "paragraphs": [{
        "context": context, "qas": [
            {"id": f"q{n}", "question": f"where does river {n} run?",
             "answers": [{"text": "north", "answer_start": 15}]} for n in range(30)]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    assert path.stat().st_size < 100_000
    assert_refused_for_room(api, settings, path)


# -- the worker ------------------------------------------------------------------------------


def running_job(session_factory: sessionmaker[Session], storage: LocalStorage,
                **spec: Any) -> lifecycle.Lease:
    """A job on a 40-row dataset of the store, claimed by a worker as its next attempt."""
    with transaction(session_factory) as session:
        dataset = stored_sentiment_dataset(session, storage, DEFAULT_PROJECT_ID)
        stored = JobSpec.model_validate({"task": "text-classification", "model": TINY_MODEL,
                                         "dataset": {"train": dataset.id}, **spec})
        job = lifecycle.submit(session, Job(
            id=new_id("job"), project_id=DEFAULT_PROJECT_ID,
            spec=stored.model_dump(mode="json"), spec_version=SPEC_VERSION, metrics={}),
            lambda *_: None, {})
    return claim(session_factory, job.id)


def claim(session_factory: sessionmaker[Session], job_id: str) -> lifecycle.Lease:
    with transaction(session_factory) as session:
        lease = lifecycle.claim(session, job_id, "test-worker:1", "test-worker", 600)
    assert lease is not None
    return lease


def test_a_checkpoint_that_fills_the_disk_ends_the_attempt_and_keeps_the_one_before(
        small_disk: Mount, database: tuple[str, Any], model_catalog: Path) -> None:
    from tests.training.helpers import RecordingSink
    from worker.checkpoints import resume_point
    from worker.runner import EXIT_FAILED, OUTCOME_FILE

    url, session_factory = database
    # A checkpoint of the tiny model takes ~450 KiB: the first fits, the second does not.
    storage = LocalStorage(small_disk("704k"))
    lease = running_job(session_factory, storage, checkpoint_steps=10, logging_steps=5,
                        hyperparameters={"max_steps": 30, "batch_size": 8})
    child = subprocess.run(  # nosec B603
        [sys.executable, "-m", "worker.runner", "--job-id", lease.job_id, "--attempt",
         str(lease.attempt)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "FT_DATABASE_URL": url, "FT_STORAGE_DIR": str(storage.root),
             "FT_MODELS_DIR": str(model_catalog)}, check=False)

    assert child.returncode == EXIT_FAILED, child.stderr[-3000:]
    work = storage.job_work_dir(lease.job_id)
    outcome = json.loads((work / OUTCOME_FILE).read_text())
    assert outcome["code"] == "storage_full", outcome
    assert str(work) in outcome["message"] and "checkpoint-20" in outcome["message"]
    assert "bytes free" in outcome["message"] and outcome["hint"] == hint_for("storage_full")
    assert list((work / "trainer").glob("checkpoint-*")) == []
    assert [p.name for p in storage.checkpoints_dir(lease.job_id).iterdir()] == ["step-10"]
    with session_factory() as session:
        assert list(session.scalars(select(Checkpoint.step).where(
            Checkpoint.job_id == lease.job_id))) == [10]
    events = RecordingSink()
    assert resume_point(session_factory, lease.job_id, storage, events) == (
        storage.checkpoints_dir(lease.job_id) / "step-10", 10)
    assert events.kinds() == []


def test_a_model_save_that_fills_the_disk_leaves_no_partial_folder(
        small_disk: Mount, model_catalog: Path, tmp_path: Path) -> None:
    from worker.runner import EXIT_FAILED

    out = small_disk("112k")  # training needs ~16 KiB of it, the model folder ~165 KiB
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "task": "text-classification", "model": TINY_MODEL,
        "dataset": {"train": str(write_rows(tmp_path / "train.csv", sentiment_rows(40)))},
        "hyperparameters": {"max_steps": 5, "batch_size": 8}}))
    child = subprocess.run(  # nosec B603
        [sys.executable, "-m", "worker.runner", "--spec", str(spec), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "FT_MODELS_DIR": str(model_catalog)})

    assert child.returncode == EXIT_FAILED, child.stderr[-3000:]
    error = json.loads(child.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "storage_full", error
    assert ".model.partial" in error["message"] and error["hint"] == hint_for("storage_full")
    assert sorted(p.name for p in out.iterdir()) == ["trainer"]


def test_an_archive_that_fills_the_disk_sends_the_job_back_to_the_queue(
        small_disk: Mount, database: tuple[str, Any], tmp_path: Path) -> None:
    from worker.supervisor import JobSupervisor, TrainerRun

    url, session_factory = database
    storage = LocalStorage(small_disk("256k"))
    settings = Settings(database_url=url, storage_dir=storage.root)
    lease = running_job(session_factory, storage, max_attempts=2)
    supervisor = JobSupervisor(settings, session_factory, storage, lease.job_id,
                               None, lambda *_: None, lambda: False)  # type: ignore[arg-type]
    for attempt in (1, 2):  # the model fits; it and its archive do not
        write_tiny_bert(storage.job_work_dir(lease.job_id) / "model")
        supervisor._finalize(lease, TrainerRun(outcome={"status": "succeeded", "metrics": {}}))
        job_dir = storage.job_dir(lease.job_id)
        assert sorted(p.name for p in job_dir.iterdir()) == ["work"], attempt
        assert list(storage.job_work_dir(lease.job_id).iterdir()) == []
        with session_factory() as session:
            job = session.get(Job, lease.job_id)
            ended = session.scalars(select(JobAttempt).where(
                JobAttempt.job_id == lease.job_id).order_by(JobAttempt.number)).all()[-1]
        assert (ended.outcome, ended.error_code) == ("storage_full", "storage_full")
        if attempt == 1:
            assert job.status == "queued"
            lease = claim(session_factory, lease.job_id)
    # The attempts a full disk ends are counted: max_attempts bounds them.
    assert job.status == "failed" and job.error_code == "too_many_attempts"
    assert "storage_full" in job.error_message and "archiving the model" in job.error_message


def test_a_checkpoint_with_no_room_to_be_kept_is_deleted(small_disk: Mount) -> None:
    from worker.checkpoints import CheckpointKeeper
    from worker.training.errors import DiskFull

    # Few inodes: the folder of kept checkpoints cannot be made once they are used up.
    storage = LocalStorage(small_disk("1m", inodes=64))
    written = storage.job_work_dir("job_k") / "trainer" / "checkpoint-10"
    written.mkdir(parents=True)
    (written / "model.safetensors").write_bytes(b"weights")
    filler = storage.root / "filler"
    filler.mkdir()
    with pytest.raises(OSError, match="No space left"):  # the inodes are all used
        for number in range(1000):
            (filler / str(number)).touch()
    # No database: a checkpoint that cannot be kept fails before it is recorded.
    keeper = CheckpointKeeper(None, "job_k", storage, None)  # type: ignore[arg-type]
    with pytest.raises(DiskFull, match="step 10") as caught:
        keeper._keep(SimpleNamespace(output_dir=str(written.parent)),  # type: ignore[arg-type]
                     SimpleNamespace(global_step=10))  # type: ignore[arg-type]
    assert caught.value.code == "storage_full" and "bytes free" in caught.value.message
    assert not written.exists() and not storage.checkpoints_dir("job_k").exists()
