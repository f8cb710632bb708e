"""causal-lm: a GPT-style model learns packed domain text, or answers to prompts."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from transformers import AutoTokenizer, pipeline

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.data import PreparedData
from worker.training.errors import DatasetInvalid, InvalidSpec
from worker.training.tasks.causal_lm import IGNORED, tokenize
from worker.training.trainer import run_training

COLOURS = {"cats": "grey", "dogs": "brown", "rain": "blue", "trains": "red"}


def prompt_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """'what colour are cats ?' -> ' grey': one fixed answer per topic, learnable."""
    rng = random.Random(seed)
    return [{"prompt": f"what colour are {topic} ?", "completion": f" {COLOURS[topic]}"}
            for topic in (rng.choice(list(COLOURS)) for _ in range(n))]


def train_twice(tmp_path: Path, model: Path, sink: RecordingSink, files: Any, *,
                max_seq_length: int = 32, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics of an untrained run (a step at a vanishing rate) and of a trained one."""
    def run(hyperparameters: dict[str, Any], out: str) -> dict[str, Any]:
        spec = make_spec("causal-lm", hyperparameters=hyperparameters, **fields)
        return run_training(spec, files, str(model), tmp_path / out, events=sink)

    return (run({"max_steps": 1, "learning_rate": 1e-9}, "untrained"),
            run({"epochs": 8, "learning_rate": 5e-3, "max_seq_length": max_seq_length}, "trained"))


def test_packed_text_learns_and_generates(tmp_path: Path, tiny_gpt2: Path,
                                          sink: RecordingSink) -> None:
    texts = [{"text": row["text"]} for row in sentiment_rows(200)]
    files = data_files(write_rows(tmp_path / "train.jsonl", texts))

    untrained, trained = train_twice(tmp_path, tiny_gpt2, sink, files,
                                     dataset={"validation_split": 0.2})

    assert trained["eval_loss"] < 0.6 * untrained["eval_loss"]
    assert trained["eval_perplexity"] == pytest.approx(math.exp(trained["eval_loss"]))
    model_dir = tmp_path / "trained" / "model"
    generate = pipeline("text-generation", model=str(model_dir))
    [output] = generate("the movie was", max_new_tokens=5, do_sample=False)
    assert output["generated_text"].startswith("the movie was")
    samples = json.loads((model_dir / "samples.json").read_text())
    assert len(samples) == 3 and all(sample["completion"] for sample in samples)
    assert sink.data_of("samples")[-1]["samples"] == samples


def test_prompt_completion_learns_the_answers(tmp_path: Path, tiny_gpt2: Path,
                                              sink: RecordingSink) -> None:
    files = data_files(write_rows(tmp_path / "train.csv", prompt_rows(160)),
                       write_rows(tmp_path / "validation.csv", prompt_rows(20, seed=1)))

    untrained, trained = train_twice(
        tmp_path, tiny_gpt2, sink, files,
        dataset={"validation": "uploaded-val", "prompt_column": "prompt",
                 "completion_column": "completion"})

    assert trained["eval_loss"] < 0.3 * untrained["eval_loss"]
    samples = json.loads((tmp_path / "trained" / "model" / "samples.json").read_text())
    for sample in samples:
        topic = sample["prompt"].split()[3]
        assert sample["completion"].split()[0] == COLOURS[topic], samples


def test_samples_of_prompts_longer_than_the_model_keep_their_end(tmp_path: Path,
                                                                 tiny_gpt2: Path,
                                                                 sink: RecordingSink) -> None:
    # Alpaca's template alone is about 40 tokens; the tiny model has 128 positions.
    preamble = "Below is an instruction that describes a task. " * 20
    rows = [{**row, "prompt": preamble + row["prompt"]} for row in prompt_rows(16)]
    spec = make_spec("causal-lm", dataset={"prompt_column": "prompt",
                                           "completion_column": "completion"},
                     hyperparameters={"max_steps": 2})
    run_training(spec, data_files(write_rows(tmp_path / "train.jsonl", rows)), str(tiny_gpt2),
                 tmp_path / "out", events=sink)
    samples = json.loads((tmp_path / "out" / "model" / "samples.json").read_text())
    assert len(samples) == 3 and samples[0]["prompt"].startswith(preamble)


@pytest.mark.parametrize("completion_only", [True, False])
def test_the_prompt_is_left_out_of_the_loss_on_request(tiny_gpt2: Path,
                                                       completion_only: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    rows = Dataset.from_list([{"prompt": "what colour are cats ?", "completion": " grey"}])
    spec = make_spec("causal-lm", dataset={"prompt_column": "prompt",
                                           "completion_column": "completion"},
                     hyperparameters={"train_on_completion_only": completion_only})
    [encoded] = tokenize(PreparedData(rows, None, None, []), tokenizer, spec)["train"]
    asked = len(tokenizer("what colour are cats ?", add_special_tokens=False)["input_ids"])
    answered = encoded["input_ids"][asked:]
    assert answered[-1] == tokenizer.eos_token_id
    expected_prompt_labels = [IGNORED] * asked if completion_only else encoded["input_ids"][:asked]
    assert encoded["labels"][:asked] == expected_prompt_labels
    assert encoded["labels"][asked:] == answered


def chat_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """prompt_rows as chats: a system turn, the question, the answer."""
    return [{"messages": [{"role": "system", "content": "answer in one word"},
                          {"role": "user", "content": row["prompt"]},
                          {"role": "assistant", "content": row["completion"].strip()}]}
            for row in prompt_rows(n, seed)]


def test_chats_learn_the_assistants_turns_with_the_default_template(
        tmp_path: Path, tiny_gpt2: Path, sink: RecordingSink) -> None:
    files = data_files(write_rows(tmp_path / "train.jsonl", chat_rows(200)),
                       write_rows(tmp_path / "validation.jsonl", chat_rows(20, seed=1)))

    # A rendered chat is about 35 tokens: none may lose its answer to truncation.
    untrained, trained = train_twice(tmp_path, tiny_gpt2, sink, files, max_seq_length=64,
                                     dataset={"validation": "uploaded-val",
                                              "messages_column": "messages"})

    assert trained["eval_loss"] < 0.3 * untrained["eval_loss"]
    model_dir = tmp_path / "trained" / "model"
    samples = json.loads((model_dir / "samples.json").read_text())
    assert samples[0]["prompt"].endswith("assistant:")
    assert all(sample["completion"].strip() in COLOURS.values() for sample in samples), samples
    # The template it learnt with is saved with it: chat messages go straight in.
    chat = pipeline("text-generation", model=str(model_dir))
    [output] = chat([{"role": "system", "content": "answer in one word"},
                     {"role": "user", "content": "what colour are rain ?"}],
                    max_new_tokens=6, do_sample=False)
    answer = output["generated_text"][-1]
    assert answer["role"] == "assistant" and answer["content"].strip() in COLOURS.values()


@pytest.mark.parametrize("completion_only", [True, False])
def test_only_the_assistant_turns_count_when_asked(tiny_gpt2: Path,
                                                   completion_only: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    rows = Dataset.from_list(chat_rows(1))
    spec = make_spec("causal-lm", dataset={"messages_column": "messages"},
                     hyperparameters={"train_on_completion_only": completion_only})
    [encoded] = tokenize(PreparedData(rows, None, None, []), tokenizer, spec)["train"]
    learned = [token for token, label in zip(encoded["input_ids"], encoded["labels"],
                                             strict=True) if label != IGNORED]
    text = tokenizer.decode(learned)
    if completion_only:
        assert text == f" {rows[0]['messages'][2]['content']}<|endoftext|>\n"
    else:
        assert text.startswith("system: answer in one word\nuser: what colour")


def test_a_chat_without_an_assistant_turn_is_named(tiny_gpt2: Path) -> None:
    rows = Dataset.from_list([{"messages": [{"role": "user", "content": "hello"}]}])
    spec = make_spec("causal-lm", dataset={"messages_column": "messages"})
    with pytest.raises(DatasetInvalid, match="row 0 of the train data has no 'assistant'"):
        tokenize(PreparedData(rows, None, None, []), AutoTokenizer.from_pretrained(tiny_gpt2),
                 spec)


@pytest.mark.parametrize("fields", [{}, {"prompt_column": "prompt",
                                         "completion_column": "completion"}])
def test_an_encoder_is_refused_for_causal_lm(tmp_path: Path, tiny_bert: Path,
                                             sink: RecordingSink, fields: dict) -> None:
    rows = [{"text": "a film", **row} for row in prompt_rows(10)]
    files = data_files(write_rows(tmp_path / "train.jsonl", rows))
    spec = make_spec("causal-lm", dataset=fields)
    with pytest.raises(InvalidSpec, match="is an encoder") as refused:
        run_training(spec, files, str(tiny_bert), tmp_path / "out", events=sink)
    assert "GPT-style" in (refused.value.hint or "")
