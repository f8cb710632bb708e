"""token-classification: a tag per word, aligned to sub-words, scored per entity."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer, pipeline

from tests.factories import entity_rows, write_conll, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.data import PreparedData
from worker.training.errors import DatasetInvalid
from worker.training.tasks.token_classification import IGNORED, tokenize
from worker.training.trainer import run_training


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_learns_entities_and_tags_them(tmp_path: Path, tiny_models: dict[str, Path],
                                       family: str, sink: RecordingSink) -> None:
    files = data_files(write_rows(tmp_path / "train.jsonl", entity_rows(200)),
                       write_rows(tmp_path / "validation.jsonl", entity_rows(40, seed=1)))

    def run(hyperparameters: dict, out: str) -> dict:
        spec = make_spec("token-classification", dataset={"validation": "uploaded-val"},
                         hyperparameters=hyperparameters)
        return run_training(spec, files, str(tiny_models[family]), tmp_path / out, events=sink)

    untrained = run({"max_steps": 1, "learning_rate": 1e-9}, "untrained")
    trained = run({"epochs": 6, "learning_rate": 5e-3}, "trained")

    assert trained["eval_f1"] >= 0.9 > untrained["eval_f1"]
    assert trained["eval_accuracy"] >= 0.95
    assert set(trained["validation_per_class"]) == {"TOPIC", "MOOD"}
    tagger = pipeline("token-classification", model=str(tmp_path / "trained" / "model"))
    found = {(entity["word"].strip().lstrip("Ġ"), entity["entity"])
             for entity in tagger("the cats were lovely")}
    assert ("cats", "B-TOPIC") in found and ("lovely", "B-MOOD") in found, found


@pytest.mark.parametrize("every_piece", [False, True])
def test_tags_follow_the_first_sub_word_or_all(tiny_bert: Path, every_piece: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    # "zyx" is no word of the tiny vocabulary: it splits into several pieces.
    rows = Dataset.from_list([{"tokens": ["cats", "zyx"], "labels": [1, 2]}])
    spec = make_spec("token-classification", dataset={"label_all_subtokens": every_piece})
    [encoded] = tokenize(PreparedData(rows, None, None, ["O", "B-X", "I-X"]), tokenizer,
                         spec)["train"]
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > 4
    labels = encoded["labels"]
    assert labels[0] == labels[-1] == IGNORED and labels[1] == 1 and labels[2] == 2
    assert labels[3:-1] == ([2] * (len(pieces) - 4) if every_piece
                            else [IGNORED] * (len(pieces) - 4))


def test_reads_conll_files(tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_conll(tmp_path / "train.conll", entity_rows(120))
    spec = make_spec("token-classification", dataset={"validation_split": 0.25},
                     hyperparameters={"epochs": 4, "learning_rate": 5e-3})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    assert metrics["eval_f1"] >= 0.8
    assert sink.data_of("dataset_loaded")[0]["train_rows"] == 90


def test_words_and_tags_must_pair_up(tmp_path: Path, tiny_bert: Path,
                                     sink: RecordingSink) -> None:
    rows = [*entity_rows(8), {"tokens": ["a", "b"], "tags": ["O"]}]
    with pytest.raises(DatasetInvalid, match="row 8 of the train data has 2 words but 1 tags"):
        run_training(make_spec("token-classification"),
                     data_files(write_rows(tmp_path / "t.jsonl", rows)), str(tiny_bert),
                     tmp_path / "out", events=sink)
