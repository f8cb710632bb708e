"""The `dataset` section of the job spec: where the rows come from and which columns hold
what, per task."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from app.jobs.spec_base import SpecError, Strict, reading_stored

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COLUMN = Annotated[str, Field(min_length=1, max_length=256)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]

_SPLIT = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\[\]:%+-]+$")]


class HubDataset(Strict):
    hub: str = Field(min_length=1, max_length=200, description="Hugging Face Hub dataset id")
    config: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    train_split: _SPLIT = "train"
    validation_split: _SPLIT | None = Field(default=None,
                                            description="Hub split used for validation")
    test_split: _SPLIT | None = None

    @field_validator("hub")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        # load_dataset would also read a local folder or a script: only Hub ids are taken.
        if not _HUB_ID.match(value) or ".." in value:
            raise ValueError("a Hub dataset id looks like 'glue' or 'org/name'; paths and URLs "
                             "are not accepted")
        return value


class DatasetSpec(Strict):
    train: str | None = Field(default=None, max_length=4096,
                              description="Id of an uploaded dataset")
    validation: str | None = Field(default=None, max_length=4096)
    test: str | None = Field(default=None, max_length=4096)
    hub: HubDataset | None = None
    validation_split: Fraction | None = Field(
        default=None, description="Fraction of train held out for validation (seeded)")
    test_split: Fraction | None = Field(
        default=None, description="Fraction of train held out for test (seeded)")
    text_column: _COLUMN = "text"
    text_pair_column: _COLUMN | None = None
    label_column: _COLUMN = "label"
    multi_label: bool = Field(
        default=False, description="text-classification: the label column holds a list of "
                                   "labels per row (JSON Lines, JSON or Parquet)")
    tokens_column: _COLUMN = Field(
        default="tokens", description="token-classification: the list of words of each row")
    tags_column: _COLUMN = Field(
        default="tags", description="token-classification: the list of tags, one per word")
    label_all_subtokens: bool = Field(
        default=False, description="token-classification: give every sub-word token its "
                                   "word's tag, not only the first (the rest are ignored)")
    prompt_column: _COLUMN | None = Field(
        default=None, description="causal-lm: the prompt of prompt/completion rows")
    completion_column: _COLUMN | None = Field(
        default=None, description="causal-lm: the completion of prompt/completion rows")
    messages_column: _COLUMN | None = Field(
        default=None, description="causal-lm: a chat per row, a list of {role, content}, "
                                  "rendered with the tokenizer's chat template")
    question_column: _COLUMN = Field(default="question", description="question-answering")
    context_column: _COLUMN = Field(default="context", description="question-answering")
    answers_column: _COLUMN = Field(
        default="answers", description="question-answering: SQuAD answers, "
                                       '{"text": [...], "answer_start": [...]} per row')
    answer_column: _COLUMN | None = Field(
        default=None, description="question-answering with flat columns: the answer's text "
                                  "(instead of answers_column)")
    answer_start_column: _COLUMN | None = Field(
        default=None, description="question-answering with flat columns: the answer's first "
                                  "character in the context; default: where the text first "
                                  "occurs")
    allow_unanswerable: bool = Field(
        default=False, description="question-answering: rows may have no answer (SQuAD 2.0); "
                                   "the model learns to answer nothing to them")
    source_column: _COLUMN = Field(default="source", description="seq2seq: the input text")
    target_column: _COLUMN = Field(default="target", description="seq2seq: the text to write")
    source_prefix: str | None = Field(
        default=None, max_length=500,
        description="seq2seq: put before every source, e.g. 'translate English to German: ' "
                    "for T5")

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> DatasetSpec:
        if reading_stored(info):
            return self
        if (self.train is None) == (self.hub is None):
            raise SpecError("give exactly one of 'train' (an uploaded dataset id) or 'hub'",
                            "dataset.train")
        if self.hub is not None and (self.validation or self.test):
            raise SpecError("'validation' and 'test' ids go with 'train', not with 'hub'; "
                            "use hub.validation_split and hub.test_split", "dataset.hub")
        if self.validation and self.validation_split:
            raise SpecError("give 'validation' or 'validation_split', not both",
                            "dataset.validation_split")
        if self.test and self.test_split:
            raise SpecError("give 'test' or 'test_split', not both", "dataset.test_split")
        if (self.validation_split or 0) + (self.test_split or 0) >= 0.9:
            raise SpecError("validation_split + test_split must leave at least 10% for "
                            "training", "dataset.validation_split")
        return self

    def uploaded_ids(self) -> dict[str, str]:
        """The uploaded datasets this spec reads, by role."""
        roles = {"train": self.train, "validation": self.validation, "test": self.test}
        return {role: ref for role, ref in roles.items() if ref}

    @property
    def has_validation(self) -> bool:
        hub_validation = self.hub is not None and self.hub.validation_split is not None
        return bool(self.validation or self.validation_split or hub_validation)
