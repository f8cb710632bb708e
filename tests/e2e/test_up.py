"""`finetune up`: one process tree on the embedded default that stops cleanly on SIGTERM/Ctrl-C."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY_MODEL
from tests.e2e.service import Service, free_port, service_env, trainer_pid, wait_ready
from tests.factories import sentiment_rows, write_rows

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_up_runs_everything_and_stops_cleanly(tmp_path: Path, model_catalog: Path,
                                              stop_signal: signal.Signals) -> None:
    shutil.copytree(model_catalog / TINY_MODEL, tmp_path / "var" / "models" / TINY_MODEL)
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(port)],
                          env=service_env({}), cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_ready(client, up, tmp_path / "var" / "logs" / "api.log")
        # Secure by default: a key was made for the CLI, readable by its owner only.
        key_file = tmp_path / "var" / "api-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert client.get("/v1/jobs").status_code == 401
        client.headers["Authorization"] = f"Bearer {key}"
        service = Service(client, tmp_path / "var" / "storage", up, {}, tmp_path)
        dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
        job = service.submit({"task": "text-classification", "model": TINY_MODEL,
                              "dataset": {"train": dataset["id"]},
                              "hyperparameters": {"max_steps": 1_000_000}})
        service.wait_for(job["id"], ("running",), condition=lambda j: j["progress"]["step"] > 0)
        assert trainer_pid(job["id"]) is not None
        tree = descendants(up.pid)
        assert len(tree) >= 3  # api, worker, trainer (and the worker's standby)
        up.send_signal(stop_signal)
        assert up.wait(timeout=90) == 0
    finally:
        client.close()
        if up.poll() is None:
            up.kill()
    output = up.stdout.read().decode() if up.stdout else ""
    assert "finetune is up" in output and "stopped" in output
    assert f"dashboard at http://127.0.0.1:{port}/ui/" in output
    assert output.count(key) == 1, "the key is printed once, at its creation"
    assert key not in (tmp_path / "var" / "logs" / "api.log").read_text()
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()], "orphans left"
    with sqlite3.connect(tmp_path / "var" / "finetune.sqlite") as db:
        status, = db.execute("SELECT status FROM job WHERE id = ?", (job["id"],)).fetchone()
        kinds = [k for (k,) in db.execute(
            "SELECT kind FROM job_event WHERE job_id = ? ORDER BY id", (job["id"],))]
    assert status == "queued" and kinds[-1] == "interrupted"
