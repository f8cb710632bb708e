from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import DryRun
from app.workers.schemas import WaitingFor


class Problem(BaseModel):
    code: str
    message: str
    hint: str | None = None


class DryRunReport(BaseModel):
    """What the worker found; a section is missing when an error stopped it before there."""

    model_config = ConfigDict(extra="allow")

    valid: bool = Field(description="No errors: submitted as it is, the job would start")
    errors: list[Problem] = Field(description="What would fail the job, with the code the "
                                              "job would fail with")
    warnings: list[Problem] = Field(description="What would let the job run, but badly")
    spec: dict[str, Any] = Field(description="The spec with every default filled in")
    dataset: dict[str, Any] | None = Field(
        default=None, description="Rows read, dropped and usable per file; rows per split; "
                                  "label distribution; columns needed and found")
    tokens: dict[str, Any] | None = Field(
        default=None, description="Token lengths on a sample (mean, p95, max) and the share "
                                  "of rows longer than max_seq_length")
    steps: dict[str, Any] | None = Field(default=None,
                                         description="Steps per epoch and in total")
    parameters: dict[str, Any] | None = Field(
        default=None, description="Total and trainable parameters, with the freeze or LoRA")
    memory: dict[str, Any] | None = Field(
        default=None, description="Estimated training memory in bytes: weights, gradients, "
                                  "optimizer state, activations")
    time: dict[str, Any] | None = Field(
        default=None, description="Estimated seconds per epoch and in total on the worker's "
                                  "device")


class DryRunOut(BaseModel):
    id: str
    object: Literal["dry_run"] = "dry_run"
    status: Literal["pending", "running", "done"] = Field(
        description="done: `report` is there; otherwise poll `url`")
    url: str = Field(description="Where to poll the dry run")
    report: DryRunReport | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_dry_run(cls, dry_run: DryRun, unserved: WaitingFor | None = None) -> DryRunOut:
        """`unserved`: what the job would wait for, as the registry stands now; a warning."""
        report = DryRunReport.model_validate(dry_run.result) if dry_run.result else None
        if report is not None and unserved is not None:
            report.warnings.append(Problem(
                code="no_worker_fits", message=f"the job would wait in the queue: "
                                               f"{unserved.reason}",
                hint="Start a worker that offers it (FT_WORKER_GPU_TYPE, FT_WORKER_GPUS), or "
                     "ask for a gpu_type and a number of gpus that a worker offers."))
        return cls(id=dry_run.id, status=dry_run.status,  # type: ignore[arg-type]
                   url=f"/v1/dry-runs/{dry_run.id}", report=report,
                   created_at=dry_run.created_at, updated_at=dry_run.updated_at)
