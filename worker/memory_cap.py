"""How much memory a trainer and its ranks hold, for the worker's cap on it
(FT_TRAINER_MEMORY_BYTES).

The supervisor looks at every poll and kills the group, as the kernel's OOM killer would,
once it is over the cap (the ranks of a multi-device job die with their parent). A cgroup's
memory.max would stop an allocation itself, but a worker in a container can rarely write one; an address-space limit (RLIMIT_AS) counts reservations
that were never touched, and makes torch, Python and native libraries fail in as many ways.
Resident memory is what runs a machine out, and the peak each process reached (VmHWM)
catches a spike that came and went between two looks.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def tree_memory_bytes(root: int) -> int:
    """The resident memory of `root` and its descendants: their current total, or the highest
    peak one of them reached, whichever is larger. Descendants, not the process group: torchrun
    starts each rank of a multi-device job in a session of its own."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                # "pid (name) state ppid ...": the name may hold spaces and parentheses.
                parents[int(entry.name)] = int((entry / "stat").read_text()
                                               .rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):  # gone meanwhile
                continue
    tree, found = {root}, True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                found = True
    total_kib = peak_kib = 0
    for pid in tree:
        try:
            status = _kib_fields((PROC / str(pid) / "status").read_text())
        except OSError:  # gone meanwhile
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
