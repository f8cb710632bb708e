"""Client subcommands of `finetune` (datasets, submit, jobs, logs, metrics, cancel, download).

Only the parsers live here: `app.cli` is imported by the API process too, so the handlers,
and httpx, YAML and matplotlib behind them, are imported when a client command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from app.client import DEFAULT_URL

Handler = Callable[[argparse.Namespace], int]
JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")


def register(commands: Any) -> None:
    """Add the client subcommands to the `finetune` parser; each sets `handler`."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", help=f"the service (default: $FT_URL, else {DEFAULT_URL})")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true",
                         help="print the API's JSON answer on stdout and nothing else")
    reader = [connection, as_json]

    datasets = commands.add_parser("datasets", help="upload and inspect datasets")
    actions = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")
    upload = actions.add_parser("upload", parents=reader, help="upload a dataset file")
    upload.add_argument("file", metavar="FILE",
                        help="CSV, TSV, JSON Lines, JSON, Parquet, CoNLL, SQuAD JSON or "
                             "Arrow (.arrow, or a save_to_disk folder as .tar or .zip)")
    upload.add_argument("--name", help="a label for the dataset (default: the file name)")
    upload.add_argument("--format", choices=("csv", "tsv", "jsonl", "json", "parquet", "conll",
                                             "squad", "arrow"),
                        help="the file format when the extension does not say it")
    upload.add_argument("--layout", choices=("preference", "sharegpt", "openai-chat", "alpaca",
                                             "prompt-completion", "tabular"),
                        help="how to read the rows when recognising it from the columns would "
                             "not do ('tabular': the columns as they are)")
    upload.set_defaults(handler=_lazy("upload_dataset"))
    listing = actions.add_parser("ls", parents=reader, help="list datasets, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    listing.set_defaults(handler=_lazy("list_datasets"))
    show = actions.add_parser("show", parents=reader, help="a dataset and its first rows")
    show.add_argument("dataset_id", metavar="ID")
    show.add_argument("--rows", type=int, default=5, help="rows to preview (1-100)")
    show.set_defaults(handler=_lazy("show_dataset"))

    submit = commands.add_parser(
        "submit", parents=reader, help="submit a job spec (JSON or YAML)",
        description="Submit a job spec. Overrides apply in order: --model, --epochs, --name, "
                    "then each --set (later wins).")
    submit.add_argument("spec", metavar="SPEC", help="a .json, .yaml or .yml job spec")
    submit.add_argument("--model", help="set `model`")
    submit.add_argument("--epochs", type=float, help="set `hyperparameters.epochs`")
    submit.add_argument("--name", help="set `name`")
    submit.add_argument("--set", dest="assignments", action="append", default=[],
                        metavar="PATH=VALUE",
                        help="set a field by dotted path; VALUE is JSON when it parses as "
                             "JSON, else a string (repeatable)")
    submit.add_argument("--wait", action="store_true",
                        help="follow the job to its end; the exit status tells how it ended")
    submit.set_defaults(handler=_lazy("submit"))

    jobs = commands.add_parser("jobs", help="list and inspect jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("ls", parents=reader, help="list jobs, newest first")
    listing.add_argument("--status", choices=JOB_STATUSES, help="only jobs in this status")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    listing.set_defaults(handler=_lazy("list_jobs"))
    show = actions.add_parser("show", parents=reader, help="a job's status, progress, metrics")
    show.add_argument("job_id", metavar="ID")
    show.set_defaults(handler=_lazy("show_job"))

    logs = commands.add_parser("logs", parents=reader, help="a job's event timeline")
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing new events until the job ends (with --json: one "
                           "JSON event per line)")
    logs.set_defaults(handler=_lazy("logs"))

    metrics = commands.add_parser("metrics", parents=reader,
                                  help="a job's metric series as a table, or a plot")
    metrics.add_argument("job_id", metavar="ID")
    metrics.add_argument("--plot", metavar="FILE.png",
                         help="also draw the training loss and the eval curves into a PNG")
    metrics.set_defaults(handler=_lazy("metrics"))

    cancel = commands.add_parser("cancel", parents=reader, help="cancel a job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.set_defaults(handler=_lazy("cancel"))

    download = commands.add_parser(
        "download", parents=[connection],
        help="download a succeeded job's model folder, checked against its manifest")
    download.add_argument("job_id", metavar="ID")
    download.add_argument("dest", metavar="DIR", nargs="?",
                          help="a folder that does not exist yet (default: ./<ID>-model)")
    download.set_defaults(handler=_lazy("download"))


def _lazy(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from app.client import handlers

        return handlers.run(getattr(handlers, name), args)

    run.__name__ = name
    return run
