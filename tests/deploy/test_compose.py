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


def test_compose_app_services_share_only_the_bucket() -> None:
    config = compose_config()
    store_env = environment(service("s3"))
    envs = {name: environment(service(name)) for name in APP_SERVICES}
    for key in ("FT_DATABASE_URL", "FT_BROKER_URL", "FT_STORAGE_URL", "FT_S3_ENDPOINT_URL",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert len({env.get(key) for env in envs.values()}) == 1, key
    api_env = envs["api"]
    bucket = urlsplit(api_env["FT_STORAGE_URL"])
    assert bucket.scheme == "s3" and bucket.netloc, api_env["FT_STORAGE_URL"]
    endpoint = urlsplit(api_env["FT_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "s3", "the store is the compose file's own s3 service"
    assert f"-s3.port={endpoint.port}" in " ".join(service("s3")["command"])
    # The store is created with the key pair the app containers sign with.
    assert (store_env["S3_ACCESS_KEY"], store_env["S3_SECRET_KEY"]) == \
        (api_env["AWS_ACCESS_KEY_ID"], api_env["AWS_SECRET_ACCESS_KEY"])
    # No folder is shared between the API and the worker: each has its own scratch volume.
    api_mounts, worker_mounts = volume_mounts(service("api")), volume_mounts(service("worker"))
    assert Path(api_env["FT_STORAGE_DIR"]).is_relative_to("/data")
    assert set(api_mounts.values()).isdisjoint(worker_mounts.values()), \
        (api_mounts, worker_mounts)
    assert {*api_mounts.values(), *worker_mounts.values()} <= set(config["volumes"])
    assert service("migrate")["depends_on"]["s3"]["condition"] == "service_healthy"


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
