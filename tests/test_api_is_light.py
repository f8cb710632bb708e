"""What each process loads, checked in a fresh interpreter: the API and the CLI never load
torch or the worker, and the CLI client loads nothing of the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("torch", "transformers", "datasets", "accelerate", "peft", "worker")
SERVER = ("app.config", "app.db", "app.models", "app.main", "app.jobs", "app.broker",
          "fastapi", "sqlalchemy", "pydantic", "celery", "alembic")


def modules_under(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert names, package
    return names


def loaded_after_importing(modules: list[str]) -> list[str]:
    """Every module in sys.modules once a new interpreter has imported `modules`."""
    code = ("import importlib, json, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def among(loaded: list[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded
                  if any(name == package or name.startswith(package + ".")
                         for package in packages))


@pytest.mark.parametrize("modules", [
    pytest.param(["app.main", "app.cli"], id="the-api-and-the-cli"),
    pytest.param(modules_under("app"), id="every-module-under-app"),
])
def test_the_api_never_imports_training_libraries(modules: list[str]) -> None:
    heavy = among(loaded_after_importing(modules), TRAINING)
    assert not heavy, f"importing {len(modules)} modules of app/ loaded {heavy}"


def test_the_cli_client_loads_nothing_of_the_server() -> None:
    client = modules_under("app.client")
    server = among(loaded_after_importing(client), SERVER + TRAINING)
    assert not server, f"the CLI client's modules {client} loaded {server}"
