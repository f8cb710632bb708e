"""The ranks of a job that trains on several devices.

torchrun, started by the supervisor, runs one trainer child per device and tells each its
RANK and WORLD_SIZE; the Trainer joins them into one process group. Every rank trains; only the main
rank reports to the service and writes the model, and a checkpoint is recorded once every
rank has written its part of it (`wait_for_all_ranks`).

Under FSDP (compute.distributed 'fsdp') each rank holds a shard of every parameter, its
gradient and optimizer state: checkpoints are sharded (each rank writes its own files), and
the finished model is gathered whole to the main rank (`full_state_dict`) to be saved.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from transformers import Trainer

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



def is_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP shards `model`'s parameters across the ranks (compute.distributed fsdp)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's whole weights, gathered on the CPU of the main rank (the others get
    an empty dict). Every rank must call it: each sends its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def load_full_state_dict(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put `weights`, read on the main rank only, into a sharded model: each rank gets its
    shards of them. Every rank must call it; weights it lacks keep their values."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    # After a forward without backward (an evaluation), FSDP leaves the root's parameters
    # gathered whole; the shards must be in place to receive their share.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    set_model_state_dict(model, weights, options=StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=True, strict=False))


@functools.cache
def sharding_trainer(trainer_class: type[Trainer]) -> type[Trainer]:
    """`trainer_class`, sharding the model with FSDP where its TrainingArguments ask for it."""
    return type(trainer_class.__name__, (_Sharding, trainer_class), {})


def fsdp_units(model: torch.nn.Module) -> list[str]:
    """The classes of the model's blocks (its `_no_split_modules`) that FSDP shards as units
    of their own, gathered one at a time in forward and backward.

    A block that holds the input or output embeddings is left out (BERT's BertEmbeddings):
    accelerate makes the embeddings a unit of their own, and fails on embeddings inside a
    block sharded already ("Invariant encountered: value was None").
    """
    embeddings = {module for module in (model.get_input_embeddings(),
                                         model.get_output_embeddings()) if module is not None}
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    return sorted({type(module).__name__ for module in model.modules()
                   if type(module).__name__ in blocks
                   and not embeddings.intersection(module.modules())})


class _Sharding(Trainer):
    def create_accelerator_and_postprocess(self) -> None:
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is None:
            return
        state: Any = self.accelerator.state
        if state.distributed_type == DistributedType.MULTI_CPU:
            # accelerate takes FSDP on accelerators only: on CPU ranks it drops the plugin and
            # trains DDP without a word. FSDP2 itself runs on CPUs over gloo.
            plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            if state.mixed_precision != "no":
                # FSDP's own mixed precision, as accelerate sets it on GPUs (not autocast).
                plugin.set_mixed_precision(state.mixed_precision)
            state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, plugin
            self.is_fsdp_enabled = True
        state.fsdp_plugin.transformer_cls_names_to_wrap = fsdp_units(self.model)
