"""The compute settings: resolved for the hardware by rule, and what a job really trains with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from transformers import pipeline
from transformers.trainer_pt_utils import LengthGroupedSampler

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from tests.training.test_causal_lm import prompt_rows
from worker.training.compute import FUSED_ADAMW, ModelTraits, in_order_evaluation, resolve_compute
from worker.training.errors import InvalidSpec
from worker.training.hardware import Hardware
from worker.training.tasks import recipe_for
from worker.training.trainer import run_training, training_arguments

BF16_GPU = Hardware(device="cuda", name="NVIDIA H100", native_bf16=True, tf32=True)
OLD_GPU = Hardware(device="cuda", name="Tesla T4", native_bf16=False, tf32=False)
BF16_CPU = Hardware(device="cpu", name="Xeon", native_bf16=True, tf32=False,
                    cpu_bf16_flags=("avx512_bf16", "amx_bf16"))
PLAIN_CPU = Hardware(device="cpu", name="EPYC", native_bf16=False, tf32=False)
FULL_MODEL = ModelTraits(sdpa=True, flash_attention=True, packed_rows=True)
EAGER_ONLY = ModelTraits(sdpa=False, flash_attention=False, packed_rows=False)
MANY_ROWS = 10_000


def resolved(hardware: Hardware, traits: ModelTraits = FULL_MODEL,
             task: str = "text-classification", rows: int | None = MANY_ROWS,
             **fields: Any) -> Any:
    spec = make_spec(task, **fields)
    return resolve_compute(spec, hardware, traits, train_rows=rows,
                           rows_vary_in_length=not recipe_for(spec).packs_tokens(spec))


@pytest.mark.parametrize(("hardware", "precision", "tf32"), [
    (BF16_GPU, "bf16", True), (OLD_GPU, "fp16", False), (BF16_CPU, "bf16", False),
    (PLAIN_CPU, "fp32", False)])
def test_auto_precision_follows_the_hardware(hardware: Hardware, precision: str,
                                             tf32: bool) -> None:
    compute = resolved(hardware)

    assert (compute.precision, compute.tf32) == (precision, tf32)
    assert compute.autocast == (precision != "fp32")
    assert compute.optimizer == FUSED_ADAMW and compute.reasons["precision"]
    arguments = compute.training_arguments()
    assert (arguments["bf16"], arguments["fp16"]) == (precision == "bf16", precision == "fp16")
    # The weights train in fp32 whatever the arithmetic: mixed precision keeps fp32 masters.
    assert compute.from_pretrained_options()["dtype"] == torch.float32


def test_explicit_settings_are_kept_or_refused_with_a_hint() -> None:
    emulated = resolved(PLAIN_CPU, compute={"precision": "bf16"})
    assert emulated.precision == "bf16" and "precision" not in emulated.reasons
    # An explicit fp32 is IEEE fp32, even where TF32 is there.
    assert not resolved(BF16_GPU, compute={"precision": "fp32"}).tf32
    for hardware, compute in ((PLAIN_CPU, {"precision": "fp16"}),
                              (OLD_GPU, {"precision": "bf16"}),
                              (PLAIN_CPU, {"attention": "flash_attention_2"})):
        with pytest.raises(InvalidSpec) as refused:
            resolved(hardware, compute=compute)
        assert refused.value.hint and "compute." in refused.value.message
    with pytest.raises(InvalidSpec, match="sdpa"):
        resolved(PLAIN_CPU, EAGER_ONLY, compute={"attention": "sdpa"})


def test_auto_attention_falls_back_to_what_the_model_has() -> None:
    assert resolved(PLAIN_CPU).attention == "sdpa"
    assert resolved(PLAIN_CPU, EAGER_ONLY).attention == "eager"
    # flash-attn is not installed here: sdpa even on a GPU.
    assert resolved(BF16_GPU).attention == "sdpa"


def test_length_grouping_for_rows_that_vary() -> None:
    assert resolved(PLAIN_CPU).length_grouping
    assert not resolved(PLAIN_CPU, rows=200).length_grouping  # one megabatch: same batches
    assert resolved(PLAIN_CPU, rows=200, compute={"length_grouping": True}).length_grouping
    blocks = resolved(PLAIN_CPU, task="causal-lm", model="tiny-gpt2")
    assert not blocks.length_grouping and not blocks.packing
    prompts = resolved(PLAIN_CPU, task="causal-lm", model="tiny-gpt2",
                       dataset={"prompt_column": "p", "completion_column": "c"})
    assert prompts.packing and not prompts.length_grouping
    unpackable = resolved(PLAIN_CPU, EAGER_ONLY, task="causal-lm", model="tiny-gpt2",
                          dataset={"prompt_column": "p", "completion_column": "c"})
    assert not unpackable.packing and unpackable.length_grouping


def test_length_grouping_reaches_the_sampler_and_evaluation_stays_in_order(
        tmp_path: Path) -> None:
    spec = make_spec(compute={"length_grouping": True}).resolved()
    compute = resolved(PLAIN_CPU, compute={"length_grouping": True})
    arguments = training_arguments(spec, tmp_path, recipe_for(spec), compute)
    assert arguments.train_sampling_strategy == "group_by_length"
    rows = [{"input_ids": [1] * (n % 7 + 1), "labels": 0} for n in range(64)]
    trainer = in_order_evaluation(recipe_for(spec).trainer_class)(
        model=torch.nn.Linear(1, 1), args=arguments, train_dataset=rows, eval_dataset=rows)

    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    assert list(trainer._get_eval_sampler(rows)) == list(range(64))


def test_bf16_on_this_cpu_trains_reports_and_saves_the_base_dtype(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(200))
    spec = make_spec(dataset={"validation_split": 0.2}, compute={"precision": "bf16"})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    assert metrics["eval_accuracy"] >= 0.9
    message, data = next((message, data) for kind, message, data in sink.events
                         if kind == "model_loaded")
    assert data["compute"]["precision"] == "bf16" and data["compute"]["autocast"]
    assert data["compute"]["attention"] == "sdpa" and "sdpa" in message and "bf16" in message
    model_dir = tmp_path / "out" / "model"
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        names = weights.keys()  # a safetensors file, not a dict: it cannot be iterated
        assert {weights.get_tensor(name).dtype for name in names} == {torch.float32}
    assert "## Compute" in (model_dir / "README.md").read_text()
    classifier = pipeline("text-classification", model=str(model_dir))
    assert classifier("the film was great and lovely")[0]["label"] == "positive"


def test_accumulation_trains_as_the_whole_batch_would(tmp_path: Path, tiny_bert: Path) -> None:
    # transformers 5 leaves the loss of a model whose forward takes **kwargs undivided by the
    # accumulation steps; BERT's classification loss is a plain mean, so the service must
    # have the Trainer divide it, or 8 x 2 trains with twice the gradients of 16 x 1.
    train = write_rows(tmp_path / "train.csv", sentiment_rows(64))
    runs = {}
    for batch, accumulation in ((16, 1), (8, 2)):
        spec = make_spec(dataset={"validation_split": 0.25},
                         hyperparameters={"epochs": 1, "batch_size": batch,
                                          "gradient_accumulation_steps": accumulation},
                         compute={"length_grouping": False})
        runs[batch] = run_training(spec, data_files(train), str(tiny_bert),
                                   tmp_path / str(batch), events=RecordingSink())

    # Dropout draws its masks per micro-batch, so the two differ a little; unscaled, the
    # accumulated loss is twice the other.
    assert runs[8]["train_loss"] == pytest.approx(runs[16]["train_loss"], rel=1e-2)
    assert runs[8]["eval_loss"] == pytest.approx(runs[16]["eval_loss"], rel=1e-2)


def test_prompt_completion_packs_rows_and_learns_as_padded_rows_do(
        tmp_path: Path, tiny_gpt2: Path) -> None:
    files = data_files(write_rows(tmp_path / "train.csv", prompt_rows(64)),
                       write_rows(tmp_path / "validation.csv", prompt_rows(16, seed=1)))
    runs = {}
    for packing in ("auto", False):
        sink = RecordingSink()
        spec = make_spec("causal-lm", model="tiny-gpt2", hyperparameters={"epochs": 1},
                         dataset={"validation": "uploaded-val", "prompt_column": "prompt",
                                  "completion_column": "completion"},
                         compute={"packing": packing})
        runs[packing] = run_training(spec, files, str(tiny_gpt2), tmp_path / str(packing),
                                     events=sink)
        assert sink.data_of("model_loaded")[0]["compute"]["packing"] is (packing == "auto")

    # Rows kept apart in one padding-free row: the same losses as padded batches.
    assert runs["auto"]["eval_loss"] == pytest.approx(runs[False]["eval_loss"], rel=1e-3)
