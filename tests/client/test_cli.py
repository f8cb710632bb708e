"""The `finetune` client against the real service: the API and a worker on the embedded defaults.

One service and one trained job serve the whole module, since each job costs seconds of
training; the failing and cancelled jobs share one test for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.helpers import finetune, start_finetune
from tests.conftest import TINY_MODEL
from tests.e2e.service import Service, running_service, service_env
from tests.factories import sentiment_rows, write_rows

pytestmark = pytest.mark.e2e

MAX_STEPS = 8
TINY_SPEC = f"""\
task: text-classification
model: {TINY_MODEL}
dataset:
  train: REPLACE_WITH_DATASET_ID
  validation_split: 0.25
hyperparameters:
  epochs: 1
  batch_size: 8
evaluation:
  strategy: steps
  steps: 4
logging_steps: 2
"""


@dataclass
class Deployment:
    service: Service
    workdir: Path

    @property
    def url(self) -> str:
        return str(self.service.client.base_url).rstrip("/")

    @property
    def access(self) -> dict[str, str]:
        """The client's connection: the service's URL and a key of its project."""
        return {"url": self.url, "api_key": self.service.api_key}

    def finish(self, client: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
        """The output of a client that follows a job; fails at once if the worker died."""
        deadline = time.monotonic() + timeout
        while client.poll() is None:
            if self.service.worker.poll() is not None:
                client.kill()
                log = (self.workdir / "worker.log").read_text()[-3000:]
                raise AssertionError(f"the worker exited while a client waited: {log}")
            if time.monotonic() > deadline:
                client.kill()
                raise AssertionError(f"the client did not finish in {timeout}s: {client.args}")
            time.sleep(0.2)
        return client.communicate()


@dataclass
class TrainedJob:
    id: str
    submit_stdout: str
    submit_stderr: str
    follow_stdout: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory,
               model_catalog: Path) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("client-service")
    # The default catalog is ./var/models: put the tiny model where the defaults look.
    shutil.copytree(model_catalog / TINY_MODEL, workdir / "var" / "models" / TINY_MODEL)
    settings = {"FT_PROGRESS_INTERVAL_SECONDS": "0.2"}
    # Migrated up front: the API and the worker would otherwise both migrate the new SQLite
    # file at once, and one of them can find it locked.
    migrated = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=workdir,
                              env=service_env(settings), capture_output=True, text=True,
                              check=False)
    assert migrated.returncode == 0, migrated.stderr
    with running_service(settings, workdir) as service:
        yield Deployment(service, workdir)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("client-files")
    write_rows(folder / "reviews.csv", sentiment_rows(48))
    (folder / "tiny.yaml").write_text(TINY_SPEC)
    return folder


@pytest.fixture(scope="module")
def dataset_id(deployment: Deployment, files: Path) -> str:
    result = finetune("datasets", "upload", str(files / "reviews.csv"), "--name", "reviews",
                      "--json", **deployment.access)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


@pytest.fixture(scope="module")
def trained(deployment: Deployment, files: Path, dataset_id: str) -> TrainedJob:
    """A job submitted with --wait from a YAML spec, followed by `logs --follow` meanwhile."""
    submit = start_finetune(
        "submit", str(files / "tiny.yaml"), "--wait", "--name", "cli-job",
        "--set", f"dataset.train={dataset_id}", "--set", f"hyperparameters.max_steps={MAX_STEPS}",
        "--set", "hyperparameters.learning_rate=3e-3", **deployment.access)
    assert submit.stdout is not None
    job_id = submit.stdout.readline().strip()
    follow = start_finetune("logs", job_id, "--follow", **deployment.access)
    submit_out, submit_err = deployment.finish(submit)
    follow_out, follow_err = deployment.finish(follow)
    assert submit.returncode == 0, submit_err
    assert follow.returncode == 0, follow_err
    return TrainedJob(job_id, f"{job_id}\n{submit_out}", submit_err, follow_out)


def test_datasets_upload_ls_show(deployment: Deployment, files: Path, dataset_id: str) -> None:
    uploaded = finetune("datasets", "upload", str(files / "reviews.csv"), **deployment.access)
    assert uploaded.returncode == 0, uploaded.stderr
    second_id = re.search(r"^id\s+(ds_\w+)$", uploaded.stdout, re.MULTILINE)
    assert second_id is not None, uploaded.stdout
    assert re.search(r"^rows\s+48$", uploaded.stdout, re.MULTILINE)
    assert "text (string), label (string)" in uploaded.stdout
    assert re.search(r"^layout\s+tabular$", uploaded.stdout, re.MULTILINE)
    assert re.search(r"^fits\s+text-classification; ", uploaded.stdout, re.MULTILINE)

    listed = json.loads(finetune("datasets", "ls", "--json", **deployment.access).stdout)
    assert [d["id"] for d in listed["data"][:2]] == [second_id.group(1), dataset_id]
    table = finetune("datasets", "ls", "--limit", "1", **deployment.access)
    assert table.stdout.splitlines()[0].split() == ["id", "name", "layout", "rows", "size",
                                                    "created"]
    assert second_id.group(1) in table.stdout and dataset_id not in table.stdout
    assert "more" in table.stderr

    shown = finetune("datasets", "show", dataset_id, "--rows", "3", **deployment.access)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^name\s+reviews$", shown.stdout, re.MULTILINE)
    preview = shown.stdout.split("first 3 rows:\n", 1)[1].splitlines()
    assert preview[0].split() == ["text", "label"] and len(preview) == 4
    assert preview[1].split()[-1] in ("negative", "positive")
    as_json = json.loads(finetune("datasets", "show", dataset_id, "--json", "--rows", "2",
                                  **deployment.access).stdout)
    assert as_json["id"] == dataset_id and as_json["num_rows"] == 48
    assert len(as_json["preview"]["rows"]) == 2


def test_submit_wait_follows_the_job_to_success(deployment: Deployment,
                                                trained: TrainedJob) -> None:
    assert trained.submit_stdout.splitlines()[:2] == [trained.id, f"{trained.id} succeeded"]
    assert re.match(r"job_\w+$", trained.id)
    progress = trained.submit_stderr.splitlines()
    assert progress[0] == "queued, waiting for a worker"
    assert progress[-1].startswith(f"succeeded  [####################]  "
                                   f"{MAX_STEPS}/{MAX_STEPS}  100%  epoch ")
    assert "  loss " in progress[-1] and "  eval_accuracy " in progress[-1]
    job = deployment.service.client.get(f"/v1/jobs/{trained.id}").json()
    assert job["name"] == "cli-job"
    assert job["spec"]["hyperparameters"]["max_steps"] == MAX_STEPS
    assert job["spec"]["hyperparameters"]["learning_rate"] == 3e-3


def test_jobs_ls_and_show(deployment: Deployment, trained: TrainedJob) -> None:
    listed = finetune("jobs", "ls", **deployment.access)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["id", "name", "status", "progress", "model", "created"]
    row = next(r for r in rows if r.startswith(trained.id))
    assert row.split()[1:5] == ["cli-job", "succeeded", "100%", TINY_MODEL]
    failed = json.loads(finetune("jobs", "ls", "--status", "failed", "--json",
                                 **deployment.access).stdout)
    assert trained.id not in [j["id"] for j in failed["data"]]

    shown = finetune("jobs", "show", trained.id, **deployment.access)
    assert re.search(r"^status\s+succeeded$", shown.stdout, re.MULTILINE)
    assert re.search(rf"^progress\s+{MAX_STEPS}/{MAX_STEPS} steps \(100%\)", shown.stdout,
                     re.MULTILINE)
    assert re.search(r"^final\s+.*eval_accuracy \d", shown.stdout, re.MULTILINE)


def test_logs_show_the_timeline_and_follow_it_live(deployment: Deployment,
                                                   trained: TrainedJob) -> None:
    logs = finetune("logs", trained.id, **deployment.access)
    kinds = [line.split()[2] for line in logs.stdout.splitlines()]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "succeeded"
    assert "Job succeeded" in logs.stdout.splitlines()[-1]
    assert trained.follow_stdout == logs.stdout
    events = json.loads(finetune("logs", trained.id, "--json", **deployment.access).stdout)
    assert [e["kind"] for e in events["data"]] == kinds


def test_metrics_table_and_plot(deployment: Deployment, trained: TrainedJob,
                                tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "curves.png"
    result = finetune("metrics", trained.id, "--plot", str(plot), **deployment.access)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["step", "epoch", "loss", "learning_rate", "grad_norm"]
    assert "eval_accuracy" in header.split()
    assert [int(row.split()[0]) for row in rows] == sorted({*range(2, MAX_STEPS + 1, 2)})
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and plot.stat().st_size > 1000
    series = json.loads(finetune("metrics", trained.id, "--json", **deployment.access).stdout)
    assert len(series["series"]["loss"]) == MAX_STEPS // 2


def test_download_unpacks_a_checked_model_folder(deployment: Deployment, trained: TrainedJob,
                                                 tmp_path: Path) -> None:
    result = finetune("download", trained.id, cwd=tmp_path, **deployment.access)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / f"{trained.id}-model"
    assert result.stdout.strip() == str(folder)
    assert "100%" in result.stderr
    manifest = deployment.service.client.get(f"/v1/jobs/{trained.id}/artifacts").json()["data"]
    assert (folder / "config.json").is_file()
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == \
        [a["path"] for a in manifest]
    for artifact in manifest:
        assert hashlib.sha256((folder / artifact["path"]).read_bytes()).hexdigest() == \
            artifact["sha256"]

    again = finetune("download", trained.id, str(folder), **deployment.access)
    assert again.returncode == 1
    assert "already exists" in again.stderr and str(folder) in again.stderr


def test_download_refuses_a_model_that_differs_from_its_manifest(
        deployment: Deployment, trained: TrainedJob, tmp_path: Path) -> None:
    with sqlite3.connect(deployment.workdir / "var" / "finetune.sqlite") as database:
        database.execute("UPDATE artifact SET sha256 = ? WHERE job_id = ? AND path = ?",
                         ("0" * 64, trained.id, "config.json"))
    try:
        result = finetune("download", trained.id, str(tmp_path / "model"), **deployment.access)
    finally:
        with sqlite3.connect(deployment.workdir / "var" / "finetune.sqlite") as database:
            database.execute("UPDATE artifact SET sha256 = ? WHERE job_id = ? AND path = ?",
                             (_sha256_of_config(deployment, trained.id), trained.id,
                              "config.json"))
    assert result.returncode == 1
    assert "config.json: sha256 differs from the manifest" in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be left half-unpacked"


def _sha256_of_config(deployment: Deployment, job_id: str) -> str:
    body = deployment.service.client.get(f"/v1/jobs/{job_id}/artifacts/config.json").content
    return hashlib.sha256(body).hexdigest()


def test_a_failed_job_says_why_and_a_cancelled_one_exits_130(
        deployment: Deployment, files: Path, dataset_id: str, trained: TrainedJob) -> None:
    spec = [str(files / "tiny.yaml"), "--wait", "--set", f"dataset.train={dataset_id}"]
    # With --json, stdout is kept for the final job and the id comes first on stderr.
    failing = start_finetune("submit", *spec, "--model", "no-such/model", "--json",
                             **deployment.access)
    assert failing.stderr is not None
    failing_id = failing.stderr.readline().strip()
    # Queued behind the failing job on the one worker; that job fails fast, so the cancel
    # finds this one queued (cancelled at once) or just started (cancelling).
    doomed = start_finetune("submit", *spec, "--set", "hyperparameters.max_steps=100000",
                            **deployment.access)
    assert doomed.stdout is not None
    doomed_id = doomed.stdout.readline().strip()
    cancelled = finetune("cancel", doomed_id, **deployment.access)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() in (f"{doomed_id} cancelled", f"{doomed_id} cancelling")

    _, doomed_err = deployment.finish(doomed)
    assert doomed.returncode == 130
    assert f"job {doomed_id} was cancelled" in doomed_err
    failing_out, failing_err = deployment.finish(failing)
    assert failing.returncode == 1
    final = json.loads(failing_out)
    assert final["id"] == failing_id and final["status"] == "failed"
    assert final["error"]["code"] == "model_not_found"
    assert f"error: job {failing_id} failed: model_not_found: " in failing_err
    assert "no-such/model" in failing_err and "\nhint: " in failing_err
    assert "Traceback" not in failing_err

    finished = finetune("cancel", trained.id, **deployment.access)
    assert finished.returncode == 1
    assert finished.stderr.startswith("error: job_already_finished: ")


def test_api_errors_are_one_line_with_code_and_param(deployment: Deployment,
                                                     files: Path) -> None:
    result = finetune("submit", str(files / "tiny.yaml"), "--set", "dataset.train=ds_missing",
                      **deployment.access)
    assert result.returncode == 1
    assert result.stderr == ("error: dataset_not_found: no dataset with id ds_missing "
                             "(param: dataset.train)\n")
    assert result.stdout == ""
    unknown = finetune("jobs", "show", "job_nope", "--json", **deployment.access)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: not_found: ")


def test_the_key_comes_from_the_environment_or_the_key_file(deployment: Deployment,
                                                             tmp_path: Path) -> None:
    without = finetune("jobs", "ls", url=deployment.url, cwd=tmp_path)
    assert without.returncode == 1
    assert without.stderr.startswith("error: unauthorized: ") and "FT_API_KEY" in without.stderr
    # Where `finetune up` leaves it: ./var/api-key.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "api-key").write_text(deployment.service.api_key + "\n")
    assert finetune("jobs", "ls", url=deployment.url, cwd=tmp_path).returncode == 0
    wrong = finetune("jobs", "ls", url=deployment.url, api_key="ftk_" + "x" * 48, cwd=tmp_path)
    assert wrong.returncode == 1 and "invalid_api_key" in wrong.stderr
    assert "x" * 48 not in wrong.stderr
