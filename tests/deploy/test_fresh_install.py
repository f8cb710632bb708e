"""`pip install .` into a fresh virtualenv, as a new user would: the API and the CLI work, torch
is not installed, and a worker says which extra it needs.

The virtualenv has no system site-packages (where the suite's own torch lives) and no user site;
it is built from a copy of the files the package is made of, so nothing is written into the
checkout. The first run downloads the base dependencies from PyPI; pip's cache makes later runs
quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.service import free_port, stop

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]
# What the package is built from (the same allow-list as .dockerignore).
PROJECT_FILES = ("pyproject.toml", "README.md", "app", "worker", "migrations")
TRAINING = ("torch", "transformers", "datasets", "accelerate", "peft")
WORKER_HINT = 'pip install "finetune-service[worker]"'


@dataclass
class Venv:
    path: Path
    env: dict[str, str]

    def run(self, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.path / "bin" / args[0]), *args[1:]], cwd=cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("fresh-install")
    source = root / "source"
    for name in PROJECT_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # Nothing of this interpreter's environment leaks in: no PYTHONPATH, no user site, no FT_.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "FT_", "VIRTUAL_ENV"))}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], env=env, check=True,
                   timeout=120)
    fresh = Venv(root / "venv", env)
    installed = fresh.run("python", "-m", "pip", "install", "--quiet", str(source), cwd=root,
                          timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return fresh


def test_the_base_install_has_no_training_libraries(venv: Venv, tmp_path: Path) -> None:
    code = ("import importlib.util, json, sys\n"
            f"print(json.dumps({{name: importlib.util.find_spec(name) is not None "
            f"for name in {TRAINING!r}}}))\n"
            "print(json.dumps(importlib.util.find_spec('fastapi').origin))")
    result = venv.run("python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    training, fastapi_origin = map(json.loads, result.stdout.splitlines())
    assert not any(training.values()), f"installed without the worker extra: {training}"
    # Its packages come from the virtualenv, not from the suite's own site-packages.
    assert Path(fastapi_origin).is_relative_to(venv.path), fastapi_origin


def test_the_cli_answers_help(venv: Venv, tmp_path: Path) -> None:
    for command in (["--help"], ["api", "--help"], ["submit", "--help"]):
        result = venv.run("finetune", *command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert "usage: finetune" in result.stdout, command


@pytest.fixture
def api(venv: Venv, tmp_path: Path) -> Iterator[str]:
    """`finetune migrate`, then `finetune api` on the embedded defaults under tmp_path/var."""
    migrated = venv.run("finetune", "migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    with (tmp_path / "api.log").open("wb") as log:
        process = subprocess.Popen([str(venv.path / "bin" / "finetune"), "api", "--port",
                                    str(port)], cwd=tmp_path, env=venv.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        stop(process)


def test_the_api_and_the_cli_work_without_torch(venv: Venv, api: str, tmp_path: Path) -> None:
    assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
    created = venv.run("finetune", "keys", "create", "--project", "fresh", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    client_env = {**venv.env, "FT_URL": api, "FT_API_KEY": key}
    data = tmp_path / "train.csv"
    data.write_text("text,label\ngood film,positive\nbad film,negative\n")
    uploaded = subprocess.run([str(venv.path / "bin" / "finetune"), "datasets", "upload",
                               str(data), "--json"], cwd=tmp_path, env=client_env,
                              capture_output=True, text=True, timeout=120, check=False)
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["num_rows"] == 2


def test_the_dashboard_comes_with_the_package(api: str) -> None:
    """Its pages and scripts are package data of a non-editable install."""
    page = httpx.get(f"{api}/ui/", timeout=5)
    assert page.status_code == 200 and 'src="static/js/app.js"' in page.text
    for path in ("static/js/app.js", "static/js/views/job.js",
                 "static/vendor/uplot/uPlot.esm.js", "static/css/app.css"):
        assert httpx.get(f"{api}/ui/{path}", timeout=5).status_code == 200, path


@pytest.mark.parametrize("command", [["worker"], ["up", "--port", "1"]])
def test_a_worker_says_which_extra_it_needs(venv: Venv, command: list[str],
                                            tmp_path: Path) -> None:
    result = venv.run("finetune", *command, cwd=tmp_path)
    assert result.returncode != 0
    assert WORKER_HINT in result.stderr, result.stderr
    assert "torch" in result.stderr, result.stderr
    assert not (tmp_path / "var").exists(), "it stops before it starts anything"
