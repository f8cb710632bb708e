"""The ranks of a job that trains on several devices.

torchrun, started by the supervisor, runs one trainer child per device and tells each its
RANK and WORLD_SIZE; the Trainer joins them into one process group. Every rank trains; only the main
rank reports to the service and writes the model, and a checkpoint is recorded once every
rank has written its part of it (`wait_for_all_ranks`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_rank() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def wait_for_all_ranks() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag, true if it is true on any rank: what every rank then does alike (a step's
    save or stop must happen on all of them, or the next collective waits forever)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flags
    agreed = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return [bool(value) for value in agreed.tolist()]

