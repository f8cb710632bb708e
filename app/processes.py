"""Child processes that cannot outlive their parent."""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: on Linux the child gets `signum` when its parent dies, so a killed
    worker or `finetune up` leaves no orphan behind (a no-op elsewhere)."""

    def arrange() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
        except OSError:
            pass

    return arrange
