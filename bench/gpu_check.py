"""GPU check: training throughput, MFU and peak memory of three reference setups.

    python bench/gpu_check.py [--small] [--steps N] [--json FILE]

1. a bert-base-sized classifier, sequence 128, batch 32, bf16 autocast: samples/s, tokens/s,
   MFU (target: at least 40%);
2. a Llama-style model of about 1.1B parameters (TinyLlama's shape) with LoRA r=16 on every
   linear layer of its blocks, bf16 weights, sequence 1024: tokens/s and peak memory;
3. the same with its base quantized to 4 bits (QLoRA: NF4, double quantization, bf16
   compute), where bitsandbytes is installed.

Built from configs with random weights (throughput does not depend on them), trained with a
plain `Trainer` and the service's telemetry callback (worker/training/telemetry.py). It needs
torch, transformers, peft and accelerate (bitsandbytes for 3), nothing else of this project's
dependencies, and no network: it runs on a bare GPU machine. The figures are the last logging
window's (the first steps pay for kernel selection); the JSON, last on stdout, has them all.

Without CUDA (or with --small) it runs tiny versions of the same setups in fp32, in seconds:
that checks the script, not a machine.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Imports torch and transformers only: no app package, no database.
from worker.training.telemetry import Telemetry

MFU_TARGET = 0.40
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# (hidden, layers, heads, kv heads, intermediate, vocab): TinyLlama 1.1B, and a tiny stand-in.
LLAMA_SHAPES = {"full": (2048, 22, 32, 4, 5632, 32000), "small": (64, 2, 4, 2, 128, 512)}
BERT_SHAPES = {"full": {}, "small": {"hidden_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "intermediate_size": 128,
                                     "vocab_size": 512}}


class RandomTokens(Dataset):
    """Rows of random token ids, all of one length (no padding), with labels for `task`."""

    def __init__(self, rows: int, length: int, vocab: int, task: str) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (rows, length), generator=generator)
        self.labels = (torch.randint(0, 2, (rows,), generator=generator) if task == "classify"
                       else self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": torch.ones_like(self.ids[index]),
                "labels": self.labels[index]}


class LastLog(TrainerCallback):
    """Keeps the last training log, after Telemetry has added its figures to it."""

    def __init__(self) -> None:
        self.logs: dict[str, Any] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.logs = dict(logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true",
                        help="tiny models, few steps (the default without CUDA)")
    parser.add_argument("--steps", type=int, help="training steps per setup")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    small = args.small or not torch.cuda.is_available()
    size = "small" if small else "full"
    steps = args.steps or (6 if small else 40)
    half = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    torch.backends.cuda.matmul.allow_tf32 = True

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "small": small, "steps": steps,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "precision": "bf16" if half else "fp32",
        "versions": {name: module.__version__ for name, module in _versions().items()},
        "setups": {}}
    setups: dict[str, Callable[[Path], tuple[PreTrainedModel, Dataset, int]]] = {
        "bert_classifier": lambda _: _bert(size, half),
        "llama_lora": lambda _: _llama(size, half, quantized=None),
        "llama_qlora_4bit": lambda scratch: _llama(size, half, quantized=scratch),
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        for name, build in setups.items():
            if "qlora" in name and importlib.util.find_spec("bitsandbytes") is None:
                results["setups"][name] = {"skipped": "bitsandbytes is not installed"}
                continue
            results["setups"][name] = _train(build, Path(scratch), steps, half)
            _print(name, results["setups"][name], small)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


def _versions() -> dict[str, Any]:
    import accelerate
    import peft
    import transformers
    return {"torch": torch, "transformers": transformers, "peft": peft,
            "accelerate": accelerate}


def _bert(size: str, half: bool) -> tuple[PreTrainedModel, Dataset, int]:
    config = BertConfig(num_labels=2, attn_implementation="sdpa", **BERT_SHAPES[size])
    length, batch = (32, 8) if size == "small" else (128, 32)
    return BertForSequenceClassification(config), RandomTokens(
        batch * 64, length, config.vocab_size, "classify"), batch


def _llama(size: str, half: bool, quantized: Path | None) -> tuple[PreTrainedModel, Dataset, int]:
    hidden, layers, heads, kv_heads, intermediate, vocab = LLAMA_SHAPES[size]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         intermediate_size=intermediate, vocab_size=vocab,
                         max_position_embeddings=1024, attn_implementation="sdpa")
    dtype = torch.bfloat16 if half else torch.float32
    model = LlamaForCausalLM(config).to(dtype)
    if quantized is not None:  # bitsandbytes quantizes at from_pretrained: save, then load
        folder = quantized / "llama"
        model.save_pretrained(folder)
        del model
        model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=(
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS,
                                             task_type="CAUSAL_LM"))
    length, batch = (64, 2) if size == "small" else (1024, 8)
    return model, RandomTokens(batch * 64, length, vocab, "generate"), batch


def _train(build: Callable[[Path], tuple[PreTrainedModel, Dataset, int]], scratch: Path,
           steps: int, half: bool) -> dict[str, Any]:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, dataset, batch = build(scratch)
    if torch.cuda.is_available():
        model.to("cuda")
    telemetry, last = Telemetry(), LastLog()
    trainer = Trainer(
        model=model, train_dataset=dataset, callbacks=[telemetry, last],
        args=TrainingArguments(
            output_dir=str(scratch / "trainer"), max_steps=steps,
            per_device_train_batch_size=batch, learning_rate=1e-4, bf16=half,
            logging_steps=max(steps // 4, 1), save_strategy="no", report_to="none",
            disable_tqdm=True, dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch"))
    trainer.train()
    summary = telemetry.summary()
    figures = {"parameters": sum(p.numel() for p in model.parameters()),
               "trainable_parameters": sum(p.numel() for p in model.parameters()
                                           if p.requires_grad),
               "batch_size": batch, "sequence_length": len(dataset[0]["input_ids"]),
               "last_window": {name: last.logs.get(name) for name in (
                   "samples_per_second", "tokens_per_second", "mfu", "peak_memory_bytes")},
               "whole_run": summary}
    del trainer, model
    return figures


def _print(name: str, figures: dict[str, Any], small: bool) -> None:
    window = figures["last_window"]
    mfu = window["mfu"]
    print(f"{name} (batch {figures['batch_size']} x {figures['sequence_length']} tokens): "
          f"{window['samples_per_second']} samples/s, {window['tokens_per_second']} "
          f"tokens/s, MFU {mfu if mfu is None else f'{mfu:.1%}'}, peak memory "
          f"{window['peak_memory_bytes'] / 2**30:.2f} GiB; "
          f"{figures['trainable_parameters']:,} of {figures['parameters']:,} parameters train")
    if name == "bert_classifier" and not small and mfu is not None:
        print(f"  MFU target {MFU_TARGET:.0%}: {'met' if mfu >= MFU_TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
