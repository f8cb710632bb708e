"""The sections of the job spec that say how the model trains: hyperparameters, frozen
layers, LoRA, the hardware's compute settings, evaluation and early stopping."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from app.jobs.spec_base import SpecError, Strict, reading_stored

Optimizer = Literal["adamw", "sgd", "adafactor"]
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
EvalStrategy = Literal["no", "steps", "epoch"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Attention = Literal["auto", "sdpa", "eager", "flash_attention_2"]
Quantization = Literal["none", "8bit", "4bit"]
Distributed = Literal["auto", "ddp", "fsdp"]


class Hyperparameters(Strict):
    epochs: float = Field(default=3.0, gt=0, le=1000)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000,
                                  description="Overrides epochs when set")
    learning_rate: float = Field(default=2e-5, gt=0, le=10)
    batch_size: int = Field(default=16, ge=1, le=4096)
    eval_batch_size: int = Field(default=64, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    warmup_steps: int | None = Field(default=None, ge=0, le=10_000_000)
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    lr_scheduler: Scheduler = "linear"
    optimizer: Optimizer = "adamw"
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    multi_label_threshold: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="multi-label classification: a label is predicted when its probability "
                    "is at least this (default 0.5)")
    mlm_probability: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="masked-lm only: the share of tokens masked for prediction (default 0.15)")
    train_on_completion_only: bool | None = Field(
        default=None, description="causal-lm with prompt/completion or chat rows: the loss "
                                  "counts the completion's (the assistant's) tokens only "
                                  "(default true)")
    doc_stride: int | None = Field(
        default=None, ge=1, le=8192,
        description="question-answering: tokens shared by consecutive windows of a long "
                    "context (default max_seq_length // 4)")
    max_answer_length: int | None = Field(
        default=None, ge=1, le=8192,
        description="question-answering: the longest answer predicted, in tokens (default 30)")
    max_target_length: int | None = Field(
        default=None, ge=1, le=8192,
        description="seq2seq: targets are cut to this many tokens (default 128)")
    generation_max_length: int | None = Field(
        default=None, ge=1, le=8192,
        description="seq2seq: tokens generated at evaluation (default max_target_length)")
    num_beams: int | None = Field(
        default=None, ge=1, le=64,
        description="seq2seq: beams of the beam search at evaluation (default 1: greedy)")

    @model_validator(mode="after")
    def _one_warmup(self, info: ValidationInfo) -> Hyperparameters:
        if reading_stored(info):
            return self
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise SpecError("give warmup_steps or warmup_ratio, not both",
                            "hyperparameters.warmup_ratio")
        return self


class Freeze(Strict):
    embeddings: bool = Field(default=False, description="Freeze the embedding layer")
    bottom_layers: int = Field(default=0, ge=0, le=1000,
                               description="Number of lower encoder layers to freeze")
    encoder: bool = Field(default=False,
                          description="Freeze the whole encoder: train the head only")


class Lora(Strict):
    r: int = Field(default=8, ge=1, le=1024, description="Rank of the low-rank update")
    alpha: float = Field(default=16.0, gt=0, le=4096, description="Scale of the update: alpha/r")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128,
                                              pattern=r"^[A-Za-z0-9_.]+$")]] | None = Field(
        default=None, max_length=64,
        description="Names of the layers to adapt; default: every linear layer of the backbone")
    quantization: Quantization = Field(
        default="none",
        description="Load the base model's weights quantized and frozen (QLoRA) with "
                    "bitsandbytes: '8bit' (LLM.int8) or '4bit' (NF4, double quantization, "
                    "bf16 compute); the adapters and the head train in full precision")


class Compute(Strict):
    """How the job runs on the worker's hardware, apart from what it learns. 'auto' values are
    resolved by the worker for its hardware; the job's attempts and events say what they
    became."""

    precision: Precision = Field(
        default="auto",
        description="'auto': bf16 on CUDA GPUs that have it, else fp16 with loss scaling on "
                    "CUDA (and TF32 matmuls where the GPU has them), bf16 autocast on CPUs "
                    "with native bf16 (avx512_bf16 or AMX), else fp32")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass: less memory, "
                                   "about 20% slower")
    attention: Attention = Field(
        default="auto", description="'auto': flash_attention_2 where installed and the model "
                                    "has it on a GPU, else sdpa where the model has it, else "
                                    "eager")
    compile: bool = Field(default=False, description="torch.compile the model")
    gpus: int = Field(
        default=1, ge=1, le=64,
        description="Devices the job trains on, one process (rank) each, started by torchrun: "
                    "data parallel, each rank taking `batch_size` rows a step, so the effective "
                    "batch is batch_size x gpus x gradient_accumulation_steps. On a worker "
                    "without GPUs the ranks are CPU processes (the gloo backend)")
    gpu_type: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$",
        description="The class of worker the job needs, a name the operator gives its workers "
                    "(a100-80gb, h100, cpu); unset: any worker with `gpus` devices")
    distributed: Distributed = Field(
        default="auto", description="How several ranks share the work: 'ddp' (each holds the "
                                    "whole model, gradients are averaged), 'fsdp' (parameters, "
                                    "gradients and optimizer state sharded across the ranks: "
                                    "for models that do not fit on one device); 'auto': ddp")
    length_grouping: Literal["auto"] | bool = Field(
        default="auto", description="Batch rows of similar length together, so that a batch "
                                    "pads less; 'auto': on for tasks whose rows vary in length")
    packing: Literal["auto"] | bool = Field(
        default="auto", description="causal-lm with prompt/completion or chat rows: "
                                    "padding-free packing of rows into one sequence per batch; "
                                    "'auto': on where the model's attention supports it")

    @field_validator("length_grouping", "packing", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        # Said once: the union's own error would name each of its branches.
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError("must be 'auto', true or false")


class Evaluation(Strict):
    strategy: EvalStrategy | None = Field(
        default=None, description="Default: 'epoch' with validation data, else 'no'")
    steps: int | None = Field(default=None, ge=1, le=10_000_000,
                              description="Evaluate every N steps (strategy 'steps'; default 500)")
    metric_for_best_model: str | None = Field(
        default=None, max_length=64,
        description="The evaluation metric that picks the best model; default per task: "
                    "'f1' (classification, tags, QA), 'f1_micro' (multi-label), 'mse' "
                    "(regression), 'chrf' (seq2seq), 'loss' (language models)")
    keep_best_model: bool | None = Field(
        default=None, description="Save the best evaluated model instead of the last; "
                                  "default: on with early_stopping, else off")


class EarlyStopping(Strict):
    patience: int = Field(ge=1, le=1000, description="Evaluations in a row without improvement "
                                                     "after which training stops")
    threshold: float = Field(default=0.0, ge=0.0, le=1e6,
                             description="The least change of the metric that counts as an "
                                         "improvement")
