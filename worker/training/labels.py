"""Labels: class names mapped to ids, lists of labels to 0/1 vectors, numbers checked.

What a task's label is comes from its declaration (app/jobs/tasks/): the kind of its label
column. Every problem becomes a DatasetInvalid that names the split, the column and the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from datasets import ClassLabel, Dataset, Sequence, Value

from app.jobs.spec import JobSpec
from app.jobs.tasks import columns_read
from app.jobs.tasks.columns import LABEL, LABEL_KINDS, LABEL_LIST, TAGS, WORDS
from worker.training.errors import DatasetInvalid

# The column every prepared split carries its encoded label in: what the Trainer expects.
LABELS = "labels"
_SHOWN_VALUES = 5


def encode_labels(spec: JobSpec,
                  cleaned: dict[str, Dataset]) -> tuple[list[str], dict[str, Dataset]]:
    """The label names in id order, and the splits with their labels encoded as `labels`."""
    columns = {column.kind: column.name for column in columns_read(spec)}
    label_kind = next((kind for kind in LABEL_KINDS if kind in columns), None)
    if label_kind is None:
        return [], cleaned
    label_column = columns[label_kind]
    if label_kind == TAGS:
        return _tag_ids(cleaned, columns[WORDS], label_column)
    if label_kind == LABEL_LIST:
        return _multi_hot_labels(cleaned, label_column)
    encoders: dict[str, Callable[[Any], int | float]]
    if label_kind == LABEL:
        label_names, encoders = _class_labels(cleaned, label_column)
        label_type = "int64"
    else:
        _check_regression_labels(cleaned, label_column)
        label_names, encoders, label_type = [], dict.fromkeys(cleaned, float), "float32"
    return label_names, {role: _encode_labels(dataset, label_column, encoders[role], label_type)
                         for role, dataset in cleaned.items()}


def _label_namer(dataset: Dataset, label_column: str) -> Callable[[Any], str]:
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        return feature.int2str

    def name(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            # CSV readers turn an integer column with gaps into floats: 1.0 is label "1".
            return str(int(value))
        return value.strip() if isinstance(value, str) else str(value)

    return name


def _sorted_names(names: set[str]) -> list[str]:
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _class_labels(splits: dict[str, Dataset], label_column: str
                  ) -> tuple[list[str], dict[str, Callable[[Any], int | float]]]:
    """The train label names, in id order, and per split a function from label value to id."""
    namers = {role: _label_namer(dataset, label_column) for role, dataset in splits.items()}
    names_by_role = {role: {namers[role](value) for value in dataset.unique(label_column)}
                     for role, dataset in splits.items()}
    label_names = _sorted_names(names_by_role["train"])
    if len(label_names) < 2:
        raise DatasetInvalid(
            f"the label column {label_column!r} of the training data has only one class "
            f"({label_names[0]!r}); classification needs at least two")
    for role, names in names_by_role.items():
        unseen = _sorted_names(names - set(label_names))
        if unseen:
            raise DatasetInvalid(
                f"the {role} data has labels that the training data never has: "
                f"{', '.join(map(repr, unseen[:_SHOWN_VALUES]))}"
                f"{' ...' if len(unseen) > _SHOWN_VALUES else ''}; "
                f"training labels are {', '.join(map(repr, label_names))}")
    label_ids = {name: index for index, name in enumerate(label_names)}
    return label_names, {role: _label_encoder(namer, label_ids) for role, namer in namers.items()}


def _label_encoder(namer: Callable[[Any], str],
                   label_ids: dict[str, int]) -> Callable[[Any], int]:
    return lambda value: label_ids[namer(value)]


def _multi_hot_labels(splits: dict[str, Dataset],
                      label_column: str) -> tuple[list[str], dict[str, Dataset]]:
    """Lists of labels as vectors of 0/1, one place per label name of the training data."""
    names_by_role: dict[str, set[str]] = {}
    for role, dataset in splits.items():
        names: set[str] = set()
        for value in dataset[label_column]:
            if not isinstance(value, list):
                raise DatasetInvalid(f"multi-label classification needs a list of labels in "
                                     f"every row; the {role} column {label_column!r} holds "
                                     f"{value!r}")
            names |= {str(item).strip() for item in value}
        names_by_role[role] = names
    label_names = _sorted_names(names_by_role["train"])
    if len(label_names) < 2:
        raise DatasetInvalid(f"the label lists of the training data name fewer than two "
                             f"labels ({label_names}); multi-label classification needs two")
    for role, names in names_by_role.items():
        if unseen := _sorted_names(names - set(label_names)):
            raise DatasetInvalid(f"the {role} data has labels that the training data never "
                                 f"has: {', '.join(map(repr, unseen[:_SHOWN_VALUES]))}")
    index = {name: position for position, name in enumerate(label_names)}

    def multi_hot(values: list[Any]) -> list[float]:
        vector = [0.0] * len(label_names)
        for value in values:
            vector[index[str(value).strip()]] = 1.0
        return vector

    def encode(dataset: Dataset) -> Dataset:
        features = dataset.features.copy()
        del features[label_column]
        features[LABELS] = Sequence(Value("float32"))
        return dataset.map(lambda batch: {LABELS: [multi_hot(v) for v in batch[label_column]]},
                           batched=True, remove_columns=[label_column], features=features)

    return label_names, {role: encode(dataset) for role, dataset in splits.items()}


def _tag_ids(splits: dict[str, Dataset], tokens_column: str,
             tags_column: str) -> tuple[list[str], dict[str, Dataset]]:
    """Tag names (sorted) and, per split, the tags of each row as ids in `labels`."""
    names_by_role: dict[str, set[str]] = {}
    for role, dataset in splits.items():
        names: set[str] = set()
        for row, (tokens, tags) in enumerate(zip(dataset[tokens_column], dataset[tags_column],
                                                 strict=True)):
            if not isinstance(tokens, list) or not isinstance(tags, list):
                raise DatasetInvalid(f"token-classification needs lists of words and tags; row "
                                     f"{row} of the {role} data holds {tokens!r} and {tags!r}")
            if len(tokens) != len(tags):
                raise DatasetInvalid(f"row {row} of the {role} data has {len(tokens)} words but "
                                     f"{len(tags)} tags; every word needs exactly one tag")
            names |= {str(tag) for tag in tags}
        names_by_role[role] = names
    tag_names = sorted(names_by_role["train"])
    if len(tag_names) < 2:
        raise DatasetInvalid(f"the training data has one tag only ({tag_names}); "
                             "token-classification needs at least two")
    for role, names in names_by_role.items():
        if unseen := sorted(names - set(tag_names)):
            raise DatasetInvalid(f"the {role} data has tags that the training data never has: "
                                 f"{', '.join(map(repr, unseen[:_SHOWN_VALUES]))}")
    ids = {name: index for index, name in enumerate(tag_names)}

    def encode(dataset: Dataset) -> Dataset:
        features = dataset.features.copy()
        del features[tags_column]
        features[LABELS] = Sequence(Value("int64"))
        return dataset.map(
            lambda batch: {LABELS: [[ids[str(tag)] for tag in tags]
                                    for tags in batch[tags_column]]},
            batched=True, remove_columns=[tags_column], features=features)

    return tag_names, {role: encode(dataset) for role, dataset in splits.items()}


def _check_regression_labels(splits: dict[str, Dataset], label_column: str) -> None:
    for role, dataset in splits.items():
        bad = [value for value in dataset.unique(label_column) if not _is_number(value)]
        if bad:
            raise DatasetInvalid(
                f"text-regression needs numeric labels, but the {role} column "
                f"{label_column!r} holds {', '.join(map(repr, bad[:_SHOWN_VALUES]))}"
                f"{' ...' if len(bad) > _SHOWN_VALUES else ''}")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _encode_labels(dataset: Dataset, label_column: str, encode: Callable[[Any], int | float],
                   label_type: str) -> Dataset:
    features = dataset.features.copy()
    del features[label_column]
    # Explicit features: a raw column already called "labels" would otherwise keep its old
    # type, and the encoded ids would come back as strings.
    features[LABELS] = Value(label_type)
    return dataset.map(lambda batch: {LABELS: [encode(value) for value in batch[label_column]]},
                       batched=True, remove_columns=[label_column], features=features)
