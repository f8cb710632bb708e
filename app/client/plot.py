"""A PNG of a job's curves: the training loss, and the evaluation metrics beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.client.output import is_eval_curve


class NothingToPlot(Exception):
    """The job has logged neither a training loss nor an evaluation yet."""


def plot_metrics(series: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    # The Agg canvas renders without a display and without pyplot's global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    loss = series.get("loss", [])
    eval_curves = {name: points for name, points in sorted(series.items())
                   if is_eval_curve(name) and points}
    if not loss and not eval_curves:
        raise NothingToPlot("nothing to plot: the job has logged no training loss or "
                            "evaluation yet")
    panels = int(bool(loss)) + int(bool(eval_curves))
    figure = Figure(figsize=(6 * panels, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = iter(figure.subplots(1, panels, squeeze=False)[0])
    if loss:
        train = next(axes)
        train.plot([p["step"] for p in loss], [p["value"] for p in loss], label="loss")
        train.set_title("training loss")
        train.set_xlabel("step")
        train.grid(alpha=0.3)
    if eval_curves:
        evaluation = next(axes)
        for name, points in eval_curves.items():
            evaluation.plot([p["step"] for p in points], [p["value"] for p in points],
                            marker="o", label=name.removeprefix("eval_"))
        evaluation.set_title("evaluation")
        evaluation.set_xlabel("step")
        evaluation.grid(alpha=0.3)
        evaluation.legend()
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
