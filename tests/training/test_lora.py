"""LoRA: adapters train, the head trains, and the adapter and the merged model agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)

from tests.factories import (
    entity_rows,
    qa_rows,
    sentiment_rows,
    seq2seq_rows,
    write_rows,
    write_tiny_bert,
)
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.errors import InvalidSpec
from worker.training.trainer import run_training


def test_adapter_and_merged_model_predict_alike(tmp_path: Path, tiny_bert: Path,
                                                sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(200))
    spec = make_spec(dataset={"validation_split": 0.2},
                     hyperparameters={"epochs": 5, "learning_rate": 1e-2},
                     lora={"r": 4, "alpha": 8}, evaluation={"keep_best_model": True})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    assert metrics["eval_accuracy"] >= 0.85
    assert metrics["best_model"]["metric"] == "eval_f1"  # the adapted model's best is kept
    [loaded] = sink.data_of("model_loaded")
    assert loaded["lora"] and 0 < loaded["trainable_share"] < 0.5
    assert loaded["trainable_parameters"] < loaded["total_parameters"]
    model_dir = tmp_path / "out" / "model"
    adapter_dir = model_dir / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in adapter_dir.iterdir()}
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4
    # Named as the spec names the model; nothing of the worker's disk or loader goes along.
    assert adapter_config["base_model_name_or_path"] == "tiny-bert"
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert not {"local_files_only", "revision", "is_local"} & set(tokenizer_config)

    merged = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label=merged.config.id2label,
        label2id=merged.config.label2id)
    adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(["a great and lovely film", "an awful boring plot"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, adapted(**batch).logits, atol=1e-4)
    classify = pipeline("text-classification", model=str(model_dir))
    held_out = sentiment_rows(20, seed=9)
    predicted = classify([row["text"] for row in held_out])
    right = sum(p["label"] == row["label"] for p, row in zip(predicted, held_out, strict=True))
    assert right >= 16


def test_causal_lm_with_lora(tmp_path: Path, tiny_gpt2: Path, sink: RecordingSink) -> None:
    texts = [{"text": row["text"]} for row in sentiment_rows(120)]
    files = data_files(write_rows(tmp_path / "t.jsonl", texts))

    def run(hyperparameters: dict, out: str) -> dict:
        spec = make_spec("causal-lm", dataset={"validation_split": 0.2},
                         hyperparameters={"max_seq_length": 32, **hyperparameters},
                         lora={"r": 8, "alpha": 16})
        return run_training(spec, files, str(tiny_gpt2), tmp_path / out, events=sink)

    untrained = run({"max_steps": 1, "learning_rate": 1e-9}, "untrained")
    metrics = run({"epochs": 6, "learning_rate": 3e-2}, "out")

    # A modest gain: in a random tiny model the frozen embeddings (which the output layer
    # shares) hold half the parameters, and adapters on the blocks cannot move them.
    assert metrics["eval_perplexity"] < 0.95 * untrained["eval_perplexity"]
    assert (tmp_path / "out" / "model" / "adapter" / "adapter_model.safetensors").is_file()
    generate = pipeline("text-generation", model=str(tmp_path / "out" / "model"))
    assert generate("the movie", max_new_tokens=3, do_sample=False)[0]["generated_text"]


@pytest.mark.parametrize(("task", "family", "rows", "auto_class"), [
    ("token-classification", "bert", entity_rows(40), AutoModelForTokenClassification),
    ("question-answering", "bert", qa_rows(40), AutoModelForQuestionAnswering),
    ("seq2seq", "bart", seq2seq_rows(40), AutoModelForSeq2SeqLM),
])
def test_every_tasks_head_trains_and_travels_with_the_adapter(
        task: str, family: str, rows: list, auto_class: Any, tmp_path: Path,
        tiny_bert: Path, tiny_bart: Path, sink: RecordingSink) -> None:
    base_dir = {"bert": tiny_bert, "bart": tiny_bart}[family]
    spec = make_spec(task, model=f"tiny-{family}", lora={"r": 4},
                     hyperparameters={"max_steps": 6, "learning_rate": 1e-2})
    run_training(spec, data_files(write_rows(tmp_path / "train.jsonl", rows)), str(base_dir),
                 tmp_path / "out", events=sink)

    [loaded] = sink.data_of("model_loaded")
    assert loaded["lora"] and 0 < loaded["trainable_share"] < 0.5
    model_dir = tmp_path / "out" / "model"
    merged = auto_class.from_pretrained(model_dir).eval()
    head = ({"num_labels": merged.config.num_labels, "id2label": merged.config.id2label}
            if task == "token-classification" else {})
    # The base gets a fresh random head: only a head saved in the adapter makes them agree.
    adapted = PeftModel.from_pretrained(auto_class.from_pretrained(base_dir, **head),
                                        model_dir / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = dict(tokenizer(["what topic ?"], ["the film was about cats and great"],
                           return_tensors="pt"))
    if task == "seq2seq":
        batch["decoder_input_ids"] = torch.tensor([[merged.config.decoder_start_token_id]])
    with torch.no_grad():
        expected, found = merged(**batch), adapted(**batch)
    for name in ("logits", "start_logits", "end_logits"):
        if name in expected:
            assert torch.allclose(expected[name], found[name], atol=1e-4), name


def test_unknown_target_modules_are_named(tmp_path: Path, tiny_bert: Path,
                                          sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(20))
    spec = make_spec(lora={"target_modules": ["no_such_layer"]})
    with pytest.raises(InvalidSpec, match="LoRA cannot adapt"):
        run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out", events=sink)


def test_distilbert_classifier_keeps_its_two_layer_head(tmp_path: Path,
                                                         sink: RecordingSink) -> None:
    # DistilBERT's head is pre_classifier then classifier: LoRA must adapt neither, and
    # peft trains both in full (it matches module names by their ending, "classifier").
    base_dir = write_tiny_bert(tmp_path / "distilbert", family="distilbert")
    spec = make_spec("text-classification", model="tiny-distilbert", lora={"r": 4},
                     hyperparameters={"max_steps": 4, "learning_rate": 1e-2})
    run_training(spec, data_files(write_rows(tmp_path / "train.jsonl", sentiment_rows(40))),
                 str(base_dir), tmp_path / "out", events=sink)

    [loaded] = sink.data_of("model_loaded")
    assert loaded["lora"] and 0 < loaded["trainable_share"] < 0.5
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    assert merged.config.num_labels == 2
