"""A trainer process started ahead of time, its imports done, waiting for a job id and attempt.

Importing torch, transformers and datasets takes about ten seconds on a small machine; the
worker pays it between jobs instead of at the start of each one.
"""

from __future__ import annotations

import logging
import os
import signal

# Fixed argv, no shell: the trainer module.
import subprocess  # nosec B404
import sys

from app.processes import die_with_parent

logger = logging.getLogger("finetune.worker")


def trainer_env() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


class StandbyTrainer:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        # Argv is sys.executable and a module.
        self.process = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "worker.runner", "--standby"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=trainer_env(),
            start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL))

    def take(self, job_id: str, attempt: int) -> subprocess.Popen[bytes] | None:
        """The standby process, now running attempt `attempt` of `job_id`; None when there
        is no live one."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None or process.stdin is None:
            return None
        try:
            process.stdin.write(f"{job_id} {attempt}\n".encode())
            process.stdin.close()
        except BrokenPipeError:
            return None
        return process

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()  # end of input: the standby exits without a job
            process.wait(timeout=5)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
