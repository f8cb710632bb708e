"""Client subcommands of `finetune` (datasets, submit, jobs, logs, metrics, cancel, download)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add the client subcommands to the `finetune` parser; each sets `handler`."""
