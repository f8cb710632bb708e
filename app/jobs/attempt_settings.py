"""The memory-bound settings an attempt trains with, and how an out-of-memory attempt's
successor shrinks them.

An attempt records these on its JobAttempt row; the trainer child applies them to the spec.
A shrink halves the per-device batch and doubles the gradient accumulation, so the effective
batch, the optimizer steps and the learning-rate schedule stay as the spec asked; at batch 1
it turns on gradient checkpointing. Each shrink strictly lowers the memory asked for, so the
sequence ends after at most log2(batch_size) + 2 attempts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.spec import JobSpec
from app.models import Job, JobAttempt

OUT_OF_MEMORY = "out_of_memory"


@dataclass(frozen=True)
class AttemptSettings:
    batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool

    @classmethod
    def of_spec(cls, spec: JobSpec) -> AttemptSettings:
        hyper = spec.hyperparameters
        return cls(hyper.batch_size, hyper.gradient_accumulation_steps,
                   spec.compute.gradient_checkpointing)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> AttemptSettings:
        return cls(int(stored["batch_size"]), int(stored["gradient_accumulation_steps"]),
                   bool(stored["gradient_checkpointing"]))

    def stored(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps

    def smaller(self) -> AttemptSettings | None:
        """The next settings after running out of memory with these; None when nothing is
        left to shrink."""
        if self.batch_size > 1:
            # Half the batch where it is even; an odd batch divides by its smallest prime
            # factor, so that batch times accumulation stays exactly the same.
            factor = _smallest_prime_factor(self.batch_size)
            return replace(self, batch_size=self.batch_size // factor,
                           gradient_accumulation_steps=self.gradient_accumulation_steps * factor)
        if not self.gradient_checkpointing:
            return replace(self, gradient_checkpointing=True)
        return None

    def applied_to(self, spec: JobSpec) -> JobSpec:
        """`spec` training with these settings."""
        hyper = spec.hyperparameters.model_copy(update={
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps})
        compute = spec.compute.model_copy(
            update={"gradient_checkpointing": self.gradient_checkpointing})
        return spec.model_copy(update={"hyperparameters": hyper, "compute": compute})

    def describe(self) -> str:
        checkpointing = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return (f"batch_size {self.batch_size} x gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps}{checkpointing}")


def of_attempt(session: Session, job: Job, number: int) -> AttemptSettings:
    """The settings attempt `number` of `job` trained with (the spec's where it recorded none:
    an attempt started before attempts recorded them)."""
    attempt = session.scalar(select(JobAttempt).where(JobAttempt.job_id == job.id,
                                                      JobAttempt.number == number))
    if attempt is None or attempt.settings is None:
        return AttemptSettings.of_spec(JobSpec.from_stored(job.spec, job.spec_version))
    return AttemptSettings.from_stored(attempt.settings)


def for_next_attempt(session: Session, job: Job) -> AttemptSettings:
    """The settings of the attempt that starts now: the previous attempt's (the spec's for
    the first), one shrink smaller when it ran out of memory."""
    settings = of_attempt(session, job, job.attempt)
    previous = session.scalar(select(JobAttempt.outcome).where(
        JobAttempt.job_id == job.id, JobAttempt.number == job.attempt))
    if previous == OUT_OF_MEMORY:
        return settings.smaller() or settings
    return settings


def record_compute(session: Session, job_id: str, number: int, compute: dict[str, Any]) -> None:
    """Add what the trainer resolved for the hardware (precision, attention...) to the
    attempt's settings."""
    attempt = session.scalar(select(JobAttempt).where(JobAttempt.job_id == job_id,
                                                      JobAttempt.number == number))
    if attempt is not None:
        attempt.settings = {**(attempt.settings or {}), "compute": compute}


def shrink_message(before: AttemptSettings, after: AttemptSettings) -> str:
    """What the next attempt changes after an out-of-memory attempt, and why."""
    if after.batch_size != before.batch_size:
        change = (f"halves the per-device batch to {after.batch_size} and raises the gradient "
                  f"accumulation to {after.gradient_accumulation_steps}")
    else:
        change = "turns on gradient checkpointing (the batch is already 1)"
    return (f"Out of memory with {before.describe()}: the next attempt {change}, resuming from "
            f"the last checkpoint; the effective batch stays {after.effective_batch}, and so do "
            "the optimizer steps and the learning-rate schedule")


def exhausted_message(settings: AttemptSettings) -> str:
    return (f"out of memory even with {settings.describe()}: the job does not fit this "
            "worker's memory, and nothing is left to shrink")


def exhausted_hint(spec: JobSpec) -> str:
    """What would fit, for a job that ran out of memory at batch 1 with checkpointing."""
    ways = []
    if spec.lora is None:
        ways.append("LoRA (add a `lora` section: only small adapters train)")
    if spec.lora is None or spec.lora.quantization != "4bit":
        ways.append("a 4-bit base model (`lora.quantization: 4bit`)")
    ways.append("a shorter `hyperparameters.max_seq_length` (now "
                f"{spec.hyperparameters.max_seq_length})")
    ways.append("a worker with a larger GPU, or more memory (FT_TRAINER_MEMORY_BYTES)")
    return ("What would fit: " + "; ".join(ways) + ". POST /v1/jobs/validate (the dry run) "
            "estimates the memory a spec needs before it is queued.")


def _smallest_prime_factor(number: int) -> int:
    factor = 2
    while factor * factor <= number:
        if number % factor == 0:
            return factor
        factor += 1
    return number
