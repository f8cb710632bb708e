"""The best evaluated model, and early stopping when the metric stops improving.

A TrainerCallback rather than `load_best_model_at_end`: that option ties checkpoints to
evaluations, and the service checkpoints on its own clock. Each improvement saves the model's
weights (safetensors) beside a record of every evaluation; after a crash, the evaluations past
the resume point are forgotten and simply happen again, so the choice survives attempts.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from transformers import (
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from app.jobs.spec import EarlyStopping
from app.jobs.tasks.declaration import greater_is_better
from worker.training.distributed import (
    full_state_dict,
    is_main_rank,
    is_sharded,
    load_full_state_dict,
    wait_for_all_ranks,
)
from worker.training.events import EventSink

_WEIGHTS = "model.safetensors"
_RECORD = "evaluations.json"


@dataclass
class _Evaluation:
    step: int
    epoch: float | None
    value: float | None
    metrics: dict[str, float]


class BestModelKeeper(TrainerCallback):
    def __init__(self, metric: str, early_stopping: EarlyStopping | None, folder: Path,
                 events: EventSink) -> None:
        self.metric = metric
        self.key = f"eval_{metric}"
        self.greater_is_better = greater_is_better(metric)
        self.early_stopping = early_stopping
        self.folder = folder
        self.events = events
        self.evaluations: list[_Evaluation] = []
        self.stopped_early = False

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        self.evaluations = self._load(resumed_at=state.global_step)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None,
                    model: PreTrainedModel | None = None, **kwargs: Any) -> None:
        value = (metrics or {}).get(self.key)
        finite = value if isinstance(value, int | float) and math.isfinite(value) else None
        best = self.best
        self.evaluations.append(_Evaluation(
            state.global_step, state.epoch, finite,
            {name: number for name, number in (metrics or {}).items()
             if name.startswith("eval_") and isinstance(number, int | float)
             and math.isfinite(number)}))
        if finite is not None and self._improves(finite, best) and model is not None:
            self._save_weights(model)
        if is_main_rank():
            self._store()
        wait_for_all_ranks()
        waited = self.evaluations_without_improvement
        if self.early_stopping is not None and waited >= self.early_stopping.patience:
            control.should_training_stop = True
            self.stopped_early = True
            best = self.best
            self.events.event(
                "early_stopped",
                f"stopped early at step {state.global_step}: {self.key} did not improve by "
                f"more than {self.early_stopping.threshold} in {waited} evaluations; the best "
                f"was {self._shown(best)}",
                {"step": state.global_step, "metric": self.key, "patience": waited,
                 "threshold": self.early_stopping.threshold,
                 "best_step": best.step if best else None,
                 "best_value": best.value if best else None})

    @property
    def best(self) -> _Evaluation | None:
        """The last evaluation that improved on all before it: the weights saved last."""
        best: _Evaluation | None = None
        for evaluation in self.evaluations:
            if evaluation.value is not None and self._improves(evaluation.value, best):
                best = evaluation
        return best

    @property
    def evaluations_without_improvement(self) -> int:
        best = self.best
        return len(self.evaluations) - (self.evaluations.index(best) + 1 if best else 0)

    def restore_best(self, model: PreTrainedModel) -> dict[str, Any] | None:
        """Put the best weights into `model`; what was chosen, or None if nothing was."""
        best = self.best
        if best is None or not (self.folder / _WEIGHTS).is_file():
            return None
        if is_sharded(model):  # the main rank reads the weights; each rank takes its shards
            load_full_state_dict(model, load_file(str(self.folder / _WEIGHTS))
                                 if is_main_rank() else {})
        else:
            model.load_state_dict(load_file(str(self.folder / _WEIGHTS)), strict=False)
        self.events.event("best_model", f"kept the model of step {best.step}: "
                                        f"{self._shown(best)}",
                          {"step": best.step, "metric": self.key, "value": best.value})
        return {"step": best.step, "epoch": best.epoch, "metric": self.key,
                "value": best.value, "metrics": best.metrics,
                "stopped_early": self.stopped_early}

    def _improves(self, value: float, best: _Evaluation | None) -> bool:
        if best is None or best.value is None:
            return True
        margin = self.early_stopping.threshold if self.early_stopping else 0.0
        change = value - best.value if self.greater_is_better else best.value - value
        return change > margin

    def _shown(self, evaluation: _Evaluation | None) -> str:
        if evaluation is None:
            return "none"
        return f"{self.key} = {evaluation.value:.4g} at step {evaluation.step}"

    def _save_weights(self, model: PreTrainedModel) -> None:
        """On every rank: a sharded model's weights are gathered from all of them. The ranks
        hold the same weights otherwise, and the main one writes them."""
        # Only what trains changes between evaluations; a quantized base's full state would
        # also carry bitsandbytes' quantization state, which a strict load refuses.
        trained = {name for name, parameter in model.named_parameters()
                   if parameter.requires_grad}
        weights = (full_state_dict(model) if is_sharded(model)
                   else dict(model.named_parameters()))
        if not is_main_rank():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f"{_WEIGHTS}.partial"
        save_file({name: tensor.detach().contiguous() for name, tensor in weights.items()
                   if name in trained}, str(partial))
        partial.replace(self.folder / _WEIGHTS)

    def _store(self) -> None:
        partial = self.folder / f"{_RECORD}.partial"
        self.folder.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps([asdict(e) for e in self.evaluations]))
        partial.replace(self.folder / _RECORD)

    def _load(self, resumed_at: int) -> list[_Evaluation]:
        """An earlier attempt's evaluations, up to the point this attempt resumes from.

        Later ones happen again, identically (the resume is exact), so a best model saved
        after the resume point is chosen again when its evaluation comes round.
        """
        path = self.folder / _RECORD
        if resumed_at == 0 or not path.is_file():
            shutil.rmtree(self.folder, ignore_errors=True)
            return []
        return [_Evaluation(**stored) for stored in json.loads(path.read_text())
                if stored["step"] <= resumed_at]
