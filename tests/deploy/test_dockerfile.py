"""The Dockerfile (linted by hadolint and read as text, per target), the commands its images
and the compose file run, and .dockerignore."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from app.cli import main as finetune_main
from tests.deploy.files import (
    APP_SERVICES,
    COMPOSE_FILE,
    DOCKERIGNORE,
    ROOT,
    base_image,
    builder_of,
    dockerfile_stages,
    dockerfile_targets,
    expand_args,
    pip_installs,
    require_tool,
    shell_commands,
    stage_name,
    stage_values,
)


def test_hadolint_passes_without_output() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


def test_dockerfile_has_a_slim_runtime_image_per_target() -> None:
    targets = dockerfile_targets()
    assert {"api", "worker"} <= set(targets), sorted(targets)
    assert stage_name(dockerfile_stages()[-1]) == "api", "a plain `docker build .` is the API"
    for stage in dockerfile_stages():
        image = stage[0][1].split()[0]
        if image.lower() not in targets:
            assert ":" in image and not image.endswith(":latest"), f"pin {image} by tag"
    for name in ("api", "worker"):
        runtime_base = base_image(targets[name])
        assert runtime_base.startswith("python:3.11-slim"), (name, runtime_base)
        builder = builder_of(targets[name])
        assert base_image(builder) == runtime_base, "the virtualenv's links need the same Python"
        assert not pip_installs(targets[name]), f"the {name} image only copies its virtualenv"


def test_dockerfile_worker_target_installs_torch_and_the_worker_extra() -> None:
    builder = builder_of(dockerfile_targets()["worker"])
    args = " ".join(stage_values(builder, "ARG"))
    assert "TORCH_SPEC=torch==2.13.0" in args
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in args
    installs = " ".join(pip_installs(builder))
    assert '--index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"' in installs, installs
    assert '"./[worker]"' in installs and '"./[demo]"' in installs, installs


def test_dockerfile_api_target_installs_no_torch() -> None:
    builder = builder_of(dockerfile_targets()["api"])
    assert pip_installs(builder) == ["pip install --no-cache-dir ./"], \
        "the API installs the base project only: no torch, no extra"
    assert not any("TORCH" in arg for arg in stage_values(builder, "ARG"))
    assert any("sys.exit(importlib.util.find_spec('torch') is not None)" in command
               for command in shell_commands(builder)), \
        "the build fails if a dependency pulled torch in"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_dockerfile_target_runs_as_non_root(name: str) -> None:
    target = dockerfile_targets()[name]
    users = stage_values(target, "USER")
    assert users, f"the {name} image sets a USER"
    user = expand_args(users[-1], target).split(":")[0]
    assert user not in ("root", "0") and not user.startswith("$"), user
    if user.isdigit():
        assert int(user) >= 1000, user


def test_dockerfile_api_has_a_healthcheck_and_the_worker_none() -> None:
    healthchecks = stage_values(dockerfile_targets()["api"], "HEALTHCHECK")
    assert healthchecks and "/healthz" in healthchecks[-1], healthchecks
    assert "curl" not in healthchecks[-1] and "wget" not in healthchecks[-1]
    worker_checks = stage_values(dockerfile_targets()["worker"], "HEALTHCHECK")
    assert worker_checks in ([], ["NONE"]), "a worker opens no HTTP port"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_dockerfile_target_layout(name: str) -> None:
    target = dockerfile_targets()[name]
    assert stage_values(target, "WORKDIR")[-1] == "/srv"
    assert "/data" in " ".join(stage_values(target, "VOLUME"))
    env = " ".join(stage_values(target, "ENV"))
    assert "FT_STORAGE_DIR=/data/storage" in env
    assert "HF_HOME=/data/hf" in env
    assert json.loads(stage_values(target, "ENTRYPOINT")[-1]) == ["finetune"]


def test_dockerfile_target_commands() -> None:
    api, worker = dockerfile_targets()["api"], dockerfile_targets()["worker"]
    assert "8000" in " ".join(stage_values(api, "EXPOSE")).split()
    assert json.loads(stage_values(api, "CMD")[-1]) == ["api", "--host", "0.0.0.0",
                                                        "--port", "8000"]
    assert json.loads(stage_values(worker, "CMD")[-1]) == ["worker"]


# ---------------------------------------------------------------------------------------------
# The commands the image and the compose file run exist in the CLI.

IMAGE_TARGETS = ("api", "worker")


def _image_and_compose_commands() -> list[list[str]]:
    targets = dockerfile_targets()
    commands = [json.loads(stage_values(targets[name], "CMD")[-1]) for name in IMAGE_TARGETS]
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    commands += [raw["services"][name]["command"] for name in APP_SERVICES]
    return commands


@pytest.mark.parametrize("index", range(len(IMAGE_TARGETS) + len(APP_SERVICES)))
def test_commands_parse_with_the_cli(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    command = _image_and_compose_commands()[index]
    with pytest.raises(SystemExit) as exit_info:
        finetune_main([*command, "--help"])
    assert exit_info.value.code == 0, (command, capsys.readouterr().err)


def test_entrypoint_is_the_project_script() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in IMAGE_TARGETS:
        entrypoint = json.loads(stage_values(dockerfile_targets()[name], "ENTRYPOINT")[-1])
        assert entrypoint[0] in scripts, name


# ---------------------------------------------------------------------------------------------
# .dockerignore keeps what the Dockerfile copies, and little else.

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regex on slash paths."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            close = pattern.index("]", i + 1)
            regex, i = regex + "[" + pattern[i + 1:close].replace("!", "^", 1) + "]", close + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


def dockerignore_excludes(path: str) -> bool:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern_regex(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_every_copied_source() -> None:
    sources = []
    for stage in dockerfile_stages():
        for arguments in stage_values(stage, "COPY"):
            words = [word for word in arguments.split() if not word.startswith("--")]
            if "--from=" not in arguments:
                sources += words[:-1]
    assert sources, "the builder copies the project"
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [
            file for file in path.rglob("*")
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(relative), f".dockerignore drops {relative}"


@pytest.mark.parametrize("path", [".git/HEAD", "tests/conftest.py", ".ci/run", "var/x.sqlite",
                                  ".env", "examples/sst2/train.tsv",
                                  "app/__pycache__/cli.cpython-311.pyc"])
def test_dockerignore_leaves_out_the_rest(path: str) -> None:
    assert dockerignore_excludes(path), path
