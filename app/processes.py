"""Child processes: the worker started by module name, and children that die with their parent."""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1

_WORKER_MODULE = "worker"
# What a worker cannot run without: its package and the core of the `worker` extra. Looked up,
# never imported, so that nothing under app/ loads the worker or torch.
_WORKER_NEEDS = (_WORKER_MODULE, "torch", "transformers", "datasets", "accelerate", "peft")


def worker_command() -> list[str]:
    """The argv of a worker process (`python -m worker`), or SystemExit saying what to install
    when this is a base install (the API and the CLI) without the `worker` extra."""
    missing = [name for name in _WORKER_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"finetune: a worker needs the `worker` extra, which is not installed "
                         f"here (missing: {', '.join(missing)}); install it with "
                         'pip install "finetune-service[worker]"')
    # -P: a folder named worker/ in the current directory must not stand in for the package.
    return [sys.executable, "-P", "-m", _WORKER_MODULE]


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: on Linux the child gets `signum` when its parent dies, so a killed
    worker or `finetune up` leaves no orphan behind (a no-op elsewhere)."""

    def arrange() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
        except OSError:
            pass

    return arrange
