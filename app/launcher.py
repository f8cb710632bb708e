"""`finetune up`: the API, a worker and the webhook dispatcher on one machine, as one process
tree that stops cleanly."""

from __future__ import annotations

import signal

# Fixed argv, no shell: our own entry points.
import subprocess  # nosec B404
import sys
import time
from pathlib import Path
from types import FrameType

from app import migrate
from app.config import Settings
from app.keys.commands import LOCAL_PROJECT, ensure_local_key
from app.processes import die_with_parent, worker_command

STOP_TIMEOUT_SECONDS = 60.0


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stream:
        # Own sessions: a Ctrl-C in the terminal reaches `up` only, which then stops each
        # child exactly once (a second signal would make Celery's shutdown a cold one).
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,  # nosec B603
                                start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))


def run_up(settings: Settings, host: str, port: int) -> int:
    # Before anything starts: without the `worker` extra this says what to install.
    worker = worker_command()
    settings.prepare_local_dirs()
    migrate.upgrade(settings.database_url)
    if settings.require_api_keys and (key := ensure_local_key(settings)) is not None:
        print(f"Created an API key of project '{LOCAL_PROJECT}', shown this once; the CLI "
              f"reads it from {settings.api_key_file} (mode 0600):\n  {key}", flush=True)
    logs = settings.storage_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api = [sys.executable, "-m", "app.cli", "api", "--host", host, "--port", str(port)]
    webhooks = [sys.executable, "-m", "app.cli", "webhooks"]
    children = {"api": _spawn(api, logs / "api.log"), "worker": _spawn(worker, logs / "worker.log"),
                "webhooks": _spawn(webhooks, logs / "webhooks.log")}
    sign_in = (f"sign in with the key in {settings.api_key_file}" if settings.require_api_keys
               else "authentication is off: sign in with an empty key")
    print(f"finetune is up: API on http://{host}:{port} (docs at /docs), one worker, the "
          f"webhook dispatcher.\n"
          f"  dashboard at http://{host}:{port}/ui/ ({sign_in})\n"
          f"  database {settings.database_url}\n  broker   {settings.broker_url}\n"
          f"  storage  {settings.storage_dir}\n"
          f"  logs     {logs}/api.log, {logs}/worker.log, {logs}/webhooks.log\n"
          "Ctrl-C stops everything.", flush=True)
    stopping: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        crashed = [name for name, child in children.items() if child.poll() is not None]
        if crashed:
            print(f"finetune up: the {', '.join(crashed)} process exited; see {logs}",
                  file=sys.stderr)
            exit_code = 1
            break
        time.sleep(0.5)
    _stop_all(children)
    print("finetune up: stopped.", flush=True)
    return exit_code


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each child (the worker re-queues a running job), SIGKILL past the timeout."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children.values():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
