"""docker-compose.yml, as `docker-compose config` resolves it: services, images, order,
environment, volumes and the GPU reservation."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import urlsplit

from tests.deploy.files import (
    APP_SERVICES,
    SERVICE_TARGETS,
    _compose_config,
    compose_config,
    dockerfile_targets,
    environment,
    require_tool,
    service,
    volume_mounts,
)


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
