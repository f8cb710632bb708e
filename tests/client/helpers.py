"""Running the `finetune` client as a real subprocess, as a user or a script would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.service import service_env

UNREACHABLE_URL = "http://127.0.0.1:1"


def client_env(url: str, api_key: str | None) -> dict[str, str]:
    return {**service_env({}), "FT_URL": url, **({"FT_API_KEY": api_key} if api_key else {})}


def finetune(*args: str, url: str = UNREACHABLE_URL, api_key: str | None = None,
             cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args],
                          env=client_env(url, api_key), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_finetune(*args: str, url: str, api_key: str | None = None,
                   cwd: Path | None = None) -> subprocess.Popen[str]:
    """The client in the background, for commands that follow a job while a test acts."""
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args],
                            env=client_env(url, api_key), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
