"""Training telemetry: samples/s, tokens/s, peak memory and MFU in every training log.

`Telemetry` is a TrainerCallback placed before the service's reporter, which stores every
numeric log value as a metric point: it adds its figures to the `logs` dict in place. The
figures of a log cover the steps since the previous one; `summary()` gives those of the whole
run, for the final metrics.

MFU (model FLOPs utilization) is the model's FLOPs per second over the device's peak in the
precision in use. The model's FLOPs per token (`flops_per_token`) are 2 per matmul weight
forward, 2 backward through the weights that gradients must cross and 2 for the weights that
train: the classic 6N when everything trains, less under LoRA or freezing, where no weight
gradient is computed for frozen weights. Approximations, all of them the usual ones:
- N counts the weights of matrix multiplications (linear layers, GPT-2's Conv1D, the language
  head); embedding lookups, norms and biases cost next to nothing and are left out.
- Attention's own FLOPs (the s-squared scores) are left out: at sequence 128 on a bert-base
  they would add about 3%, at 1,024 on a 1B Llama about 6%.
- Gradient checkpointing's recomputed forward is not counted: MFU counts the model's FLOPs, not
  the hardware's.
- Tokens are the non-padding tokens the Trainer counts (`include_num_input_tokens_seen=
  "non_padding"`): work on padding is not useful work, and it lowers the MFU.
- Time is the sum of the training steps (data loading included), without evaluations and
  checkpoint saves.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.pytorch_utils import Conv1D

from worker.training.events import EventSink
from worker.training.hardware import Hardware, detect, peak_flops
from worker.training.quantization import parameter_count

# What the Trainer adds to every log when it counts tokens: its cumulative tokens/s over wall
# time, evaluations included. The telemetry's own figures replace them in the metric series.
_TRAINER_RUNNING_SPEEDS = ("train_runtime", "train_tokens_per_second")


@dataclass(frozen=True)
class MatmulWeights:
    """Numbers of matmul weights: all of them, those a gradient crosses, those that train."""

    forward: int
    crossed: int
    trainable: int

    def flops_per_token(self, *, recompute: bool = False) -> int:
        """Training FLOPs per token; `recompute` adds the forward that gradient
        checkpointing runs again (a cost in time, not in the model's FLOPs)."""
        return 2 * self.forward * (2 if recompute else 1) + 2 * self.crossed + 2 * self.trainable


def matmul_weights(model: nn.Module) -> MatmulWeights:
    """Counted over the model's matmul layers in registration order, which is the forward's
    order for the models here: a layer at or after the first one with a trainable weight is
    one the gradient crosses on its way down. Works on the meta device (shapes only) and on
    bitsandbytes' quantized linear layers (their packed weights know their true shape)."""
    forward = crossed = trainable = 0
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, nn.Linear | Conv1D) or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))  # a tied language head shares its matrix
        count = parameter_count(module.weight)
        forward += count
        if module.weight.requires_grad:
            trainable += count
        if trainable:
            crossed += count
    return MatmulWeights(forward=forward, crossed=crossed, trainable=trainable)


def precision_in_use(args: TrainingArguments, model: nn.Module, hardware: Hardware) -> str:
    """fp32, tf32, bf16 or fp16: the format of the training's matmuls."""
    if args.bf16:
        return "bf16"
    if args.fp16:
        return "fp16"
    dtype = getattr(model, "dtype", torch.float32)
    if dtype in (torch.bfloat16, torch.float16):  # weights loaded in 16 bits, no autocast
        return "bf16" if dtype == torch.bfloat16 else "fp16"
    return "tf32" if hardware.device == "cuda" and _tf32_matmuls() else "fp32"


def _tf32_matmuls() -> bool:
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)  # torch >= 2.9
    return precision == "tf32" if precision is not None else bool(matmul.allow_tf32)


def peak_memory_bytes(device: str) -> int:
    """The GPU allocator's peak, or this process's peak resident set on a CPU."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux counts in KiB


@dataclass
class _Window:
    """Steps timed since a mark: seconds of training, and where tokens and epoch stood."""

    seconds: float = 0.0
    tokens: int = 0
    epoch: float = 0.0


class Telemetry(TrainerCallback):
    def __init__(self, events: EventSink | None = None, hardware: Hardware | None = None) -> None:
        self.events = events
        self.hardware = hardware
        self.precision = "fp32"
        self.peak: float | None = None
        self.flops_per_token = 0
        self.samples_per_epoch: int | None = None
        self.counts_tokens = False
        self.run = self.window = _Window()
        # The Trainer's state, one object for the whole run: where a summary ends.
        self.state: TrainerState | None = None
        self.step_started = self.last_step_end = 0.0
        # An evaluation or a checkpoint save happened since the last step: the next step is
        # timed from its own beginning.
        self.paused = False

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, model: nn.Module | None = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        hardware = self.hardware = self.hardware or detect()
        self.state = state
        if model is not None:
            self.precision = precision_in_use(args, model, hardware)
            self.flops_per_token = matmul_weights(model).flops_per_token()
        self.peak = peak_flops(hardware, self.precision)
        self.counts_tokens = args.include_num_input_tokens_seen != "no"
        dataset = getattr(train_dataloader, "dataset", None)
        self.samples_per_epoch = len(dataset) if hasattr(dataset, "__len__") else None
        start = _Window(tokens=state.num_input_tokens_seen, epoch=state.epoch or 0.0)
        self.run, self.window = start, _Window(tokens=start.tokens, epoch=start.epoch)
        self.last_step_end, self.paused = time.perf_counter(), False
        if self.events is not None:
            self.events.event(
                "telemetry", f"training on {hardware.name} ({hardware.device}) in "
                             f"{self.precision}",
                {"device": hardware.device, "device_name": hardware.name,
                 "precision": self.precision, "peak_flops": self.peak,
                 "flops_per_token": self.flops_per_token})

    def on_step_begin(self, args: TrainingArguments, state: TrainerState,
                      control: TrainerControl, **kwargs: Any) -> None:
        self.step_started = time.perf_counter()

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:
        now = time.perf_counter()
        elapsed = now - (self.step_started if self.paused else self.last_step_end)
        self.window.seconds += elapsed
        self.run.seconds += elapsed
        self.last_step_end, self.paused = now, False

    def on_evaluate(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:
        self.paused = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        self.paused = True

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is None:
            return
        if "loss" in logs:  # a training log; evaluations and the final log have no "loss"
            for name in _TRAINER_RUNNING_SPEEDS:
                logs.pop(name, None)
            logs.update(self._figures(self.window, state))
            self.window = _Window(tokens=state.num_input_tokens_seen, epoch=state.epoch or 0.0)
        elif "train_loss" in logs:  # the Trainer's final log
            logs.update(self._figures(self.run, state))

    def summary(self) -> dict[str, Any]:
        """The run's figures, device and precision, for the job's final metrics."""
        hardware = self.hardware or detect()
        return {"device": hardware.device, "device_name": hardware.name,
                "precision": self.precision, "peak_flops": self.peak,
                **self._figures(self.run, self.state)}

    def _figures(self, since: _Window, state: TrainerState | None) -> dict[str, float]:
        """samples/s, tokens/s, peak memory and MFU from `since` to `state`."""
        device = (self.hardware or detect()).device
        figures: dict[str, float] = {"peak_memory_bytes": peak_memory_bytes(device)}
        if since.seconds <= 0 or state is None:
            return figures
        if self.samples_per_epoch is not None:
            samples = ((state.epoch or 0.0) - since.epoch) * self.samples_per_epoch
            figures["samples_per_second"] = round(samples / since.seconds, 3)
        if self.counts_tokens:
            tokens = state.num_input_tokens_seen - since.tokens
            figures["tokens_per_second"] = round(tokens / since.seconds, 3)
            if self.peak:
                mfu = self.flops_per_token * tokens / since.seconds / self.peak
                figures["mfu"] = float(f"{mfu:.4g}")  # tiny on a CPU: digits, not decimals
        return figures
