"""The `finetune` command: server entry points (configured only by FT_ settings) and the client."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from app.client.commands import register as register_client_commands
from app.config import Settings, get_settings
from app.keys.commands import register as register_key_commands
from app.network import is_loopback
from app.processes import worker_command

# A stop waits this long for open requests: a live stream never ends by itself, and its
# client resumes on another process with Last-Event-ID.
STREAMS_CUT_AFTER_SECONDS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune", description="Fine-tuning job service")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1,
                     help="API processes sharing the port (metrics add up across them)")
    api.set_defaults(handler=_api)
    commands.add_parser("worker", help="run a worker (one per GPU)").set_defaults(handler=_worker)
    commands.add_parser("migrate", help="migrate the database to the current schema and make the artifact store ready") \
        .set_defaults(handler=_migrate)
    commands.add_parser("webhooks", help="run a webhook dispatcher (any number on PostgreSQL, "
                                         "one on SQLite)").set_defaults(handler=_webhooks)
    up = commands.add_parser("up", help="run the API, a worker and the webhook dispatcher "
                                        "together on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(handler=_up)
    register_key_commands(commands)
    register_client_commands(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def _refuse_open_network(settings: Settings, host: str) -> None:
    if not settings.require_api_keys and not is_loopback(host):
        raise SystemExit(f"finetune: FT_REQUIRE_API_KEYS=false is only allowed on loopback "
                         f"(127.0.0.1 or ::1), not on {host}: anyone who can reach the port "
                         "would own every project")


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    _refuse_open_network(settings, args.host)
    if args.workers == 1:
        from app.main import create_app

        uvicorn.run(create_app(settings), host=args.host, port=args.port,
                    timeout_graceful_shutdown=STREAMS_CUT_AFTER_SECONDS)
        return 0
    from app.metrics import MULTIPROCESS_ENV, reset_multiprocess_dir

    # uvicorn starts each process as a fresh interpreter that inherits the variable, which
    # prometheus_client reads when first imported; a folder left by an earlier run would add
    # its counts in under reused pids.
    folder = Path(os.environ.setdefault(MULTIPROCESS_ENV,
                                        tempfile.mkdtemp(prefix="finetune-metrics-")))
    reset_multiprocess_dir(folder)
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, timeout_graceful_shutdown=STREAMS_CUT_AFTER_SECONDS)
    return 0


def _worker(_: argparse.Namespace) -> int:
    command = worker_command()
    # Our interpreter running our own module, in place of this process (same pid: signals
    # reach it directly), because app/ never imports worker/: a base install ships it but
    # cannot run it.
    os.execv(command[0], command)  # nosec B606


def _webhooks(_: argparse.Namespace) -> int:
    from app.webhooks.dispatcher import run_dispatcher

    return run_dispatcher(get_settings())


def _up(args: argparse.Namespace) -> int:
    from app.launcher import run_up

    settings = get_settings()
    _refuse_open_network(settings, args.host)
    return run_up(settings, args.host, args.port)


def _migrate(_: argparse.Namespace) -> int:
    from app import migrate
    from app.storage import make_storage

    settings = get_settings()
    settings.prepare_local_dirs()
    migrate.upgrade(settings.database_url)
    print("database migrated to the current schema")
    print(make_storage(settings).prepare())
    return 0


if __name__ == "__main__":
    sys.exit(main())
