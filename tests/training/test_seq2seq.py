"""seq2seq: an encoder-decoder learns to write targets; BLEU, chrF and ROUGE score it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from tests.factories import generated_text, seq2seq_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.data import PreparedData
from worker.training.errors import InvalidSpec
from worker.training.tasks.seq2seq import text_scores, tokenize
from worker.training.trainer import run_training


def test_learns_to_write_the_summary(tmp_path: Path, tiny_bart: Path,
                                     sink: RecordingSink) -> None:
    files = data_files(write_rows(tmp_path / "train.jsonl", seq2seq_rows(200)),
                       write_rows(tmp_path / "validation.jsonl", seq2seq_rows(40, seed=1)))

    def run(hyperparameters: dict, out: str) -> dict:
        spec = make_spec("seq2seq", dataset={"validation": "uploaded-val"},
                         evaluation={"strategy": "no"},
                         hyperparameters={"generation_max_length": 10, **hyperparameters})
        return run_training(spec, files, str(tiny_bart), tmp_path / out, events=sink)

    untrained = run({"max_steps": 1, "learning_rate": 1e-9}, "untrained")
    # 100 epochs: at 60, some seeds stop short of the bar.
    trained = run({"epochs": 100, "learning_rate": 5e-3}, "trained")

    assert trained["eval_chrf"] >= 0.8 > untrained["eval_chrf"] + 0.5
    assert trained["eval_rougeL"] >= 0.8 and trained["eval_bleu"] >= 0.5
    assert untrained["eval_bleu"] < 0.1
    model_dir = tmp_path / "trained" / "model"
    samples = json.loads((model_dir / "samples.json").read_text())
    assert len(samples) == 3 and {"source", "target", "written"} <= set(samples[0])
    assert sink.data_of("samples")[-1]["samples"] == samples
    assert 3 <= trained["eval_generated_tokens"] <= 6
    # The saved model decodes as the evaluations did.
    decoding = json.loads((model_dir / "generation_config.json").read_text())
    assert (decoding["max_length"], decoding["num_beams"]) == (10, 1)
    assert generated_text(model_dir, "the plot was trains and superb") == \
        "about trains and superb"


def test_sources_get_the_prefix_and_targets_become_labels(tiny_bart: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bart)
    rows = Dataset.from_list([{"source": "cats are great", "target": "about cats"}])
    spec = make_spec("seq2seq", dataset={"source_prefix": "summarize: "},
                     hyperparameters={"max_target_length": 3}).resolved()
    [encoded] = tokenize(PreparedData(rows, None, None, []), tokenizer, spec)["train"]
    assert tokenizer.decode(encoded["input_ids"], skip_special_tokens=True) == \
        "summarize: cats are great"
    assert len(encoded["labels"]) == 3


def test_text_scores_are_on_a_zero_to_one_scale() -> None:
    perfect = text_scores(["about cats and great"] * 2, ["about cats and great"] * 2)
    assert perfect["bleu"] == pytest.approx(1.0) and perfect["chrf"] == pytest.approx(1.0)
    assert perfect["rouge1"] == perfect["rouge2"] == perfect["rougeL"] == pytest.approx(1.0)
    wrong = text_scores(["dogs"], ["about cats and great"])
    assert wrong["bleu"] == 0.0 and wrong["rougeL"] == 0.0 and wrong["chrf"] < 0.2


def test_a_decoder_only_model_is_refused(tmp_path: Path, tiny_gpt2: Path,
                                         sink: RecordingSink) -> None:
    files = data_files(write_rows(tmp_path / "train.jsonl", seq2seq_rows(8)))
    with pytest.raises(InvalidSpec, match="cannot be trained for seq2seq") as refused:
        run_training(make_spec("seq2seq"), files, str(tiny_gpt2), tmp_path / "out", events=sink)
    assert "encoder-decoder" in (refused.value.hint or "")
