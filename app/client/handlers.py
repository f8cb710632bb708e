"""What each client command does: call the API through ApiClient, print the answer.

Exit statuses: 0 done, 1 the service refused or the job failed, 2 a usage or spec-file
error, 3 the service is unreachable, 130 the job was cancelled or waiting was interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.api_key_file import DEFAULT_API_KEY_FILE
from app.client import DEFAULT_URL, output
from app.client.http import (
    TERMINAL_STATUSES,
    ApiClient,
    ApiError,
    DownloadError,
    ServiceUnreachable,
    StreamRefused,
)
from app.client.plot import NothingToPlot, plot_metrics
from app.client.spec import SpecFileError, apply_overrides, load_spec
from app.network import is_loopback

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_CANCELLED = 130
FOLLOW_POLL_SECONDS = 1.0

Json = dict[str, Any]
Command = Callable[[ApiClient, argparse.Namespace], int]


def run(command: Command, args: argparse.Namespace) -> int:
    """Run `command` with a client for the chosen URL; every known failure is one message."""
    url = args.url or os.environ.get("FT_URL") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        return _fail(f"the service URL must start with http:// or https://, got {url!r}",
                     EXIT_USAGE)
    try:
        with ApiClient(url, api_key=_api_key(url)) as client:
            return command(client, args)
    except ApiError as exc:
        where = f" (param: {exc.param})" if exc.param else ""
        hint = ("; set FT_API_KEY to a key of your project (an admin makes one with `finetune "
                "keys create`), or run where `finetune up` stored its key"
                if exc.status == 401 else "")
        return _fail(f"{exc.code}: {exc.message}{where}{hint}", EXIT_FAILED)
    except ServiceUnreachable as exc:
        reason = f" ({exc.reason})" if exc.reason else ""
        return _fail(f"cannot reach the fine-tuning service at {exc.url}{reason}; start it with "
                     "`finetune up`, or point --url or FT_URL at a running service",
                     EXIT_UNREACHABLE)
    except SpecFileError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (DownloadError, NothingToPlot) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_CANCELLED)
    except BrokenPipeError:
        # The reader of stdout left (`| head`): stop quietly, and keep Python's exit-time flush
        # from failing on the closed pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        # A local file that cannot be read or written: a dataset, a plot, a download folder.
        return _fail(str(exc), EXIT_FAILED)


def _api_key(url: str) -> str | None:
    """FT_API_KEY, else the key file that `finetune up` wrote, else none.

    There is no command-line option for it on purpose: arguments are visible to every user
    of the machine in the process list. The file's key is the local service's, so it is sent
    to that service only, never to whatever --url names.
    """
    if key := os.environ.get("FT_API_KEY", "").strip():
        return key
    if not is_loopback(urlsplit(url).hostname):
        return None
    key_file = Path(os.environ.get("FT_API_KEY_FILE") or DEFAULT_API_KEY_FILE)
    try:
        return key_file.read_text().strip() or None
    except OSError:
        return None


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


# Datasets


def upload_dataset(client: ApiClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"no such file: {path}", EXIT_USAGE)
    dataset = client.upload_dataset(path, name=args.name, format=args.format,
                                    layout=args.layout)
    if args.json:
        output.write_json(dataset)
    else:
        print(_dataset_details(dataset))
    return EXIT_OK


def list_datasets(client: ApiClient, args: argparse.Namespace) -> int:
    page = client.list_datasets(limit=args.limit)
    if args.json:
        output.write_json(page)
        return EXIT_OK
    print(output.table(
        ["id", "name", "layout", "rows", "size", "created"],
        [[d["id"], d["name"], d["layout"], d["num_rows"], output.size(d["size_bytes"]),
          output.timestamp(d["created_at"])] for d in page["data"]]))
    _more_hint(page)
    return EXIT_OK


def show_dataset(client: ApiClient, args: argparse.Namespace) -> int:
    dataset = client.get_dataset(args.dataset_id)
    preview = client.preview(args.dataset_id, limit=args.rows)
    if args.json:
        output.write_json({**dataset, "preview": preview})
        return EXIT_OK
    print(_dataset_details(dataset))
    names = [column["name"] for column in preview["columns"]]
    print(f"\nfirst {len(preview['rows'])} rows:")
    print(output.table(names, [[row.get(name) for name in names] for row in preview["rows"]]))
    return EXIT_OK


def _dataset_details(dataset: Json) -> str:
    columns = ", ".join(f"{c['name']} ({c['type']})" for c in dataset["columns"])
    fits = "; ".join(
        task + (" with " + ", ".join(f"{name}={value}" for name, value in fields.items())
                if fields else "")
        for task, fields in dataset["fits"].items()) or "no task under the default columns"
    uploaded = (f"{dataset['format']} (uploaded as {dataset['source_format']})"
                if dataset["source_format"] != dataset["format"] else dataset["format"])
    return output.details([
        ("id", dataset["id"]), ("name", dataset["name"]), ("format", uploaded),
        ("layout", dataset["layout"]), ("fits", fits),
        ("file", dataset.get("filename")), ("rows", dataset["num_rows"]),
        ("size", output.size(dataset["size_bytes"])), ("sha256", dataset["sha256"]),
        ("columns", columns), ("created", output.timestamp(dataset["created_at"]))])


# Jobs


def submit(client: ApiClient, args: argparse.Namespace) -> int:
    spec = apply_overrides(load_spec(Path(args.spec)), model=args.model, epochs=args.epochs,
                           name=args.name, assignments=args.assignments)
    job = client.submit_job(spec)
    if not args.wait:
        if args.json:
            output.write_json(job)
        else:
            print(job["id"])
        return EXIT_OK
    # The id first, so that it is known even if waiting is interrupted.
    print(job["id"], file=sys.stderr if args.json else sys.stdout, flush=True)
    try:
        final = follow(client, job["id"])
    except KeyboardInterrupt:
        return _fail(f"stopped waiting; job {job['id']} goes on (`finetune cancel "
                     f"{job['id']}` stops it)", EXIT_CANCELLED)
    if args.json:
        output.write_json(final)
    elif final["status"] == "succeeded":
        print(f"{final['id']} succeeded")
        final_metrics = final["metrics"].get("final") or {}
        print(output.details((name, value) for name, value in final_metrics.items()
                             if isinstance(value, int | float)))
    return _outcome(final)


def follow(client: ApiClient, job_id: str) -> Json:
    """Wait for the job with a progress line on stderr; answer the final job."""
    line = output.ProgressLine()
    last_status = ""

    def update(job: Json) -> None:
        nonlocal last_status
        changed = job["status"] != last_status
        last_status = job["status"]
        line.show(output.job_progress(job), force=changed)

    try:
        return client.wait(job_id, update)
    finally:
        line.close()


def _outcome(job: Json) -> int:
    if job["status"] == "succeeded":
        return EXIT_OK
    if job["status"] == "cancelled":
        print(f"job {job['id']} was cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    error = job.get("error") or {}
    print(f"error: job {job['id']} failed: {error.get('code', 'unknown')}: "
          f"{error.get('message', '')}", file=sys.stderr)
    if error.get("hint"):
        print(f"hint: {error['hint']}", file=sys.stderr)
    return EXIT_FAILED


def list_jobs(client: ApiClient, args: argparse.Namespace) -> int:
    page = client.list_jobs(status=args.status, limit=args.limit)
    if args.json:
        output.write_json(page)
        return EXIT_OK
    print(output.table(
        ["id", "name", "status", "progress", "model", "created"],
        [[j["id"], j["name"], j["status"], f"{j['progress']['percent']:.0f}%",
          j["spec"].get("model"), output.timestamp(j["created_at"])] for j in page["data"]]))
    _more_hint(page)
    return EXIT_OK


def show_job(client: ApiClient, args: argparse.Namespace) -> int:
    job = client.get_job(args.job_id)
    if args.json:
        output.write_json(job)
        return EXIT_OK
    spec, progress, error = job["spec"], job["progress"], job.get("error") or {}
    datasets = ", ".join(f"{role} {value}" for role, value in spec.get("dataset", {}).items()
                         if role in ("train", "validation", "test", "validation_split",
                                     "test_split") and value is not None)
    steps = (f"{progress['step']}/{progress['total_steps']} steps ({progress['percent']:.0f}%)"
             if progress.get("total_steps") else "")
    if steps and progress.get("epoch") is not None:
        steps += f", epoch {progress['epoch']:.2f}"
    eta = progress.get("eta_seconds") if job["status"] == "running" else None
    pairs: list[tuple[str, Any]] = [
        ("id", job["id"]), ("name", job.get("name")), ("status", job["status"]),
        ("task", spec.get("task")), ("model", spec.get("model")), ("datasets", datasets),
        ("progress", steps), ("eta", output.duration(eta) if eta is not None else None),
        ("created", output.timestamp(job["created_at"])),
        ("started", output.timestamp(job.get("started_at"))),
        ("finished", output.timestamp(job.get("finished_at"))),
        ("error", f"{error['code']}: {error['message']}" if error else None),
        ("hint", error.get("hint"))]
    for group in ("train", "eval", "final"):
        values = (job.get("metrics") or {}).get(group) or {}
        pairs.append((group, "  ".join(f"{name} {output.number(value)}"
                                       for name, value in values.items()
                                       if isinstance(value, int | float))))
    print(output.details(pairs))
    return EXIT_OK


def logs(client: ApiClient, args: argparse.Namespace) -> int:
    if args.follow:
        return _follow_logs(client, args.job_id,
                            _print_event_json if args.json else _print_event)
    events = client.all_events(args.job_id)
    if args.json:
        output.write_json({"data": events, "has_more": False})
    else:
        for event in events:
            print(_event_line(event))
    return EXIT_OK


def _follow_logs(client: ApiClient, job_id: str, show: Callable[[Json], None]) -> int:
    """Every event from the job's live stream until the job ends; polls a service without
    streams."""
    try:
        for block in client.job_stream(job_id):
            if block.event == "event":
                show(json.loads(block.data))
        return EXIT_OK
    except StreamRefused:
        pass
    events = client.all_events(job_id)
    for event in events:
        show(event)
    last_id = events[-1]["id"] if events else None
    while True:
        # Read the status before the events, so the last page holds every event it led to.
        finished = client.get_job(job_id)["status"] in TERMINAL_STATUSES
        new = client.all_events(job_id, after=last_id)
        for event in new:
            show(event)
        last_id = new[-1]["id"] if new else last_id
        if finished:
            return EXIT_OK
        time.sleep(FOLLOW_POLL_SECONDS)


def _event_line(event: Json) -> str:
    return f"{output.timestamp(event['created_at'])}  {event['kind']:<15} {event['message']}"


def _print_event(event: Json) -> None:
    print(_event_line(event), flush=True)


def _print_event_json(event: Json) -> None:
    print(json.dumps(event), flush=True)


def metrics(client: ApiClient, args: argparse.Namespace) -> int:
    answer = client.metrics(args.job_id)
    if args.plot:
        written = plot_metrics(answer["series"], Path(args.plot), title=args.job_id)
        print(f"wrote {written}", file=sys.stderr)
    if args.json:
        output.write_json(answer)
    elif answer["series"]:
        headers, rows = output.metrics_table(answer["series"])
        print(output.table(headers, rows))
    else:
        print(f"job {args.job_id} has logged no metrics yet", file=sys.stderr)
    return EXIT_OK


def cancel(client: ApiClient, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    if args.json:
        output.write_json(job)
    else:
        print(f"{job['id']} {job['status']}")
    return EXIT_OK


def download(client: ApiClient, args: argparse.Namespace) -> int:
    dest = Path(args.dest) if args.dest else Path(f"{args.job_id}-model")
    line = output.ProgressLine()
    try:
        folder = client.download_model(
            args.job_id, dest,
            on_progress=lambda received, total: line.show(
                output.download_progress(received, total), force=received == total))
    finally:
        line.close()
    print(folder)
    return EXIT_OK


def _more_hint(page: Json) -> None:
    if page["has_more"]:
        print("(there are more; raise --limit, up to 100)", file=sys.stderr)
