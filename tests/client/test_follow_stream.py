"""`finetune logs --follow` and `submit --wait` on the live stream, across an API restart.

A real `finetune api` process on SQLite and no worker: the test moves the job the way a
worker does (the lifecycle's operations on the same database) and kills the API halfway, so
that both clients resume their streams with Last-Event-ID on the restarted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory, transaction
from app.jobs import lifecycle
from app.models import MetricPoint
from tests.client.helpers import finetune, start_finetune
from tests.conftest import TINY_MODEL
from tests.e2e import service
from tests.factories import sentiment_rows, write_rows

T = TypeVar("T")
TOTAL_STEPS = 4
SPEC = f"""\
task: text-classification
model: {TINY_MODEL}
dataset:
  validation_split: 0.25
"""


@dataclass
class Api:
    """`finetune api` on a fixed port, which can be killed and started again there."""

    workdir: Path
    env: dict[str, str]
    port: int
    key: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = service.finetune("api", "--port", str(self.port), env=self.env,
                                        cwd=self.workdir, log=self.workdir / "api.log")
        with httpx.Client(base_url=self.url) as client:
            service.wait_ready(client, self.process, self.workdir / "api.log")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def api(tmp_path: Path, model_catalog: Path) -> Iterator[Api]:
    database = f"sqlite:///{tmp_path / 'finetune.sqlite'}"
    env = service.service_env({"FT_DATABASE_URL": database,
                               "FT_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
                               "FT_STORAGE_DIR": str(tmp_path / "storage"),
                               "FT_MODELS_DIR": str(model_catalog)})
    for command in (["migrate"], ["keys", "create", "--project", "cli"]):
        done = subprocess.run([sys.executable, "-m", "app.cli", *command], env=env, cwd=tmp_path,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    running = Api(tmp_path, env, service.free_port(), key=done.stdout.strip().splitlines()[-1])
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            service.stop(running.process)


def test_the_clients_follow_the_stream_across_an_api_restart(api: Api, tmp_path: Path) -> None:
    access = {"url": api.url, "api_key": api.key}
    write_rows(tmp_path / "reviews.csv", sentiment_rows(24))
    uploaded = finetune("datasets", "upload", str(tmp_path / "reviews.csv"), "--json", **access)
    assert uploaded.returncode == 0, uploaded.stderr
    (tmp_path / "spec.yaml").write_text(SPEC)
    submit = start_finetune("submit", str(tmp_path / "spec.yaml"), "--wait", "--set",
                            f"dataset.train={json.loads(uploaded.stdout)['id']}", **access)
    assert submit.stdout is not None and submit.stderr is not None
    job_id = submit.stdout.readline().strip()
    # Its first progress line, before the job moves on.
    assert submit.stderr.readline() == "queued, waiting for a worker\n"
    follow = start_finetune("logs", job_id, "--follow", **access)
    sessions = make_session_factory(make_engine(api.env["FT_DATABASE_URL"]))

    lease = write(sessions, lambda s: lifecycle.claim(s, job_id, "worker-1", "host-1", 60))
    assert lease is not None
    write(sessions, lambda s: lifecycle.add_event(s, job_id, "dataset_loaded", "18 rows", {}))
    log_step(sessions, lease, 1)
    time.sleep(2)  # both clients have received that much
    api.kill()
    log_step(sessions, lease, 2)
    write(sessions, lambda s: lifecycle.add_event(s, job_id, "evaluation", "while down", {}))
    api.start()
    for step in range(3, TOTAL_STEPS + 1):
        log_step(sessions, lease, step)
    write(sessions, lambda s: lifecycle.succeed(s, lease, {"eval_accuracy": 1.0}, 1.0))

    follow_out, follow_err = follow.communicate(timeout=90)
    submit_out, submit_err = submit.communicate(timeout=90)
    assert follow.returncode == 0, follow_err
    timeline = finetune("logs", job_id, **access).stdout
    assert follow_out == timeline
    assert [line.split()[2] for line in timeline.splitlines()] == [
        "queued", "started", "dataset_loaded", "evaluation", "succeeded"]
    assert submit.returncode == 0, submit_err
    assert submit_out.splitlines()[0] == f"{job_id} succeeded"
    progress = submit_err.splitlines()
    assert progress[-1].startswith(f"succeeded  [####################]  {TOTAL_STEPS}/"
                                   f"{TOTAL_STEPS}  100%  epoch ")
    assert "Traceback" not in submit_err + follow_err


def write(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    with transaction(sessions) as session:
        return work(session)


def log_step(sessions: sessionmaker[Session], lease: lifecycle.Lease, step: int) -> None:
    """What the trainer's reporter writes at a training log: metric points and progress."""
    def report(session: Session) -> None:
        session.add(MetricPoint(job_id=lease.job_id, step=step, epoch=step / TOTAL_STEPS,
                                name="loss", value=1.0 / step))
        lifecycle.report_progress(session, lease.job_id, lease.attempt, step=step,
                                  total_steps=TOTAL_STEPS, epoch=step / TOTAL_STEPS,
                                  eta_seconds=1.0, latest={"train": {"loss": 1.0 / step}})
    write(sessions, report)
