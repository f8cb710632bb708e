"""Terminal output of the client: tables, detail blocks, value formats and progress lines."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

Json = dict[str, Any]

MAX_CELL = 48
BAR_WIDTH = 20
# Eval metrics worth a place on the progress line, best first; timings never are.
PREFERRED_EVAL = ("eval_accuracy", "eval_f1", "eval_r2", "eval_pearson", "eval_mse", "eval_loss")
_TIMING_SUFFIXES = ("_runtime", "_per_second")
TRAIN_CURVES = ("loss", "learning_rate", "grad_norm")


def write_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain left-aligned table; long cells are cut so that rows stay on one line."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(header), *(len(row[index]) for row in cells)])
              for index, header in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(line, widths,
                                                                        strict=True)).rstrip()
                     for line in lines)


def details(pairs: Iterable[tuple[str, Any]]) -> str:
    """`key  value` lines with the keys aligned; empty values are left out."""
    shown = [(key, _text(value)) for key, value in pairs if value not in (None, "", [], {})]
    width = max((len(key) for key, _ in shown), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in shown)


def _cell(value: Any) -> str:
    text = _text(value).replace("\n", " ").replace("\t", " ")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return number(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return format(value, ".4g")


def timestamp(iso: str | None) -> str:
    """An API time (UTC, ISO 8601) in the local time zone, to the second."""
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(num_bytes: float) -> str:
    if num_bytes < 1024:
        return f"{num_bytes:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        num_bytes /= 1024
        if num_bytes < 1024:
            break
    return f"{num_bytes:.1f} {unit}"


def duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def latest_eval(metrics: Json) -> tuple[str, float] | None:
    """The most telling of a job's latest eval metrics, as (name, value)."""
    evaluated = {name: value for name, value in (metrics.get("eval") or {}).items()
                 if isinstance(value, int | float) and is_eval_curve(name)}
    for name in (*PREFERRED_EVAL, *sorted(evaluated)):
        if name in evaluated:
            return name, evaluated[name]
    return None


def job_progress(job: Json) -> str:
    """One line: status, bar, step/total, percent, ETA, epoch, loss and an eval metric.

    The most telling parts come first, since a narrow terminal cuts the line's end.
    """
    status, progress = job["status"], job["progress"]
    total = progress.get("total_steps")
    if status == "queued":
        return "queued, waiting for a worker"
    if not total:
        waiting = status in ("running", "cancelling")
        return status + (", loading the data and the model" if waiting else "")
    parts = [status, bar(progress["percent"] / 100), f"{progress['step']}/{total}",
             f"{progress['percent']:.0f}%"]
    if status == "running" and progress.get("eta_seconds") is not None:
        parts.append(f"ETA {duration(progress['eta_seconds'])}")
    if progress.get("epoch") is not None:
        parts.append(f"epoch {progress['epoch']:.2f}")
    loss = (job.get("metrics") or {}).get("train", {}).get("loss")
    if loss is not None:
        parts.append(f"loss {number(loss)}")
    evaluated = latest_eval(job.get("metrics") or {})
    if evaluated is not None:
        parts.append(f"{evaluated[0]} {number(evaluated[1])}")
    return "  ".join(parts)


def download_progress(received: int, total: int | None) -> str:
    if not total:
        return f"downloading  {size(received)}"
    return (f"downloading  {bar(received / total)}  {size(received)} / {size(total)}  "
            f"{100 * received / total:.0f}%")


class ProgressLine:
    """A status line on stderr: redrawn in place on a terminal, occasional lines otherwise.

    Logs and pipes get a line when the caller forces one (a status change, the end) and at
    most one per `plain_interval` seconds in between, so that they stay readable.
    """

    def __init__(self, stream: TextIO | None = None, *, plain_interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.plain_interval = plain_interval
        self.last_text = ""
        self.last_shown = -float("inf")

    def show(self, text: str, *, force: bool = False) -> None:
        if text == self.last_text:
            return
        now = time.monotonic()
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")
        elif force or now - self.last_shown >= self.plain_interval:
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()
        self.last_text, self.last_shown = text, now

    def close(self) -> None:
        """End the line in place, so that what follows starts on a line of its own."""
        if self.live and self.last_text:
            self.stream.write("\n")
            self.stream.flush()
        self.last_text = ""


def metrics_table(series: dict[str, list[Json]]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows with one row per step and one column per metric name."""
    names = sorted(series, key=_metric_order)
    by_step: dict[int, dict[str, Any]] = {}
    for name in names:
        for point in series[name]:
            row = by_step.setdefault(point["step"], {"epoch": point.get("epoch")})
            row[name] = point["value"]
    rows = [[step, row.get("epoch"), *(row.get(name) for name in names)]
            for step, row in sorted(by_step.items())]
    return ["step", "epoch", *names], rows


def _metric_order(name: str) -> tuple[int, int, str]:
    # Training curves first, then evaluation curves, then run summaries and timings.
    if name in TRAIN_CURVES:
        return (0, TRAIN_CURVES.index(name), name)
    if is_eval_curve(name):
        return (1, 0, name)
    return (2, 0, name)


def is_eval_curve(name: str) -> bool:
    return name.startswith("eval_") and not name.endswith(_TIMING_SUFFIXES)
