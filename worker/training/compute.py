"""How a job runs on the worker's hardware: precision, attention and the throughput settings.

`resolve_compute` turns the spec's `compute` section into the settings one attempt trains
with, each 'auto' decided for this worker's hardware and model with a short reason; what it
asks for and the hardware cannot do fails the job with `invalid_spec` and a hint (the API
cannot know which worker takes the job). The result gives the from_pretrained options and
the TrainingArguments it implies, and `as_dict()` says it all in events and the model card.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
from torch.utils.data import Dataset, Sampler, SequentialSampler
from transformers import DataCollatorWithFlattening, Trainer

from app.jobs.spec import JobSpec
from worker.training.errors import InvalidSpec
from worker.training.hardware import Hardware

# The spec's optimizers as TrainingArguments names them; adamw is fused where torch has it.
OPTIMIZERS = {"adamw": "adamw_torch", "sgd": "sgd", "adafactor": "adafactor"}
FUSED_ADAMW = "adamw_torch_fused"
FLASH_ATTENTION = "flash_attention_2"
# transformers' LengthGroupedSampler sorts by length within "megabatches" of this many batches
# of a random permutation: a training set of one megabatch or less would be cut into the same
# batches every epoch, the rows of one length together (with tiny test sets, 0.58 accuracy
# where random batches reach 1.0).
_BATCHES_PER_MEGABATCH = 50
# What transformers' modelling code calls to build causal masks; it also reads the rows of a
# padding-free batch from where its position ids restart.
_PACKED_ROWS_MASKS = "create_causal_mask"
# FSDP2 (`fully_shard`) through accelerate, the model's blocks each a unit of its own
# (distributed.fsdp_units). Checkpoints are sharded, each rank writing its part; the finished
# model is gathered whole to the main rank (trainer.py).
FSDP_CONFIG = {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
               "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True}


@dataclass(frozen=True)
class ModelTraits:
    """What the model's architecture can do, read from its class before any weight is loaded."""

    sdpa: bool
    flash_attention: bool
    # Its attention keeps the rows of a padding-free (flattened) batch apart.
    packed_rows: bool

    @classmethod
    def of(cls, model_class: type) -> ModelTraits:
        module = sys.modules.get(model_class.__module__)
        return cls(sdpa=bool(getattr(model_class, "_supports_sdpa", False)),
                   flash_attention=bool(getattr(model_class, "_supports_flash_attn", False)),
                   packed_rows=module is not None and _PACKED_ROWS_MASKS in vars(module))


@dataclass(frozen=True)
class ResolvedCompute:
    device: str
    device_name: str
    # The number format of the matmuls: 'fp32', or 'bf16'/'fp16' under autocast, with the
    # weights, gradients and optimizer state in fp32 all the same. Under FSDP, 'bf16'/'fp16'
    # is FSDP's mixed precision instead: each block gathered and computed in 16 bits, its
    # gradients reduced in 16 bits, and each rank's shards of weights and state kept in fp32.
    precision: str
    tf32: bool
    attention: str
    gradient_checkpointing: bool
    compile: bool
    length_grouping: bool
    packing: bool
    # As TrainingArguments' `optim` names it.
    optimizer: str
    # Data-parallel processes (one per device), and the rows each optimizer step takes in all.
    ranks: int
    distributed: str
    effective_batch_size: int
    # Why each 'auto' became what it did, by field.
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def autocast(self) -> bool:
        return self.precision != "fp32"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "autocast": self.autocast}

    def summary(self) -> str:
        """One line for people: what precision and attention were used, and why."""
        return (f"{self.precision}{' autocast' if self.autocast else ''} "
                f"({self.reasons.get('precision', 'asked for')}), {self.attention} attention "
                f"({self.reasons.get('attention', 'asked for')}) on {self.device_name}")

    def from_pretrained_options(self) -> dict[str, Any]:
        # Weights load in fp32 whatever their stored dtype: mixed precision keeps fp32 master
        # weights, and autocast does the half-precision arithmetic.
        return {"attn_implementation": self.attention, "dtype": torch.float32}

    def training_arguments(self) -> dict[str, Any]:
        return {
            "bf16": self.precision == "bf16",
            # fp16 brings the Trainer's loss scaling with it.
            "fp16": self.precision == "fp16",
            "tf32": self.tf32,
            "optim": self.optimizer,
            "train_sampling_strategy": "group_by_length" if self.length_grouping else "random",
            "activation_checkpointing": self.gradient_checkpointing,
            # Non-reentrant checkpoints need no input that requires a gradient, so they work
            # under LoRA, where the embeddings are frozen.
            "activation_checkpointing_kwargs": ({"use_reentrant": False}
                                                if self.gradient_checkpointing else None),
            "torch_compile": self.compile,
            # Where the model trains; transformers takes bf16 on a CPU only when told so.
            "use_cpu": self.device == "cpu",
            # Pinned memory only speeds up copies to a GPU; without one torch warns every epoch.
            "dataloader_pin_memory": self.device == "cuda",
            # Ranks on a CPU talk over gloo; GPUs use the default, NCCL.
            **({"ddp_backend": "gloo"} if self.ranks > 1 and self.device == "cpu" else {}),
            **({"fsdp": True, "fsdp_config": FSDP_CONFIG} if self.distributed == "fsdp" else {}),
        }


def resolve_compute(spec: JobSpec, hardware: Hardware, model: ModelTraits, *,
                    rows_vary_in_length: bool, train_rows: int | None) -> ResolvedCompute:
    """The compute settings `spec` runs with on `hardware` with a model of `model`'s class.

    `rows_vary_in_length`: whether the task's tokenized rows differ in length (not so for
    plain-text causal-lm, cut into blocks of one length); `train_rows`, where known, the
    training rows. Raises InvalidSpec for what was asked and cannot run here.
    """
    compute, reasons = spec.compute, {}
    precision, reasons["precision"] = _precision(compute.precision, hardware)
    attention, reasons["attention"] = _attention(compute.attention, hardware, model)
    packing, reasons["packing"] = _packing(spec, attention, model)
    length_grouping, reasons["length_grouping"] = _length_grouping(
        spec, rows_vary_in_length and not packing, train_rows)
    optimizer, reasons["optimizer"] = _optimizer(spec.hyperparameters.optimizer, hardware)
    distributed, reasons["distributed"] = _distributed(spec, hardware)
    hyper = spec.hyperparameters
    asked = {name for name, value in compute.model_dump().items() if value != "auto"}
    return ResolvedCompute(
        device=hardware.device, device_name=hardware.name, precision=precision,
        # An explicit fp32 is IEEE fp32; otherwise fp32 work outside autocast uses TF32.
        tf32=hardware.tf32 and compute.precision != "fp32", attention=attention,
        gradient_checkpointing=compute.gradient_checkpointing, compile=compute.compile,
        length_grouping=length_grouping, packing=packing, optimizer=optimizer,
        ranks=compute.gpus, distributed=distributed,
        effective_batch_size=hyper.batch_size * compute.gpus * hyper.gradient_accumulation_steps,
        reasons={name: why for name, why in reasons.items() if name not in asked})


def _distributed(spec: JobSpec, hardware: Hardware) -> tuple[str, str]:
    # fsdp with one rank or with LoRA is refused when the spec is submitted (JobSpec).
    ranks, asked = spec.compute.gpus, spec.compute.distributed
    if ranks == 1:
        return "none", "one device"
    if hardware.device == "cuda" and torch.cuda.device_count() < ranks:
        raise InvalidSpec(f"compute.gpus is {ranks}, and this worker has "
                          f"{torch.cuda.device_count()} GPUs",
                          hint="Ask for at most as many GPUs as the workers have.")
    if asked == "fsdp":
        return "fsdp", "asked for"
    where = "GPUs" if hardware.device == "cuda" else "CPU processes (gloo)"
    # 'auto' never shards: DDP is the faster of the two wherever the model fits one device.
    return "ddp", f"{ranks} data-parallel ranks on {where}, each with the whole model"


def packed_rows_collator(compute: ResolvedCompute) -> DataCollatorWithFlattening:
    """Batches as one padding-free row each, the rows told apart by restarting position ids."""
    return _PackedRows(return_flash_attn_kwargs=compute.attention == FLASH_ATTENTION)


@functools.cache
def in_order_evaluation(trainer_class: type[Trainer]) -> type[Trainer]:
    """`trainer_class`, evaluating a split's rows in their order.

    Under group_by_length, transformers 5 groups the evaluated rows by length too; metrics
    that map predictions back to the split's rows (question answering's) need its order.
    """
    return type(trainer_class.__name__, (_InOrderEvaluation, trainer_class), {})


class _InOrderEvaluation(Trainer):
    def _get_eval_sampler(self, eval_dataset: Dataset) -> Sampler | None:
        return SequentialSampler(eval_dataset)


class _PackedRows(DataCollatorWithFlattening):
    def __call__(self, features: list[dict[str, Any]],
                 return_tensors: str | None = None) -> dict[str, Any]:
        # transformers finds the rows from the position ids only without a key-value cache,
        # which a model with use_cache in its config would otherwise build in training too.
        return {**super().__call__(features, return_tensors), "use_cache": False}


def _precision(asked: str, hardware: Hardware) -> tuple[str, str]:
    if hardware.device == "cuda":
        if asked == "bf16" and not hardware.native_bf16:
            raise InvalidSpec(f"compute.precision is bf16, but this worker's GPU "
                              f"({hardware.name}) has no bf16",
                              hint="Set compute.precision to 'auto' (fp16 with loss scaling "
                                   "on this GPU) or 'fp16'.")
        if asked != "auto":
            return asked, "asked for"
        if hardware.native_bf16:
            return "bf16", f"{hardware.name} has bf16"
        return "fp16", f"{hardware.name} has no bf16: fp16 with loss scaling"
    if asked == "fp16":
        raise InvalidSpec("compute.precision is fp16, which needs a CUDA GPU; this worker "
                          f"trains on its CPU ({hardware.name})",
                          hint="Set compute.precision to 'auto', 'bf16' or 'fp32', or run the "
                               "job on a GPU worker.")
    if asked != "auto":
        return asked, "asked for"
    if hardware.native_bf16:
        return "bf16", f"the CPU has native bf16 ({', '.join(hardware.cpu_bf16_flags)})"
    return "fp32", ("the CPU has no native bf16 (avx512_bf16 or AMX): bf16 autocast would be "
                    "emulated, slower than fp32")


def _attention(asked: str, hardware: Hardware, model: ModelTraits) -> tuple[str, str]:
    flash_installed = importlib.util.find_spec("flash_attn") is not None
    if asked == FLASH_ATTENTION:
        missing = [why for why, lacking in (
            ("flash-attn is not installed on this worker", not flash_installed),
            ("it needs a CUDA GPU", hardware.device != "cuda"),
            ("the model has no flash_attention_2", not model.flash_attention)) if lacking]
        if missing:
            raise InvalidSpec(f"compute.attention is flash_attention_2, but {'; '.join(missing)}",
                              hint="Set compute.attention to 'auto' or 'sdpa'.")
        return asked, "asked for"
    if asked == "sdpa" and not model.sdpa:
        raise InvalidSpec("compute.attention is sdpa, but the model has no sdpa attention",
                          hint="Set compute.attention to 'auto' or 'eager'.")
    if asked != "auto":
        return asked, "asked for"
    if flash_installed and hardware.device == "cuda" and model.flash_attention:
        return FLASH_ATTENTION, "flash-attn is installed and the model has it"
    if model.sdpa:
        return "sdpa", ("the model has sdpa" if hardware.device == "cpu" or not flash_installed
                        else "the model has sdpa, not flash_attention_2")
    return "eager", "the model has neither flash_attention_2 nor sdpa"


def _packing(spec: JobSpec, attention: str, model: ModelTraits) -> tuple[bool, str]:
    rows = spec.dataset.prompt_column or spec.dataset.messages_column
    supported = attention == FLASH_ATTENTION or model.packed_rows
    if spec.task != "causal-lm" or not rows:
        return False, ("plain text is cut into blocks of one length already"
                       if spec.task == "causal-lm" else "packing is for causal-lm rows")
    if spec.compute.packing is True and not supported:
        raise InvalidSpec(f"compute.packing is true, but {spec.model} with {attention} "
                          "attention cannot keep packed rows apart",
                          hint="Set compute.packing to 'auto' or false, or compute.attention "
                               "to flash_attention_2 on a GPU worker that has it.")
    if spec.compute.packing != "auto":
        return bool(spec.compute.packing), "asked for"
    return supported, (f"{attention} attention keeps packed rows apart" if supported
                       else f"{attention} attention of this model cannot keep packed rows apart")


def _length_grouping(spec: JobSpec, rows_vary: bool,
                     train_rows: int | None) -> tuple[bool, str]:
    if spec.compute.length_grouping != "auto":
        return bool(spec.compute.length_grouping), "asked for"
    if not rows_vary:
        return False, "rows are of one length or packed: nothing to pad"
    hyper = spec.hyperparameters
    megabatch = _BATCHES_PER_MEGABATCH * hyper.batch_size * hyper.gradient_accumulation_steps
    if train_rows is not None and train_rows <= megabatch:
        return False, (f"{train_rows} training rows, at most {_BATCHES_PER_MEGABATCH} batches: "
                       "grouped by length, every epoch would have the same batches")
    return True, "rows vary in length: batches of similar rows pad less"



def _optimizer(asked: str, hardware: Hardware) -> tuple[str, str]:
    if asked == "adamw" and hardware.device in _get_fused_kernels_supported_devices():
        return FUSED_ADAMW, f"torch {torch.__version__} has fused AdamW for {hardware.device}"
    return OPTIMIZERS[asked], "asked for" if asked != "adamw" else "no fused AdamW here"
