"""The `finetune` command: the production entry points, configured only by FT_ settings."""

from __future__ import annotations

import argparse
import sys

from app.config import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune", description="Fine-tuning job service")
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    commands.add_parser("worker", help="run a worker (one per GPU)")
    commands.add_parser("migrate", help="migrate the database to the current schema")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "api":
        import uvicorn

        from app.main import create_app

        uvicorn.run(create_app(settings), host=args.host, port=args.port)
    elif args.command == "worker":
        from worker.main import run_worker

        run_worker(settings)
    else:
        from app import migrate

        settings.prepare_local_dirs()
        migrate.upgrade(settings.database_url)
        print("database migrated to the current schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
