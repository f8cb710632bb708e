"""Load, clean, label-map, split and tokenize the data of a job.

Every problem with the data becomes a DatasetInvalid (or DatasetUnavailable for the Hub) whose
message names the file, the column and the offending values, so that a user can fix the data
without reading a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, Value
from datasets.exceptions import DatasetGenerationError
from huggingface_hub import HfApi
from transformers import PreTrainedTokenizerBase

from app.datasets.conll import ConllError, conll_sentences
from app.jobs.spec import DatasetSpec, HubDataset, JobSpec
from app.jobs.tasks import columns_read
from app.jobs.tasks.columns import ANSWER, LABEL_KINDS, MESSAGES, TAGS, TEXT, WORDS
from worker.training.errors import DatasetInvalid, DatasetUnavailable
from worker.training.events import EventSink
from worker.training.labels import LABELS, encode_labels

HUB_TIMEOUT_S = 10.0
# A value this large means the tokenizer config did not say how long its inputs may be.
UNSET_MODEL_MAX_LENGTH = 1_000_000

_FORMATS_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                      ".json": "json", ".parquet": "parquet", ".conll": "conll"}
# The `datasets` builder and its options for each format; the json builder reads both a
# top-level array and JSON Lines.
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "csv": ("csv", {}), "tsv": ("csv", {"delimiter": "\t"}), "jsonl": ("json", {}),
    "json": ("json", {}), "parquet": ("parquet", {})}
_TEXT_TYPES = ("string", "large_string")
_STRING_KINDS = (TEXT, ANSWER)
# Kinds of column whose empty values make a row useless; a missing answer only means that the
# question has none, and the task decides whether that is allowed.
_NOT_EMPTY_KINDS = (TEXT, WORDS, TAGS, MESSAGES)


@dataclass(frozen=True)
class DataFile:
    path: Path
    format: str  # one of "csv", "tsv", "jsonl", "json", "parquet"


@dataclass(frozen=True)
class DataFiles:
    train: DataFile | None = None  # None only when spec.dataset.hub is used
    validation: DataFile | None = None
    test: DataFile | None = None


@dataclass(frozen=True)
class PreparedData:
    """Clean splits holding the text columns and an encoded `labels` column."""

    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    # Label names in id order; empty for regression.
    label_names: list[str]
    # Unusable rows dropped, by the role of the data they were read as (train, validation,
    # test), before any split was held out of train.
    dropped_rows: dict[str, int] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1

    def splits(self) -> dict[str, Dataset]:
        roles = {"train": self.train, "validation": self.validation, "test": self.test}
        return {role: dataset for role, dataset in roles.items() if dataset is not None}


def format_from_suffix(path: Path) -> str:
    """The data format of `path`, from its suffix."""
    fmt = _FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise DatasetInvalid(f"cannot tell the format of {path.name!r}: use one of "
                             f"{', '.join(sorted(_FORMATS_BY_SUFFIX))}")
    return fmt


def prepare_data(spec: JobSpec, files: DataFiles, *, cache_dir: Path,
                 events: EventSink) -> PreparedData:
    """Load every split, drop unusable rows, map labels, hold out splits, and report it."""
    dataset_spec = spec.dataset
    raw = (_load_hub(dataset_spec.hub, cache_dir) if dataset_spec.hub is not None
           else _load_files(files, cache_dir))
    for role, dataset in raw.items():
        _check_columns(role, dataset, spec)

    cleaned: dict[str, Dataset] = {}
    dropped: dict[str, int] = {}
    for role, dataset in raw.items():
        cleaned[role] = _drop_unusable_rows(_text_columns_as_strings(role, dataset, spec), spec)
        dropped[role] = len(dataset) - len(cleaned[role])
        if len(cleaned[role]) == 0:
            raise DatasetInvalid(
                f"the {role} data has no usable rows: all {len(dataset)} rows have an empty "
                f"value in the columns {[column.name for column in columns_read(spec)]}")

    label_names, encoded = encode_labels(spec, cleaned)

    seed, usable_rows = spec.hyperparameters.seed, len(encoded["train"])
    train, held_test = _hold_out(encoded["train"], dataset_spec.test_split, usable_rows, seed,
                                 "test")
    train, held_validation = _hold_out(train, dataset_spec.validation_split, usable_rows, seed,
                                       "validation")
    prepared = PreparedData(
        train=train,
        validation=held_validation if held_validation is not None else encoded.get("validation"),
        test=held_test if held_test is not None else encoded.get("test"),
        label_names=label_names,
        dropped_rows=dropped)

    rows = {f"{role}_rows": len(prepared.splits().get(role, ())) for role in
            ("train", "validation", "test")}
    events.event("dataset_loaded",
                 f"{rows['train_rows']} training, {rows['validation_rows']} validation and "
                 f"{rows['test_rows']} test rows; {sum(dropped.values())} unusable rows dropped",
                 {**rows, "dropped_rows": dropped, "num_labels": prepared.num_labels,
                  "labels": label_names})
    return prepared


def model_length(tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> int:
    """`max_seq_length`, or less where the model's position embeddings end sooner."""
    model_limit = tokenizer.model_max_length
    return min(max_seq_length, model_limit) if model_limit < UNSET_MODEL_MAX_LENGTH \
        else max_seq_length


def tokenize_splits(prepared: PreparedData, tokenizer: PreTrainedTokenizerBase,
                    dataset_spec: DatasetSpec, max_seq_length: int) -> dict[str, Dataset]:
    """Token ids truncated to `max_seq_length`, unpadded: the collator pads per batch."""
    max_seq_length = model_length(tokenizer, max_seq_length)
    text_column, pair_column = dataset_spec.text_column, dataset_spec.text_pair_column

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch[pair_column] if pair_column else None
        return dict(tokenizer(batch[text_column], pairs, truncation=True,
                              max_length=max_seq_length))

    return {role: dataset.map(encode, batched=True,
                              remove_columns=[c for c in dataset.column_names if c != LABELS])
            for role, dataset in prepared.splits().items()}


def _load_files(files: DataFiles, cache_dir: Path) -> dict[str, Dataset]:
    if files.train is None:
        raise DatasetInvalid("the job has no training data: dataset.train names no file")
    roles = {"train": files.train, "validation": files.validation, "test": files.test}
    return {role: _load_file(role, file, cache_dir)
            for role, file in roles.items() if file is not None}


def _load_file(role: str, file: DataFile, cache_dir: Path) -> Dataset:
    if file.format == "conll" and file.path.is_file():
        return _load_conll(role, file.path, cache_dir)
    if file.format not in _BUILDERS:
        raise DatasetInvalid(f"unknown format {file.format!r} for the {role} file "
                             f"{file.path.name!r}")
    if not file.path.is_file():
        raise DatasetInvalid(f"the {role} file {file.path.name!r} does not exist")
    builder, options = _BUILDERS[file.format]
    try:
        # Arrow files in the job's own cache folder: memory-mapped, so large files stay cheap.
        # A packaged builder (csv, json, parquet) on a local file, not a download.
        dataset = datasets.load_dataset(builder, data_files=str(file.path), split="train",  # nosec B615
                                        cache_dir=str(cache_dir), **options)
    except MemoryError:
        raise
    except Exception as exc:  # every parser raises its own kind; all mean "unreadable"
        raise DatasetInvalid(f"could not read the {role} file {file.path.name!r} as "
                             f"{file.format}: {first_line(exc)}") from exc
    if not isinstance(dataset, Dataset):
        raise DatasetInvalid(f"the {role} file {file.path.name!r} did not load as a table")
    return dataset


def _load_conll(role: str, path: Path, cache_dir: Path) -> Dataset:
    def sentences() -> Iterator[dict[str, list[str]]]:
        with path.open(encoding="utf-8-sig") as lines:
            yield from conll_sentences(lines)

    try:
        return Dataset.from_generator(sentences, cache_dir=str(cache_dir))
    except (ConllError, DatasetGenerationError) as exc:
        cause = exc.__cause__ if isinstance(exc, DatasetGenerationError) else exc
        raise DatasetInvalid(f"could not read the {role} file {path.name!r} as CoNLL: "
                             f"{first_line(cause or exc)}") from exc


def _load_hub(hub: HubDataset, cache_dir: Path) -> dict[str, Dataset]:
    if Path(hub.hub).exists():
        # load_dataset would read the worker's own folder of that name instead of the Hub's.
        raise DatasetUnavailable(f"the Hub dataset id {hub.hub!r} is also a path on the "
                                 "worker, so it is not loaded")
    try:
        # One quick request decides reachability: load_dataset alone retries for minutes.
        HfApi().dataset_info(hub.hub, timeout=HUB_TIMEOUT_S)
        # An unpinned Hub dataset is data only: datasets 4+ no longer runs dataset scripts.
        loaded = datasets.load_dataset(hub.hub, hub.config, cache_dir=str(cache_dir))  # nosec B615
    except MemoryError:
        raise
    except Exception as exc:  # offline, unknown id, gated, bad config: all "unavailable"
        raise DatasetUnavailable(f"could not load the Hub dataset {hub.hub!r}"
                                 f"{f' (config {hub.config!r})' if hub.config else ''}: "
                                 f"{first_line(exc)}") from exc
    if not isinstance(loaded, datasets.DatasetDict):
        raise DatasetUnavailable(f"the Hub dataset {hub.hub!r} did not load as named splits")
    wanted = {"train": hub.train_split, "validation": hub.validation_split,
              "test": hub.test_split}
    splits: dict[str, Dataset] = {}
    for role, split in wanted.items():
        if split is None:
            continue
        if split not in loaded:
            raise DatasetInvalid(f"the Hub dataset {hub.hub!r} has no split {split!r} "
                                 f"(for {role}); its splits are {sorted(loaded)}")
        splits[role] = loaded[split]
    return splits


def _check_columns(role: str, dataset: Dataset, spec: JobSpec) -> None:
    present = dataset.column_names
    missing = [column for column in columns_read(spec) if column.name not in present]
    if missing:
        raise DatasetInvalid(
            f"the {role} data has no column {', '.join(repr(c.name) for c in missing)}; its "
            f"columns are {', '.join(map(repr, present))}. Set "
            f"{' or '.join('dataset.' + c.field for c in missing)} to the right name.")


def _text_columns_as_strings(role: str, dataset: Dataset, spec: JobSpec) -> Dataset:
    for column in columns_read(spec):
        feature = dataset.features[column.name]
        if column.kind not in _STRING_KINDS or (isinstance(feature, Value)
                                                and feature.dtype in _TEXT_TYPES):
            continue
        try:
            dataset = dataset.cast_column(column.name, Value("string"))
        except (TypeError, ValueError) as exc:
            raise DatasetInvalid(f"the {role} column {column.name!r} must hold text; it holds "
                                 f"{feature}") from exc
    return dataset


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _drop_unusable_rows(dataset: Dataset, spec: JobSpec) -> Dataset:
    """Rows with an empty text, word list or chat, or without a label, teach nothing."""
    columns = columns_read(spec)
    required = [column.name for column in columns if column.kind in _NOT_EMPTY_KINDS]
    labels = [column.name for column in columns if column.kind in LABEL_KINDS]
    # ClassLabel datasets (GLUE test splits, for one) mark "no label" with -1.
    no_label = {name: -1 if isinstance(dataset.features[name], ClassLabel) else None
                for name in labels}

    def usable(batch: dict[str, list[Any]]) -> list[bool]:
        rows = len(next(iter(batch.values())))
        return [all(not _is_missing(batch[name][row]) and batch[name][row] != []
                    for name in required)
                and all(not _is_missing(batch[name][row]) and batch[name][row] != no_label[name]
                        for name in labels)
                for row in range(rows)]

    return dataset.filter(usable, batched=True)


def _hold_out(train: Dataset, fraction: float | None, original_rows: int, seed: int,
              role: str) -> tuple[Dataset, Dataset | None]:
    """Split `fraction` of the original training rows off `train`, reproducibly by `seed`."""
    if not fraction:
        return train, None
    size = max(1, round(original_rows * fraction))
    if size >= len(train):
        raise DatasetInvalid(
            f"the training data has only {original_rows} usable rows: too few to hold out "
            f"dataset.{role}_split={fraction} and keep rows to train on")
    parts = train.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def first_line(exc: BaseException) -> str:
    """The gist of an exception for an error message: libraries' messages run to pages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
