"""A plain Hugging Face `Trainer` script: the tutorial's way, or tuned with stock settings.

    python bench/plain_trainer.py --padding max_length ...      # the tutorial way: pad to 128
    python bench/plain_trainer.py --padding dynamic --group-by-length --fused-adamw [--bf16] ...

With --dev, the trained model is evaluated on that TSV (accuracy). Prints one JSON line with
its figures.
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--padding", choices=("max_length", "dynamic"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--fused-adamw", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--dev", help="a TSV (label, sentence) to report the accuracy on")
    args = parser.parse_args()

    set_seed(args.seed)
    data = load_dataset("csv", data_files=args.train, delimiter="\t", split="train")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pad_to_max = args.padding == "max_length"

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["sentence"], truncation=True, max_length=128,
                         padding="max_length" if pad_to_max else False)

    data = data.map(tokenize, batched=True, remove_columns=["sentence"])
    data = data.rename_column("label", "labels")
    dev = None
    if args.dev:
        dev = load_dataset("csv", data_files=args.dev, delimiter="\t", split="train")
        dev = dev.map(tokenize, batched=True, remove_columns=["sentence"])
        dev = dev.rename_column("label", "labels")
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=args.out, num_train_epochs=args.epochs,
                               per_device_train_batch_size=args.batch_size,
                               learning_rate=args.learning_rate, seed=args.seed,
                               report_to="none", disable_tqdm=True, save_strategy="no",
                               logging_strategy="no", bf16=args.bf16,
                               # transformers takes bf16 on a CPU only when told it is one.
                               use_cpu=not torch.cuda.is_available(),
                               optim="adamw_torch_fused" if args.fused_adamw else "adamw_torch",
                               train_sampling_strategy=("group_by_length" if args.group_by_length
                                                        else "random")),
        train_dataset=data,
        processing_class=tokenizer,
        data_collator=default_data_collator if pad_to_max else DataCollatorWithPadding(tokenizer),
    )
    train = trainer.train().metrics
    trainer.save_model(args.out)
    accuracy = None
    if dev is not None:
        predicted = trainer.predict(dev)
        accuracy = float(np.mean(np.argmax(predicted.predictions, axis=-1)
                                 == predicted.label_ids))
    print(json.dumps({"padding": args.padding, "train_runtime": train["train_runtime"],
                      "train_samples_per_second": train["train_samples_per_second"],
                      "train_loss": float(np.float64(train["train_loss"])),
                      "dev_accuracy": accuracy,
                      "wall_seconds": time.perf_counter() - STARTED}))


if __name__ == "__main__":
    main()
