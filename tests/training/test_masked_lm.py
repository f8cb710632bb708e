"""masked-lm: a BERT-style model adapts to a domain's text and fills in masked words."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from transformers import pipeline

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.errors import DatasetInvalid, InvalidSpec
from worker.training.trainer import run_training


def domain_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts only, no labels: the sentiment factory's sentences, which repeat a few words."""
    return [{"text": row["text"]} for row in sentiment_rows(n, seed=seed)]


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_learns_the_domain_and_fills_masks(tmp_path: Path, tiny_models: dict[str, Path],
                                           family: str, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.jsonl", domain_rows(240))
    validation = write_rows(tmp_path / "validation.jsonl", domain_rows(48, seed=1))
    files = data_files(train, validation)

    def train_for(epochs: float, learning_rate: float, out: str) -> dict:
        spec = make_spec("masked-lm", dataset={"validation": "uploaded-val"},
                         hyperparameters={"epochs": epochs, "learning_rate": learning_rate,
                                          "mlm_probability": 0.3})
        return run_training(spec, files, str(tiny_models[family]), tmp_path / out,
                            events=sink)

    untrained = train_for(0.01, 1e-9, "untrained")
    trained = train_for(6, 5e-3, "trained")

    assert trained["eval_loss"] < 0.7 * untrained["eval_loss"]
    assert trained["eval_perplexity"] == pytest.approx(math.exp(trained["eval_loss"]))
    assert trained["eval_perplexity"] < untrained["eval_perplexity"]
    fill = pipeline("fill-mask", model=str(tmp_path / "trained" / "model"))
    guesses = fill(f"the movie was {fill.tokenizer.mask_token} and lovely")
    assert len(guesses) == 5 and all(isinstance(g["token_str"], str) for g in guesses)
    assert all(0.0 <= g["score"] <= 1.0 for g in guesses)
    card = (tmp_path / "trained" / "model" / "README.md").read_text()
    assert "pipeline('fill-mask'" in card


def test_reads_the_text_column_only(tmp_path: Path, tiny_bert: Path,
                                    sink: RecordingSink) -> None:
    rows = [{"body": row["text"], "label": None} for row in sentiment_rows(40)]
    rows[0]["body"] = "  "
    train = write_rows(tmp_path / "train.csv", rows)
    spec = make_spec("masked-lm", dataset={"text_column": "body", "validation_split": 0.2},
                     hyperparameters={"max_steps": 2})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    loaded = sink.data_of("dataset_loaded")[0]
    assert loaded["dropped_rows"]["train"] == 1 and loaded["labels"] == []
    assert "eval_perplexity" in metrics and "test_per_class" not in metrics


def test_a_missing_text_column_is_named(tmp_path: Path, tiny_bert: Path,
                                        sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", domain_rows(10))
    with pytest.raises(DatasetInvalid, match="no column 'body'"):
        run_training(make_spec("masked-lm", dataset={"text_column": "body"}),
                     data_files(train), str(tiny_bert), tmp_path / "out", events=sink)


def test_a_model_without_a_mask_token_is_refused(tmp_path: Path, tiny_gpt2: Path,
                                                 sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", domain_rows(10))
    with pytest.raises(InvalidSpec, match="cannot be trained for masked-lm") as refused:
        run_training(make_spec("masked-lm"), data_files(train), str(tiny_gpt2),
                     tmp_path / "out", events=sink)
    assert "causal-lm" in (refused.value.hint or "")
