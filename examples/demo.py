"""The service's main job, end to end, on the embedded defaults (see examples/demo.sh).

Starts `finetune up` (API and worker, SQLite, local storage under ./var), uploads the SST-2
sample, fine-tunes all-MiniLM-L6-v2 with the classic recipe, follows it live, downloads the
model and predicts with `transformers.pipeline`. Sized for a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.client.http import ApiClient
from app.client.output import ProgressLine, job_progress

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO / "examples" / "sst2"
SENTENCES = ["a gorgeous, witty, seductive movie .",
             "the plot is nothing but boilerplate clichés from start to finish .",
             "an utterly charming and hilarious film that reminded me why i love movies .",
             "it 's a bad sign when you 're rooting for the villain to end the movie ."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--train-sentences", type=int, default=6000)
    args = parser.parse_args()
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(args.port)],
                          cwd=REPO)
    try:
        url = f"http://127.0.0.1:{args.port}"
        wait_until_ready(url, up)
        # `finetune up` made a key for this folder's CLI on its first start.
        api_key = (REPO / "var" / "api-key").read_text().strip()
        with ApiClient(url, api_key=api_key) as client:
            return run_job(client, args.train_sentences)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)


def wait_until_ready(url: str, up: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if up.poll() is not None:
            sys.exit("the service did not start; see var/logs/")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    sys.exit("the service was not ready within 2 minutes; see var/logs/")


def run_job(client: ApiClient, train_sentences: int) -> int:
    sample = REPO / "var" / "demo" / "train.tsv"
    sample.parent.mkdir(parents=True, exist_ok=True)
    lines = (SST2 / "train.tsv").read_text().splitlines()
    sample.write_text("\n".join(lines[: train_sentences + 1]) + "\n")
    train = client.upload_dataset(sample, name="sst2-train-sample")
    dev = client.upload_dataset(SST2 / "dev.tsv", name="sst2-dev")
    print(f"uploaded {train['num_rows']} training and {dev['num_rows']} validation sentences")
    job = client.submit_job({
        "task": "text-classification", "model": "sentence-transformers/all-MiniLM-L6-v2",
        "name": "sst2-demo",
        "dataset": {"train": train["id"], "validation": dev["id"],
                    "text_column": "sentence", "label_column": "label"},
        "hyperparameters": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-4,
                            "warmup_ratio": 0.1, "weight_decay": 0.01, "max_seq_length": 64,
                            "seed": 42},
        "evaluation": {"strategy": "epoch"}, "logging_steps": 10})
    print(f"submitted {job['id']}; following it (Ctrl-C stops the demo and the service)")
    line = ProgressLine(plain_interval=10)
    job = client.wait(job["id"], lambda current: line.show(job_progress(current)))
    line.close()
    if job["status"] != "succeeded":
        error = job["error"] or {}
        print(f"the job ended {job['status']}: {error.get('code')}: {error.get('message')}\n"
              f"hint: {error.get('hint')}")
        return 1
    final = job["metrics"]["final"]
    print(f"validation accuracy: {final['eval_accuracy']:.3f} "
          f"(F1 {final['eval_f1']:.3f}) on {dev['num_rows']} sentences")
    archive = REPO / "var" / "storage" / "jobs" / job["id"] / "model.tar.gz"
    print(f"model archive: {archive}  (GET /v1/jobs/{job['id']}/model)")
    folder = client.download_model(job["id"], REPO / "var" / "demo" / job["id"])
    print(f"downloaded and checked: {folder}")
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(folder))
    names = {"0": "negative", "1": "positive"}
    for sentence, prediction in zip(SENTENCES, classifier(SENTENCES), strict=True):
        label = names.get(prediction["label"], prediction["label"])
        print(f"  {label:>8} ({prediction['score']:.2f})  {sentence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
