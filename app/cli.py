"""The `finetune` command: server entry points (configured only by FT_ settings) and the client."""

from __future__ import annotations

import argparse
import sys

from app.client.commands import register as register_client_commands
from app.config import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune", description="Fine-tuning job service")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(handler=_api)
    commands.add_parser("worker", help="run a worker (one per GPU)").set_defaults(handler=_worker)
    commands.add_parser("migrate", help="migrate the database to the current schema") \
        .set_defaults(handler=_migrate)
    up = commands.add_parser("up", help="run the API and a worker together on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(handler=_up)
    register_client_commands(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(get_settings()), host=args.host, port=args.port)
    return 0


def _worker(_: argparse.Namespace) -> int:
    from worker.main import run_worker

    run_worker(get_settings())
    return 0


def _up(args: argparse.Namespace) -> int:
    from app.launcher import run_up

    return run_up(get_settings(), args.host, args.port)


def _migrate(_: argparse.Namespace) -> int:
    from app import migrate

    settings = get_settings()
    settings.prepare_local_dirs()
    migrate.upgrade(settings.database_url)
    print("database migrated to the current schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
