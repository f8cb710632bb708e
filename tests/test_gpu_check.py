"""bench/gpu_check.py, run as it runs on a GPU machine (one command, a subprocess), here in
its small configuration on the CPU: every setup trains and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_small_on_a_cpu(tmp_path: Path) -> None:
    written = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--small", "--steps", "4",
         "--json", str(written)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed == json.loads(written.read_text())
    assert printed["small"] is True and printed["steps"] == 4
    assert printed["device"] == "cpu" and printed["precision"] == "fp32"
    setups = printed["setups"]
    assert list(setups) == ["bert_classifier", "llama_lora", "llama_qlora_4bit"]
    for name, figures in setups.items():
        if "skipped" in figures:  # QLoRA without bitsandbytes
            assert name == "llama_qlora_4bit"
            continue
        window = figures["last_window"]
        assert window["samples_per_second"] > 0 and window["tokens_per_second"] > 0
        assert 0 < window["mfu"] < 1 and window["peak_memory_bytes"] > 0
        assert figures["whole_run"]["device"] == "cpu"
        assert f"{name} (batch {figures['batch_size']}" in done.stdout
    assert setups["bert_classifier"]["trainable_parameters"] == (
        setups["bert_classifier"]["parameters"])
    lora = setups["llama_lora"]
    assert 0 < lora["trainable_parameters"] < lora["parameters"]
