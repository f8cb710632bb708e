"""The import direction, read from the source: app/ never imports worker/, and the CLI client
imports nothing of the server but a few modules that import nothing themselves.

Every import counts: module level or inside a function, `import`, `from ... import` and
`importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
CLIENT = APP / "client"
# Shared by the server and the CLI client; they import the standard library only.
CLIENT_MAY_IMPORT = ("app.api_key_file", "app.hashing", "app.network")
_DYNAMIC_IMPORTS = {"import_module", "__import__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module name) of every import in `source`, the source of module `module`.

    `from a import b` gives both `a` and `a.b`, since b may be a module.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "id", None) in _DYNAMIC_IMPORTS
                   or getattr(node.func, "attr", None) in _DYNAMIC_IMPORTS)):
            yield node.lineno, node.args[0].value


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    yield from imports_in(path.read_text(encoding="utf-8"), module_name(path),
                          path.name == "__init__.py")


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def python_files(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.py"))
    assert files, f"no Python files under {folder}"
    return files


def test_the_scan_sees_every_kind_of_import() -> None:
    source = '''
import worker.main
from worker import runner
import importlib

def later():
    from worker.training import model
    importlib.import_module("worker.dry_runs")
    return __import__("worker.celery_tasks")

from . import sibling
from ..jobs import spec
'''
    found = {name for _, name in imports_in(source, "app.client.example")}
    assert {"worker.main", "worker", "worker.runner", "worker.training.model",
            "worker.dry_runs", "worker.celery_tasks", "app.client.sibling",
            "app.jobs.spec"} <= found, found


def test_app_never_imports_worker() -> None:
    offending = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in python_files(APP) for line, name in imports_of(path)
                 if is_within(name, "worker")]
    assert not offending, ("app/ is the API and the shared core; the worker imports it, never "
                           "the other way round:\n" + "\n".join(offending))


def test_the_cli_client_imports_nothing_of_the_server() -> None:
    offending = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in python_files(CLIENT) for line, name in imports_of(path)
                 if is_within(name, "app") and name != "app"
                 and not any(is_within(name, allowed) for allowed in ("app.client",
                                                                      *CLIENT_MAY_IMPORT))]
    assert not offending, ("the CLI client speaks HTTP only; shared helpers it needs go in a "
                           "module that imports nothing:\n" + "\n".join(offending))


@pytest.mark.parametrize("module", CLIENT_MAY_IMPORT)
def test_what_the_client_shares_with_the_server_imports_only_the_standard_library(
        module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    outside = [f"{line}: {name}" for line, name in imports_of(path)
               if name.partition(".")[0] not in sys.stdlib_module_names]
    assert not outside, f"{module} imports more than the standard library: {outside}"
