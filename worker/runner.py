"""Entry point of the trainer child.

    python -m worker.runner --job-id JOB_ID --attempt N   # spawned by the worker for a job
    python -m worker.runner --standby                     # imports first, then reads both
    python -m worker.runner --spec SPEC --out DIR    # standalone, no service at all

In job mode the outcome goes to `outcome.json` in the job's work folder, which the
supervising worker task turns into the job's final state; the exit status alone tells a
crash from a clean failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from worker.training.distributed import is_distributed, is_main_rank

OUTCOME_FILE = "outcome.json"
# torch's CPU allocator raises a plain RuntimeError with this when the host has no memory
# left for a tensor (a strict overcommit policy, an address-space limit).
_CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"
EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_INTERRUPTED = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-id", help="run this job of the service's database")
    parser.add_argument("--attempt", type=int,
                        help="with --job-id: the attempt this run is, as the worker claimed it")
    parser.add_argument("--spec", type=Path, help="a job spec (JSON) whose dataset entries "
                                                  "are file paths")
    parser.add_argument("--out", type=Path, help="output folder (standalone mode)")
    parser.add_argument("--standby", action="store_true",
                        help="import the training libraries, then run the job whose id and "
                             "attempt arrive on stdin (the worker keeps one ready between jobs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.standby:
        return run_standby()
    if args.job_id and args.attempt is not None:
        return run_job(args.job_id, args.attempt)
    if args.spec and args.out:
        return run_standalone(args.spec, args.out)
    parser.error("give --job-id and --attempt, or --spec and --out")
    return 2


def run_standalone(spec_path: Path, out: Path) -> int:
    from app.config import get_settings
    from app.jobs.spec import JobSpec
    from app.storage.local import is_disk_full
    from worker.catalog import resolve_model
    from worker.training.data import DataFile, DataFiles, format_from_suffix
    from worker.training.errors import TrainingError
    from worker.training.events import PrintSink, SilentSink
    from worker.training.trainer import run_training

    spec = JobSpec.model_validate_json(spec_path.read_text()).resolved()
    files = {role: DataFile(Path(path), format_from_suffix(Path(path)))
             for role, path in spec.dataset.uploaded_ids().items()}
    try:
        metrics = run_training(spec, DataFiles(**files),
                               resolve_model(spec.model, get_settings().models_dir), out,
                               events=PrintSink() if is_main_rank() else SilentSink())
    except Exception as exc:
        failure = (exc if isinstance(exc, TrainingError)
                   else _disk_full(out, exc) if is_disk_full(exc, out) else None)
        if failure is None:
            raise
        print(json.dumps({"error": {"code": failure.code, "message": failure.message,
                                    "hint": failure.hint}}), file=sys.stderr)
        return EXIT_FAILED
    if is_main_rank():
        print(json.dumps(metrics, indent=2))
    return 0


def run_standby() -> int:
    """Pay the ~10 s of imports before the job exists, so that a job starts training at once."""
    import worker.checkpoints  # noqa: F401
    import worker.reporting  # noqa: F401
    import worker.training.trainer  # noqa: F401
    from app.config import get_settings
    from app.storage import LocalStorage
    from worker.training.hardware import detect, peak_flops
    from worker.training.tasks import recipes

    recipes()  # the task modules and their metric libraries (sacrebleu, rouge-score, seqeval)
    hardware = detect()
    if hardware.device == "cpu":  # the matmul peak telemetry measures, for `auto`'s precision
        peak_flops(hardware, "bf16" if hardware.native_bf16 else "fp32")

    assignment = sys.stdin.readline().split()
    if not assignment:  # the worker is shutting down: no job will come
        return 0
    job_id, attempt = assignment[0], int(assignment[1])
    log_path = LocalStorage(get_settings().storage_dir).job_log_path(job_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), sys.stdout.fileno())
        os.dup2(log.fileno(), sys.stderr.fileno())
    return run_job(job_id, attempt)


def run_job(job_id: str, attempt: int) -> NoReturn:
    from app.config import get_settings
    from app.db import make_engine, make_session_factory
    from app.processes import die_with_parent
    from app.storage import make_storage

    if is_distributed():
        # torchrun starts each rank in a session of its own, out of the reach of a stop sent
        # to torchrun's group: a rank must not outlive it.
        die_with_parent(signal.SIGKILL)()
    settings = get_settings()
    storage = make_storage(settings)
    work_dir = storage.job_work_dir(job_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    if is_main_rank():
        (work_dir / OUTCOME_FILE).unlink(missing_ok=True)
    engine = make_engine(settings.database_url)
    try:
        outcome, code = _train_job(job_id, attempt, settings, make_session_factory(engine),
                                   storage)
    finally:
        engine.dispose()
    if outcome is not None and is_main_rank():
        _write_outcome(work_dir, outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is saved and reported; skip the interpreter's slow teardown of torch.
    os._exit(code)


def _train_job(job_id: str, attempt: int, settings: Any, session_factory: Any,
               storage: Any) -> tuple[dict[str, Any] | None, int]:
    """The attempt's outcome and exit status; no outcome when a rank of a multi-device job
    broke (the supervisor then retries the attempt, as for a crash)."""
    from app.storage.local import is_disk_full
    from worker.catalog import resolve_model
    from worker.checkpoints import CheckpointKeeper, JobInterrupted, mark_resumed, resume_point
    from worker.reporting import DatabaseReporter
    from worker.training.errors import OutOfMemory, TrainingError
    from worker.training.events import SilentSink
    from worker.training.trainer import run_training

    work_dir = storage.job_work_dir(job_id)
    # Every rank trains; the main one reports.
    reporter = (DatabaseReporter(session_factory, job_id, attempt,
                                 settings.progress_interval_seconds) if is_main_rank() else None)
    try:
        spec, files = _load_job(job_id, attempt, session_factory, storage)
        keeper = CheckpointKeeper(session_factory, job_id, storage,
                                  None if spec.checkpoint_steps else settings.checkpoint_seconds)
        # A deploy's or a timeout's SIGTERM: save a checkpoint at the end of this step, stop.
        signal.signal(signal.SIGTERM, lambda *_: keeper.request_stop())
        if is_main_rank():
            shutil.rmtree(work_dir / "trainer", ignore_errors=True)  # earlier partials
        events = reporter or SilentSink()
        resume = resume_point(session_factory, job_id, storage, events)
        if resume is not None and reporter is not None:
            mark_resumed(session_factory, job_id, resume[1])
            reporter.event("resumed", f"Resumed from step {resume[1]}", {"step": resume[1]})
        metrics = run_training(spec, files, resolve_model(spec.model, settings.models_dir),
                               work_dir, events=events,
                               callbacks=[reporter, keeper] if reporter else [keeper],
                               resume_from=resume[0] if resume else None)
        return {"status": "succeeded", "metrics": metrics}, 0
    except BaseException as exc:  # the child reports every ending, then exits
        if reporter is not None and reporter.cancel_requested:
            return {"status": "cancelled"}, EXIT_CANCELLED
        if isinstance(exc, JobInterrupted):
            return {"status": "interrupted"}, EXIT_INTERRUPTED
        if not isinstance(exc, TrainingError) and is_disk_full(exc, work_dir):
            exc = _disk_full(work_dir, exc)
        if is_distributed() and not isinstance(exc, TrainingError):
            # A rank that died takes the others' collectives down with it.
            traceback.print_exc()
            return None, EXIT_FAILED
        if isinstance(exc, MemoryError) or _CPU_ALLOCATION_FAILED in str(exc):
            exc = OutOfMemory(f"the trainer ran out of host memory ({type(exc).__name__}: "
                              f"{str(exc)[:300]})")
        if not isinstance(exc, TrainingError):
            traceback.print_exc()
            exc = TrainingError(f"training failed: {type(exc).__name__}: {exc}")
        return {"status": "failed", "code": exc.code, "message": exc.message,
                "hint": exc.hint}, EXIT_FAILED


def _load_job(job_id: str, attempt: int, session_factory: Any,
              storage: Any) -> tuple[Any, Any]:
    """The job's spec, with the settings its attempt trains with, and the files of its
    datasets."""
    from app.jobs import attempt_settings
    from app.jobs.spec import JobSpec
    from app.models import Job
    from worker.training.errors import TrainingError

    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise TrainingError(f"job {job_id} is not in the database")
        spec = JobSpec.from_stored(job.spec, job.spec_version)
        spec = attempt_settings.of_attempt(session, job, attempt).applied_to(spec)
        return spec, data_files(session, spec, storage)


def data_files(session: Any, spec: Any, storage: Any) -> Any:
    """The stored files of the datasets `spec` reads, as DataFiles on this machine's disk."""
    from app.models import Dataset
    from app.storage import StorageUnavailable
    from worker.checkpoints import StoreUnreachable
    from worker.training.data import DataFile, DataFiles
    from worker.training.errors import TrainingError

    files = {}
    for role, dataset_id in spec.dataset.uploaded_ids().items():
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise TrainingError(f"dataset {dataset_id} ({role}) no longer exists",
                                hint="Upload the data again and submit a new job.")
        try:
            path = storage.dataset_file(dataset.id, dataset.format)
        except StorageUnavailable as exc:
            raise StoreUnreachable(f"dataset {dataset_id} ({role}) could not be fetched: "
                                   f"{exc.message}") from None
        files[role] = DataFile(path, dataset.format)
    return DataFiles(**files)


def _disk_full(out: Path, exc: BaseException) -> Any:
    """The failure of a write that found the disk of the output folder `out` full, once the
    main rank has deleted what the write left there: every `*.partial` (the name this service
    writes a file or folder under before renaming it: the model folder being saved, the best
    weights) and each checkpoint the Trainer had not finished. Complete checkpoints stay, so
    the next attempt resumes from the last one; the outcome file then has room too."""
    from app.storage.local import disk_space
    from worker.training.errors import DiskFull

    unfinished = [path for path in (out / "trainer").glob("checkpoint-*") if not _finished(path)]
    partial = unfinished + sorted(out.rglob("*.partial"))
    if is_main_rank():
        for path in partial:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    what = (f"while the trainer was saving; its partial files were deleted "
            f"({', '.join(path.name for path in partial)})" if partial
            else f"during training ({str(exc)[:200]})")
    return DiskFull(f"the disk of {out} filled up {what}; {disk_space(out)} now")


def _finished(checkpoint: Path) -> bool:
    from transformers.trainer import TRAINER_STATE_NAME

    # The Trainer writes a checkpoint's state last.
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def _write_outcome(work_dir: Path, outcome: dict[str, Any]) -> None:
    partial = work_dir / (OUTCOME_FILE + ".partial")
    partial.write_text(json.dumps(outcome, default=str))
    os.replace(partial, work_dir / OUTCOME_FILE)


if __name__ == "__main__":
    sys.exit(main())
