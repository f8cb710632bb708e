"""Real service processes for end-to-end tests: `finetune api` and `finetune worker`."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Service:
    client: httpx.Client
    storage_dir: Path
    worker: subprocess.Popen[bytes]
    env: dict[str, str]
    workdir: Path
    # A key of project "e2e"; the client sends it with every request.
    api_key: str = ""
    # Workers started besides the first, stopped with the service.
    more_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def create_key(self, project: str, *, admin: bool = False) -> str:
        """A new key made by `finetune keys create`, as an operator makes one."""
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "create", "--project", project,
             *(["--admin"] if admin else [])], env=self.env, cwd=self.workdir,
            capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def start_worker(self) -> None:
        self.worker = finetune("worker", env=self.env, cwd=self.workdir,
                               log=self.workdir / "worker.log")

    def add_worker(self, name: str, **settings: str) -> subprocess.Popen[bytes]:
        """Another worker process with `settings` (FT_...) over the service's; its log is
        `<workdir>/<name>.log`."""
        worker = finetune("worker", env={**self.env, **settings}, cwd=self.workdir,
                          log=self.workdir / f"{name}.log")
        self.more_workers.append(worker)
        return worker

    def wait_for(self, job_id: str, statuses: tuple[str, ...] = TERMINAL,
                 timeout: float = 300, condition: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses and (condition is None or condition(job)):
                return job
            if self.worker.poll() is not None:
                raise AssertionError(f"the worker exited with {self.worker.returncode}")
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s: {job}")

    def upload(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as stream:
            response = self.client.post("/v1/datasets", files={"file": (path.name, stream)})
        assert response.status_code == 201, response.text
        return response.json()

    def download_model(self, job_id: str, folder: Path) -> Path:
        """The job's model archive, unpacked into `folder`; answers the model folder."""
        archive = self.client.get(f"/v1/jobs/{job_id}/model")
        assert archive.status_code == 200, archive.text
        with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
            tar.extractall(folder, filter="data")
        return folder / "model"

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        return response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    env.update(settings)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def finetune(*args: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stream:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, cwd=cwd,
                                stdout=stream, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to every process group at once, then SIGKILL to those still there after 20 s."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running_service(settings: dict[str, str], workdir: Path,
                    worker_settings: dict[str, str] | None = None) -> Iterator[Service]:
    """The API and one worker as separate processes, as deployed; logs go to `workdir`.
    `worker_settings` (FT_...) go to that worker only, over `settings`."""
    env = service_env(settings)
    port = free_port()
    api = finetune("api", "--port", str(port), env=env, cwd=workdir, log=workdir / "api.log")
    storage = Path(settings.get("FT_STORAGE_DIR", workdir / "var" / "storage"))
    worker = finetune("worker", env={**env, **(worker_settings or {})}, cwd=workdir,
                      log=workdir / "worker.log")
    service = Service(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60), storage,
                      worker, env, workdir)
    try:
        wait_ready(service.client, api, workdir / "api.log")
        service.api_key = service.create_key("e2e")
        service.client.headers["Authorization"] = f"Bearer {service.api_key}"
        yield service
    finally:
        service.client.close()
        stop(api, service.worker, *service.more_workers)


def wait_ready(client: httpx.Client, api: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise AssertionError(f"the API exited: {log.read_text()[-3000:]}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the API did not become ready: {log.read_text()[-3000:]}")


def trainer_pid(job_id: str) -> int | None:
    """The pid of the trainer child running `job_id`: the process writing the job's log."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            stdout = os.readlink(entry / "fd" / "1")
        except OSError:
            continue
        if b"worker.runner" in argv and stdout.endswith(f"{job_id}/trainer.log"):
            return int(entry.name)
    return None


# The Redis database of production services: one at a time uses it (each empties it first).
REDIS_DB = 11
# Short leases and a fast reaper, so that lost workers and lost messages show up in seconds.
FAST_RECOVERY = {"FT_LEASE_SECONDS": "4", "FT_REAPER_INTERVAL_SECONDS": "1",
                 "FT_RESEND_AFTER_SECONDS": "8", "FT_PROGRESS_INTERVAL_SECONDS": "0.2",
                 "FT_CANCEL_GRACE_SECONDS": "5"}


@contextmanager
def production_service(workdir: Path, model_catalog: Path, *, redis_db: int = REDIS_DB,
                       worker_settings: dict[str, str] | None = None,
                       **extra_settings: str) -> Iterator[Service]:
    """PostgreSQL (a new database), Redis (database `redis_db`, emptied), `finetune migrate`,
    then the API and a worker; `extra_settings` (FT_...) go to every process, `worker_settings`
    to the worker only."""
    from tests.conftest import REDIS_URL, postgres_database

    broker = f"{REDIS_URL}/{redis_db}"
    redis.Redis.from_url(broker).flushdb()
    with postgres_database() as database_url:
        settings = {"FT_DATABASE_URL": database_url, "FT_BROKER_URL": broker,
                    "FT_STORAGE_DIR": str(workdir / "storage"),
                    "FT_MODELS_DIR": str(model_catalog), **FAST_RECOVERY, **extra_settings}
        migrated = subprocess.run([sys.executable, "-m", "app.cli", "migrate"],
                                  env=service_env(settings), cwd=workdir, capture_output=True,
                                  text=True)
        assert migrated.returncode == 0, migrated.stderr
        with running_service(settings, workdir, worker_settings) as service:
            yield service
