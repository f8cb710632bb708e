"""What the worker trains on: the device, its name, and the number formats it runs natively.

Precision, attention and telemetry are chosen from this, never from guesses about the machine.
"""

from __future__ import annotations

import functools
import platform
import re
import time
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


# Dense peak FLOP/s per precision ("tf32": fp32 work with TF32 matmuls), the denominator of MFU.
# Sparsity figures (2x these) are never the denominator. First pattern that matches the device
# name wins, so the specific variants come before their families. A format missing from a row
# has no tensor-core path on that GPU (T4 and V100 have no bf16 and no TF32).
_TERA = 1e12
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    # NVIDIA H200 NVL and H100 NVL datasheets: FP32 60, TF32 835, BF16/FP16 1,671 TFLOPS with
    # sparsity.
    (r"H[12]00 NVL", {"fp32": 60 * _TERA, "tf32": 417.5 * _TERA, "bf16": 835.5 * _TERA,
                   "fp16": 835.5 * _TERA}),
    # NVIDIA H200 (SXM) datasheet: the H100 SXM's compute, FP32 67, TF32 989, BF16 1,979 with
    # sparsity; dense bf16 989 as fms-fsdp #89 takes for the MFU denominator.
    (r"H200|H100.*(SXM|HBM3)", {"fp32": 67 * _TERA, "tf32": 494.7 * _TERA,
                                "bf16": 989.4 * _TERA, "fp16": 989.4 * _TERA}),
    # NVIDIA H100 PCIe datasheet: FP32 51, TF32 756, BF16 1,513 with sparsity.
    (r"H100", {"fp32": 51 * _TERA, "tf32": 378 * _TERA, "bf16": 756 * _TERA,
               "fp16": 756 * _TERA}),
    # NVIDIA A100 datasheet (SXM and PCIe alike): FP32 19.5, TF32 156, BF16/FP16 312 dense.
    (r"A100", {"fp32": 19.5 * _TERA, "tf32": 156 * _TERA, "bf16": 312 * _TERA,
               "fp16": 312 * _TERA}),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 366, BF16 733 with sparsity.
    (r"L40S", {"fp32": 91.6 * _TERA, "tf32": 183 * _TERA, "bf16": 366 * _TERA,
               "fp16": 366 * _TERA}),
    # NVIDIA L4 datasheet: FP32 30.3, TF32 120, BF16/FP16 242 with sparsity.
    (r"\bL4\b", {"fp32": 30.3 * _TERA, "tf32": 60 * _TERA, "bf16": 121 * _TERA,
                 "fp16": 121 * _TERA}),
    # NVIDIA A40 datasheet: FP32 37.4, TF32 74.8, BF16 (FP32 accumulate) 149.7 dense.
    (r"\bA40\b", {"fp32": 37.4 * _TERA, "tf32": 74.8 * _TERA, "bf16": 149.7 * _TERA,
                  "fp16": 149.7 * _TERA}),
    # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16/FP16 125 dense. AWS publishes no
    # per-format figures for its A10G (the same GA102 chip): taken as the A10's, an assumption.
    (r"\bA10G?\b", {"fp32": 31.2 * _TERA, "tf32": 62.5 * _TERA, "bf16": 125 * _TERA,
                    "fp16": 125 * _TERA}),
    # NVIDIA Ada whitepaper, RTX 4090: FP32 82.6, TF32 82.6, BF16/FP16 with FP32 accumulate
    # 165.2 dense (the GeForce rate; fp16 accumulate doubles it, autocast accumulates in fp32).
    (r"RTX 4090", {"fp32": 82.6 * _TERA, "tf32": 82.6 * _TERA, "bf16": 165.2 * _TERA,
                   "fp16": 165.2 * _TERA}),
    # NVIDIA Ampere GA102 whitepaper, RTX 3090: FP32 35.6, TF32 35.6, BF16/FP16 with FP32
    # accumulate 71 dense.
    (r"RTX 3090", {"fp32": 35.6 * _TERA, "tf32": 35.6 * _TERA, "bf16": 71 * _TERA,
                   "fp16": 71 * _TERA}),
    # NVIDIA V100 datasheet: SXM2 FP32 15.7, FP16 tensor 125; PCIe FP32 14, FP16 112.
    (r"V100.*PCIE", {"fp32": 14 * _TERA, "fp16": 112 * _TERA}),
    (r"V100", {"fp32": 15.7 * _TERA, "fp16": 125 * _TERA}),
    # NVIDIA T4 datasheet: FP32 8.1, FP16 tensor 65.
    (r"\bT4\b", {"fp32": 8.1 * _TERA, "fp16": 65 * _TERA}),
)
# The CPU's throughput is measured: square matmuls of this size (smaller for 16-bit formats
# the CPU emulates, 50x slower than fp32 on an AVX2 CPU), repeated for this long and at least
# this often. Large enough that a matmul outlasts a scheduler's time slice: on a busy machine
# small ones measure the waits of torch's threads for each other, not the arithmetic.
_CPU_MATMUL_SIZE, _CPU_EMULATED_MATMUL_SIZE = 1024, 256
_CPU_MEASURE_SECONDS, _CPU_MEASURE_RUNS = 0.25, 3
_CPU_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def peak_flops(hardware: Hardware, precision: str) -> float | None:
    """The device's peak dense matmul FLOP/s in `precision` (fp32, tf32, bf16, fp16): a known
    figure for a GPU (None for a GPU not in GPU_PEAK_FLOPS or a format it lacks), a measured
    one for a CPU."""
    if hardware.device == "cuda":
        return gpu_peak_flops(hardware.name, precision)
    precision = "fp32" if precision == "tf32" else precision
    return cpu_matmul_flops(precision, emulated=precision != "fp32" and not hardware.native_bf16)


def gpu_peak_flops(name: str, precision: str) -> float | None:
    for pattern, peaks in GPU_PEAK_FLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return peaks.get(precision)
    return None


def cpu_matmul_flops(precision: str = "fp32", *, emulated: bool = False) -> float:
    """This CPU's matmul FLOP/s in `precision` with torch's threads, measured once (under half
    a second); `emulated`: the CPU has no hardware for the format. The best, not the mean, of
    the timed runs: a peak is what the hardware can do, and the runs a neighbour slowed down
    say nothing about that."""
    return _measured_matmul_flops(precision, emulated)


@functools.cache
def _measured_matmul_flops(precision: str, emulated: bool) -> float:
    dtype = _CPU_DTYPES[precision]
    size = _CPU_EMULATED_MATMUL_SIZE if emulated else _CPU_MATMUL_SIZE
    # A generator of its own: drawing from torch's global one would change the training that
    # follows, and a job must train the same whether or not this ran before it.
    numbers = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=numbers).to(dtype) for _ in range(2))
    left @ right  # the first call pays for kernel selection and page faults
    runs, best, started = 0, float("inf"), time.perf_counter()
    while runs < _CPU_MEASURE_RUNS or time.perf_counter() - started < _CPU_MEASURE_SECONDS:
        run_started = time.perf_counter()
        left @ right
        best, runs = min(best, time.perf_counter() - run_started), runs + 1
    return 2 * size**3 / best
