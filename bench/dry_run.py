"""Dry-run benchmark: how long a warm worker takes to answer POST /v1/jobs/validate.

    python bench/dry_run.py [--rows 10000] [--epochs 3] [--train]

Times, in this process as the worker's dry-run process runs them: the warm-up (imports and
the device measurement, paid once when the worker starts), then dry runs of an SST-2 job on
`--rows` rows (the 8,000 sample sentences, repeated as needed) with all-MiniLM-L6-v2: plain,
with LoRA, and with the encoder frozen. Prints each one's wall time and its main figures.

With `--train`, each job is then run for real (run_training, with the telemetry callback):
the estimate is set against the training time measured, and the share of the device's peak
that the run reached on the tokens its batches held is what calibrates the dry run's
MODEL_FLOPS_UTILIZATION.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
VARIANTS = {"plain": {}, "lora": {"lora": {"r": 8}},
            "frozen encoder": {"freeze": {"encoder": True}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--train", action="store_true",
                        help="run each job too, and compare the time estimate with it")
    args = parser.parse_args()

    started = time.perf_counter()
    from app.jobs.spec import JobSpec
    from worker.catalog import resolve_model
    from worker.dry_runs import warm_up
    from worker.training.data import DataFile, DataFiles
    from worker.training.dry_run import dry_run

    warm_up()
    print(f"warm-up (imports, device measurement): {time.perf_counter() - started:.1f} s")
    model = resolve_model(MODEL, REPO / "var" / "models")
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as scratch:
        train = sst2_rows(Path(scratch) / "train.tsv", args.rows)
        files = DataFiles(train=DataFile(train, "tsv"))
        for name, fields in VARIANTS.items():
            spec = JobSpec.model_validate({
                "task": "text-classification", "model": MODEL, **fields,
                "dataset": {"train": "bench", "text_column": "sentence",
                            "validation_split": 0.1},
                "hyperparameters": {"epochs": args.epochs, "batch_size": 32}})
            started = time.perf_counter()
            report = dry_run(spec, files, model)
            elapsed = time.perf_counter() - started
            print(f"\n{name}: {elapsed:.2f} s, valid={report['valid']}, "
                  f"warnings={[w['code'] for w in report['warnings']]}")
            print(f"  rows: {report['dataset']['splits']}, tokens: {report['tokens']['rows']}, "
                  f"truncated: {report['tokens']['truncated_share']:.1%}")
            print(f"  steps: {report['steps']['steps_per_epoch']}/epoch, "
                  f"{report['steps']['total_steps']} in all; parameters: "
                  f"{report['parameters']['trainable']:,} of {report['parameters']['total']:,}")
            print(f"  memory: {report['memory']['total_bytes'] / 2**20:.0f} MiB; time: "
                  f"{report['time']['seconds_per_epoch']:.0f} s/epoch on "
                  f"{report['time']['device_name']}")
            if args.train:
                compare_with_training(spec, files, model, report, Path(scratch) / name)


def compare_with_training(spec: Any, files: Any, model: str, report: dict[str, Any],
                          output_dir: Path) -> None:
    from worker.training.events import PrintSink
    from worker.training.telemetry import Telemetry
    from worker.training.trainer import run_training

    telemetry = Telemetry()
    run_training(spec, files, model, output_dir, events=PrintSink(),
                 callbacks=[telemetry])
    seconds = telemetry.run.seconds  # training steps only, as the estimate counts
    estimate, timing = report["time"]["seconds_total"], report["time"]
    epochs = report["steps"]["total_steps"] / report["steps"]["steps_per_epoch"]
    reached = timing["flops_per_epoch"] * epochs / seconds / timing["peak_flops_per_second"]
    print(f"  trained: {seconds:.1f} s of training steps against {estimate:.1f} s estimated "
          f"({estimate / seconds:.2f}x); {telemetry.summary().get('samples_per_second')} "
          f"samples/s; utilization reached {reached:.3f} of "
          f"{timing['peak_flops_per_second'] / 1e9:.1f} GFLOP/s (assumed "
          f"{timing['utilization_assumed']})")


def sst2_rows(path: Path, rows: int) -> Path:
    header, *lines = (REPO / "examples" / "sst2" / "train.tsv").read_text().splitlines()
    repeated = (lines * (rows // len(lines) + 1))[:rows]
    path.write_text("\n".join([header, *repeated]) + "\n")
    return path


if __name__ == "__main__":
    main()
