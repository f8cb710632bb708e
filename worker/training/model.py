"""Build the model: find it, load it with a fresh task head, and freeze what the spec asks."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from app.jobs.spec import Freeze, JobSpec
from worker.training.data import HUB_TIMEOUT_S, first_line
from worker.training.errors import InvalidSpec, ModelLoadFailed, ModelNotFound, OutOfMemory
from worker.training.events import EventSink

# Where BERT-like backbones keep their list of transformer blocks.
_LAYER_LIST_PATHS = (("encoder", "layer"), ("transformer", "layer"))


def load_model(spec: JobSpec, model_source: str, label_names: list[str], *,
               events: EventSink) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The tokenizer and the model with a new head for `spec.task`, frozen as asked.

    `label_names` are the class names in id order (empty for regression); they become the
    config's id2label so that the saved model predicts the dataset's own names.
    """
    local_files_only = _locate_model(spec.model, model_source)
    if spec.task == "text-regression":
        head: dict[str, object] = {"num_labels": 1, "problem_type": "regression"}
    else:
        head = {"num_labels": len(label_names),
                "problem_type": "single_label_classification",
                "id2label": dict(enumerate(label_names)),
                "label2id": {name: index for index, name in enumerate(label_names)}}
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_source, trust_remote_code=False, local_files_only=local_files_only)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_source, use_safetensors=True, trust_remote_code=False,
            local_files_only=local_files_only, **head)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise OutOfMemory(f"not enough memory to load {spec.model!r}") from exc
    except Exception as exc:  # pickle-only weights, unknown architecture, bad files...
        raise ModelLoadFailed(f"could not load {spec.model!r} for {spec.task}: "
                              f"{first_line(exc)}") from exc

    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # GPT-style tokenizers have no padding token, and batches need one.
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        # GPT-style heads find each sequence's last token by the padding id.
        model.config.pad_token_id = tokenizer.pad_token_id

    freeze(model, spec.freeze, spec.model)
    total = sum(parameter.numel() for parameter in model.parameters())
    trainable = sum(parameter.numel() for parameter in model.parameters()
                    if parameter.requires_grad)
    events.event("model_loaded",
                 f"loaded {spec.model} ({type(model).__name__}): {trainable:,} of {total:,} "
                 f"parameters trainable",
                 {"model": spec.model, "architecture": type(model).__name__,
                  "total_parameters": total, "trainable_parameters": trainable})
    return model, tokenizer


def freeze(model: PreTrainedModel, spec: Freeze, model_name: str) -> None:
    """Stop gradients to the parts of the backbone that `spec` names; the head always trains."""
    if not (spec.encoder or spec.embeddings or spec.bottom_layers):
        return
    backbone = model.base_model
    if backbone is model:
        raise InvalidSpec(f"{model_name} has no separate backbone to freeze",
                          hint="Remove the freeze settings for this model.")
    if spec.encoder:
        _stop_gradients(backbone)
        return
    if spec.embeddings:
        embeddings = getattr(backbone, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            raise InvalidSpec(f"cannot find the embeddings of {model_name} to freeze",
                              hint="Set freeze.embeddings to false, or use freeze.encoder.")
        _stop_gradients(embeddings)
    if spec.bottom_layers:
        layers = _layer_list(backbone)
        if layers is None:
            raise InvalidSpec(f"cannot find the layers of {model_name} to freeze",
                              hint="Set freeze.bottom_layers to 0, or use freeze.encoder.")
        if spec.bottom_layers > len(layers):
            raise InvalidSpec(
                f"freeze.bottom_layers is {spec.bottom_layers} but {model_name} has only "
                f"{len(layers)} layers",
                hint=f"Set freeze.bottom_layers to at most {len(layers)}, or set "
                     f"freeze.encoder to true to train the head only.")
        for layer in layers[:spec.bottom_layers]:
            _stop_gradients(layer)


def _locate_model(model_name: str, model_source: str) -> bool:
    """Whether to load from local files only; ModelNotFound when the model is nowhere."""
    path = Path(model_source)
    if path.is_dir():
        return True
    if path.is_absolute() or model_source.startswith("."):
        raise ModelNotFound(f"the model folder for {model_name!r} does not exist: {model_source}")
    try:
        # One quick request decides reachability: from_pretrained alone retries for minutes.
        HfApi().model_info(model_source, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError as exc:
        raise ModelNotFound(f"no model {model_source!r} on the Hugging Face Hub "
                            f"(or it is private or gated)") from exc
    except Exception as exc:  # offline, DNS, timeout, Hub errors: all mean "unreachable"
        if isinstance(try_to_load_from_cache(model_source, "config.json"), str):
            return True
        raise ModelNotFound(
            f"model {model_source!r} is neither in the local catalog nor in the local Hub "
            f"cache, and the Hub is unreachable from this worker: {first_line(exc)}") from exc
    return False


def _layer_list(backbone: nn.Module) -> nn.ModuleList | None:
    for container_name, list_name in _LAYER_LIST_PATHS:
        layers = getattr(getattr(backbone, container_name, None), list_name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    return None


def _stop_gradients(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad = False
