"""How much memory a trainer's process group holds, for the worker's cap on it
(FT_TRAINER_MEMORY_BYTES).

The supervisor looks at every poll and kills the group, as the kernel's OOM killer would,
once it is over the cap. A cgroup's memory.max would stop an allocation itself, but a worker
in a container can rarely write one; an address-space limit (RLIMIT_AS) counts reservations
that were never touched, and makes torch, Python and native libraries fail in as many ways.
Resident memory is what runs a machine out, and the peak each process reached (VmHWM)
catches a spike that came and went between two looks.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def group_memory_bytes(group: int) -> int:
    """The group's resident memory: its processes' current total, or the highest peak one of
    them reached, whichever is larger."""
    total_kib = peak_kib = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (name) state ppid pgrp ...": the name may hold spaces and parentheses.
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            status = _kib_fields((entry / "status").read_text())
        except (OSError, ValueError, IndexError):  # gone meanwhile, or a kernel thread
            continue
        total_kib += status.get("VmRSS", 0)
        peak_kib = max(peak_kib, status.get("VmHWM", 0))
    return max(total_kib, peak_kib) * 1024


def _kib_fields(status: str) -> dict[str, int]:
    fields = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            fields[name] = int(value.split()[0])
    return fields


def gib(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB"
