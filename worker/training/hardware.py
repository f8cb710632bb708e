"""What the worker trains on: the device, its name, and the number formats it runs natively.

Precision, attention and telemetry are chosen from this, never from guesses about the machine.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

# CPU flags (as /proc/cpuinfo names them) that mean bf16 arithmetic in hardware: without one,
# bf16 autocast on a CPU is emulated and slower than fp32.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Hardware:
    # "cuda" or "cpu": where the Trainer puts the model.
    device: str
    # The GPU's or the CPU's model name, for people.
    name: str
    # bf16 in hardware: a CUDA GPU of compute capability 8.0 or later, or a CPU with one of
    # NATIVE_BF16_CPU_FLAGS.
    native_bf16: bool
    # TF32 matmuls for fp32 work (CUDA GPUs of compute capability 8.0 or later).
    tf32: bool
    # The CPU flags among NATIVE_BF16_CPU_FLAGS (empty on a GPU worker's answer too: the
    # GPU decides there).
    cpu_bf16_flags: tuple[str, ...] = ()


@functools.cache
def detect() -> Hardware:
    """The hardware this process trains on: the first CUDA GPU if there is one, else the CPU."""
    if torch.cuda.is_available():
        major, _minor = torch.cuda.get_device_capability(0)
        return Hardware(device="cuda", name=torch.cuda.get_device_name(0),
                        native_bf16=torch.cuda.is_bf16_supported(), tf32=major >= 8)
    flags = _cpu_flags()
    native = tuple(flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags)
    return Hardware(device="cpu", name=_cpu_name(), native_bf16=bool(native), tf32=False,
                    cpu_bf16_flags=native)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no flags known, so nothing is assumed native
        return ""


def _cpu_flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "CPU"
