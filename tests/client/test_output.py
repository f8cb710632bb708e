"""Tables, the job progress line and its two display modes, without a service."""

from __future__ import annotations

import io
from typing import Any

from app.client import output


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def running_job(**progress: Any) -> dict[str, Any]:
    return {"id": "job_1", "status": "running",
            "progress": {"step": 3, "total_steps": 12, "epoch": 0.5, "percent": 25.0,
                         "eta_seconds": 65.0, **progress},
            "metrics": {"train": {"loss": 0.69314, "learning_rate": 2e-5},
                        "eval": {"eval_loss": 0.7, "eval_accuracy": 0.8125,
                                 "eval_runtime": 0.3}}}


def test_the_progress_line_has_step_percent_eta_epoch_loss_and_eval() -> None:
    line = output.job_progress(running_job())
    assert line == ("running  [#####---------------]  3/12  25%  ETA 1m05s  epoch 0.50  "
                    "loss 0.6931  eval_accuracy 0.8125")


def test_the_progress_line_before_training_and_after_a_failure() -> None:
    queued = {**running_job(), "status": "queued"}
    assert output.job_progress(queued) == "queued, waiting for a worker"
    loading = running_job(step=0, total_steps=None, epoch=None, percent=0.0, eta_seconds=None)
    assert output.job_progress(loading) == "running, loading the data and the model"
    assert output.job_progress({**loading, "status": "failed"}) == "failed"


def test_on_a_terminal_the_line_is_redrawn_in_place() -> None:
    stream = Terminal()
    line = output.ProgressLine(stream)
    line.show("one")
    line.show("two")
    line.close()
    assert stream.getvalue() == "\rone\x1b[K\rtwo\x1b[K\n"


def test_elsewhere_lines_are_printed_on_changes_that_matter_and_rarely_otherwise() -> None:
    stream = io.StringIO()
    line = output.ProgressLine(stream, plain_interval=3600)
    line.show("queued", force=True)
    line.show("step 1")
    line.show("step 2")
    line.show("succeeded", force=True)
    line.show("succeeded", force=True)
    line.close()
    assert stream.getvalue() == "queued\nsucceeded\n"


def test_metrics_table_has_one_row_per_step_and_one_column_per_metric() -> None:
    series = {
        "eval_accuracy": [{"step": 4, "epoch": 1.0, "value": 0.75}],
        "learning_rate": [{"step": 2, "epoch": 0.5, "value": 1e-5},
                          {"step": 4, "epoch": 1.0, "value": 5e-6}],
        "loss": [{"step": 2, "epoch": 0.5, "value": 0.7}, {"step": 4, "epoch": 1.0, "value": 0.6}],
        "train_runtime": [{"step": 4, "epoch": 1.0, "value": 2.5}],
    }
    headers, rows = output.metrics_table(series)
    assert headers == ["step", "epoch", "loss", "learning_rate", "eval_accuracy", "train_runtime"]
    assert rows == [[2, 0.5, 0.7, 1e-5, None, None], [4, 1.0, 0.6, 5e-6, 0.75, 2.5]]
    assert output.table(headers, rows).splitlines() == [
        "step  epoch  loss  learning_rate  eval_accuracy  train_runtime",
        "2     0.5    0.7   1e-05",
        "4     1      0.6   5e-06          0.75           2.5",
    ]


def test_long_cells_are_cut_and_values_formatted() -> None:
    text = output.table(["text"], [["word " * 40]])
    assert len(text.splitlines()[1]) == output.MAX_CELL
    assert text.endswith("…")
    assert output.size(512) == "512 B" and output.size(3 * 1024**2) == "3.0 MiB"
    assert output.duration(3725) == "1h02m" and output.duration(9.6) == "10s"
    assert output.timestamp(None) == ""
