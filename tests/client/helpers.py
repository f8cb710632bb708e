"""Running the `finetune` client as a real subprocess, as a user or a script would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.service import service_env

UNREACHABLE_URL = "http://127.0.0.1:1"


def client_env(url: str) -> dict[str, str]:
    return {**service_env({}), "FT_URL": url}


def finetune(*args: str, url: str = UNREACHABLE_URL, cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=client_env(url),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def start_finetune(*args: str, url: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """The client in the background, for commands that follow a job while a test acts."""
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=client_env(url),
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
