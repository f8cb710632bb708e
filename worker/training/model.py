"""Build the model: find it, load it with a fresh task head, freeze and adapt what the spec asks,
and count its parameters; for the job with its weights, for the dry run with its shapes only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from app.jobs.spec import Freeze, JobSpec
from worker.training.compute import ModelTraits, ResolvedCompute, resolve_compute
from worker.training.data import HUB_TIMEOUT_S, first_line
from worker.training.errors import (
    InvalidSpec,
    ModelLoadFailed,
    ModelNotFound,
    OutOfMemory,
    UnsafeModelFormat,
)
from worker.training.events import EventSink
from worker.training.hardware import detect
from worker.training.lora import with_lora
from worker.training.quantization import parameter_count, quantization_options
from worker.training.tasks import recipe_for

# Where BERT-like backbones keep their list of transformer blocks.
_LAYER_LIST_PATHS = (("encoder", "layer"), ("transformer", "layer"))
# Checkpoint formats that are pickles: unpickling one runs whatever code its author put in it.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_SAFETENSORS_SUFFIXES = (".safetensors", ".safetensors.index.json")
_LISTED_FILES = 5


@dataclass(frozen=True)
class ParameterCounts:
    """A model's parameters; shared (tied) weights count once."""

    total: int
    trainable: int

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class BuiltModel:
    tokenizer: PreTrainedTokenizerBase
    # A PreTrainedModel, or the PeftModel around it with LoRA.
    model: nn.Module
    # The config the model was built from, with its task head.
    config: PretrainedConfig
    # The model's class under any LoRA wrapper, e.g. BertForSequenceClassification.
    architecture: str
    parameters: ParameterCounts
    # How it trains on this worker's hardware.
    compute: ResolvedCompute
    # The dtype of the base model's weights as stored, which the trained model is saved in
    # (it trains in fp32).
    base_dtype: torch.dtype


def build_model(spec: JobSpec, model_source: str, label_names: list[str], *,
                load_weights: bool, train_rows: int | None = None) -> BuiltModel:
    """The tokenizer and the model with a new head for `spec.task`, frozen and adapted as asked.

    The job builds it with its weights; the dry run (`load_weights=False`) builds it on the
    meta device, with the shapes of every parameter and no weight read. Both take every step
    here, so a model that would fail the job fails the dry run with the same error.

    `label_names` are the class names in id order (empty for tasks without classes); the
    task's head makes them the config's id2label, so the model predicts the data's own names.
    `train_rows`, where known, is the number of training rows, which length grouping's 'auto'
    looks at.
    """
    location = checked_location(spec.model, model_source)
    recipe = recipe_for(spec)
    tokenizer = load_tokenizer(spec, model_source, location)
    with loading_errors(spec):
        # No remote code, as for the tokenizer.
        config = AutoConfig.from_pretrained(  # nosec B615
            model_source, trust_remote_code=False, **location.options,
            **recipe.head(label_names))
    # Outside loading_errors, which would make its InvalidSpec a model_load_failed, and before
    # the weights are read: a model the task cannot use is the spec's fault.
    recipe.check_model(config, spec)
    with loading_errors(spec):
        model_class = _model_class(recipe.model_class, config)
    compute = resolve_compute(spec, detect(), ModelTraits.of(model_class),
                              rows_vary_in_length=not recipe.packs_tokens(spec),
                              train_rows=train_rows)
    options = compute.from_pretrained_options()
    base_dtype = _stored_dtype(config)
    # Outside loading_errors, which would make its QuantizationUnavailable a model_load_failed.
    quantized = quantization_options(spec)
    with loading_errors(spec), _placement(load_weights):
        if load_weights:
            # Safetensors only (checked first) and no remote code, as for the config.
            model = recipe.model_class.from_pretrained(  # nosec B615
                model_source, config=config, use_safetensors=True, trust_remote_code=False,
                **location.options,
                # A quantized base brings its own dtype.
                **(options | quantized))
        else:
            model = recipe.model_class.from_config(config, **options)
    if model.config.pad_token_id is None:
        # GPT-style heads find each sequence's last token by the padding id.
        model.config.pad_token_id = tokenizer.pad_token_id

    architecture, built_config = type(model).__name__, model.config
    freeze(model, spec.freeze, spec.model)
    if spec.lora is not None:
        with _placement(load_weights):
            model = with_lora(model, spec.lora, spec, recipe.lora)
    return BuiltModel(tokenizer, model, built_config, architecture, count_parameters(model),
                      compute, base_dtype)


def load_model(spec: JobSpec, model_source: str, label_names: list[str], *,
               events: EventSink, train_rows: int | None = None) -> BuiltModel:
    """The job's model (`build_model` with the weights), reported as `model_loaded` with
    the compute settings it trains with."""
    built = build_model(spec, model_source, label_names, load_weights=True,
                        train_rows=train_rows)
    counts, lora = built.parameters, spec.lora is not None
    events.event("model_loaded",
                 f"loaded {spec.model} ({built.architecture}{' with LoRA' if lora else ''}): "
                 f"{counts.trainable:,} of {counts.total:,} parameters trainable "
                 f"({counts.trainable_share:.2%}); {built.compute.summary()}",
                 {"model": spec.model, "architecture": built.architecture, "lora": lora,
                  "total_parameters": counts.total, "trainable_parameters": counts.trainable,
                  "trainable_share": round(counts.trainable_share, 6),
                  "compute": built.compute.as_dict()})
    return built


def checked_location(model_name: str, model_source: str) -> _ModelLocation:
    """Where the model is, once its weights are known to load without unpickling."""
    location = _locate_model(model_name, model_source)
    _refuse_unsafe_weights(model_name, location)
    return location


def load_tokenizer(spec: JobSpec, model_source: str,
                   location: _ModelLocation) -> PreTrainedTokenizerBase:
    with loading_errors(spec):
        # An unpinned Hub model cannot run code here: no remote code, and weights load only
        # from safetensors (checked first), so B615 is about reproducibility, not safety.
        tokenizer = AutoTokenizer.from_pretrained(  # nosec B615
            model_source, trust_remote_code=False, **location.options,
            **recipe_for(spec).tokenizer_options)
    # How this worker found the files is no setting of the tokenizer: keep it out of the
    # saved tokenizer_config.json.
    for loader_option in (*location.options, "is_local"):
        tokenizer.init_kwargs.pop(loader_option, None)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # GPT-style tokenizers have no padding token, and batches need one.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextmanager
def loading_errors(spec: JobSpec) -> Iterator[None]:
    """Turn what loading a tokenizer, config or model raises into the job's error codes."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise OutOfMemory(f"not enough memory to load {spec.model!r}") from exc
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise ModelLoadFailed(f"could not load {spec.model!r} for {spec.task}: "
                                  f"{first_line(exc)}") from exc
        raise InvalidSpec(f"{spec.model} cannot be trained for {spec.task}: transformers has "
                          f"no {spec.task} head for its architecture",
                          hint=recipe_for(spec).models_hint) from exc
    except Exception as exc:  # unknown architecture, custom code, missing or bad files...
        raise ModelLoadFailed(f"could not load {spec.model!r} for {spec.task}: "
                              f"{first_line(exc)}") from exc


def count_parameters(model: nn.Module) -> ParameterCounts:
    parameters = list(model.parameters())  # each shared (tied) weight once
    return ParameterCounts(
        total=sum(parameter_count(parameter) for parameter in parameters),
        trainable=sum(parameter_count(parameter) for parameter in parameters
                      if parameter.requires_grad))


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


@dataclass(frozen=True)
class _ModelLocation:
    source: str
    local_files_only: bool
    # The model's top-level file names: what from_pretrained chooses its weights from.
    files: list[str]
    # The Hub commit the files were listed at: the check and the load read the same files,
    # even if the repository changes in between.
    revision: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return {"local_files_only": self.local_files_only, "revision": self.revision}


def _locate_model(model_name: str, model_source: str) -> _ModelLocation:
    """Where the model's files are, and their names. Raises ModelNotFound when nowhere."""
    path = Path(model_source)
    if path.is_dir():
        return _ModelLocation(model_source, True, _top_level_files(path))
    if path.is_absolute() or model_source.startswith("."):
        raise ModelNotFound(f"the model folder for {model_name!r} does not exist: {model_source}")
    try:
        # One quick request decides reachability: from_pretrained alone retries for minutes.
        info = HfApi().model_info(model_source, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError as exc:
        raise ModelNotFound(f"no model {model_source!r} on the Hugging Face Hub "
                            f"(or it is private or gated)") from exc
    except Exception as exc:  # offline, DNS, timeout, Hub errors: all mean "unreachable"
        cached_config = try_to_load_from_cache(model_source, CONFIG_NAME)
        if isinstance(cached_config, str):
            # Offline, from_pretrained can only pick from what the cache holds.
            return _ModelLocation(model_source, True,
                                  _top_level_files(Path(cached_config).parent))
        raise ModelNotFound(
            f"model {model_source!r} is neither in the local catalog nor in the local Hub "
            f"cache, and the Hub is unreachable from this worker: {first_line(exc)}") from exc
    # from_pretrained reads weights from the repository's top level only.
    return _ModelLocation(model_source, False,
                          sorted(sibling.rfilename for sibling in info.siblings or ()
                                 if "/" not in sibling.rfilename), revision=info.sha)


def _top_level_files(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_file())


def _refuse_unsafe_weights(model_name: str, location: _ModelLocation) -> None:
    """UnsafeModelFormat unless every weights file that from_pretrained would read is safetensors.

    This follows from_pretrained's own choice: the file the config names, else
    model.safetensors, else the shards that model.safetensors.index.json lists. Its
    `use_safetensors=True` guards only the default names: a named file or an index shard is
    read whatever its format. torch.load's restricted unpickler would then narrow what a
    pickle can do, but a pickle is never opened, so nothing rests on that unpickler.
    """
    files = location.files
    config = _read_json(model_name, location, CONFIG_NAME)
    named = config.get("transformers_weights")
    if named is not None and not (isinstance(named, str)
                                  and named.endswith(_SAFETENSORS_SUFFIXES)):
        raise UnsafeModelFormat(
            f"the config of {model_name!r} names {named!r} as its weights file, which is not "
            f"safetensors; only safetensors weights are loaded")
    weights = named or next((name for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)
                             if name in files), None)
    if weights is None:
        pickles = [name for name in files if name.endswith(_PICKLE_SUFFIXES)]
        if pickles and not any(name.endswith(".safetensors") for name in files):
            raise UnsafeModelFormat(
                f"{model_name!r} has pickle weights only ({_listed(pickles)}) and no "
                f"safetensors; a pickle can run code when it is loaded, so it never is")
        return  # no weights at all: from_pretrained says so in its own words
    if weights.endswith(".index.json"):
        index = _read_json(model_name, location, weights)
        shard_map = index.get("weight_map")
        shards = set(shard_map.values()) if isinstance(shard_map, dict) else set()
        unsafe = sorted(str(shard) for shard in shards
                        if not (isinstance(shard, str) and shard.endswith(".safetensors")))
        if unsafe:
            raise UnsafeModelFormat(
                f"the safetensors index {weights} of {model_name!r} lists shards that are not "
                f"safetensors ({_listed(unsafe)}); only safetensors weights are loaded")


def _read_json(model_name: str, location: _ModelLocation, name: str) -> dict[str, Any]:
    """The model's JSON file `name`; {} when the model has none.

    A file that is there but cannot be read fails the job: the safety checks must not pass on
    what they could not see.
    """
    if name not in location.files:
        return {}
    try:
        folder = Path(location.source)
        path = (folder / name if folder.is_dir()
                # A JSON file read as data, to check the weights before loading.
                else Path(hf_hub_download(location.source, name, **location.options,  # nosec B615
                                          etag_timeout=HUB_TIMEOUT_S)))
        content = json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # I/O, JSON and Hub errors alike
        raise ModelLoadFailed(f"could not read {name} of {model_name!r}: "
                              f"{first_line(exc)}") from exc
    return content if isinstance(content, dict) else {}


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED_FILES])
    more = len(names) - _LISTED_FILES
    return f"{shown} and {more} more" if more > 0 else shown


def _layer_list(backbone: nn.Module) -> nn.ModuleList | None:
    for container_name, list_name in _LAYER_LIST_PATHS:
        layers = getattr(getattr(backbone, container_name, None), list_name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    return None


def _stored_dtype(config: PretrainedConfig) -> torch.dtype:
    stored = getattr(config, "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32


def _model_class(auto_class: Any, config: PretrainedConfig) -> type[PreTrainedModel]:
    """The class `auto_class` builds for `config`, found before any weight is read."""
    try:
        return auto_class._model_mapping[type(config)]  # type: ignore[no-any-return]
    except KeyError:
        # In from_pretrained's words, which loading_errors turns into the spec's fault.
        raise ValueError(f"Unrecognized configuration class {type(config).__name__} for "
                         f"{auto_class.__name__}") from None


def _placement(load_weights: bool) -> AbstractContextManager[Any]:
    """Where a model is built: without its weights, on the meta device, which allocates
    nothing."""
    return nullcontext() if load_weights else torch.device("meta")


def _stop_gradients(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad = False
