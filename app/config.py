"""Settings: one object, environment variables with the prefix FT_, defaults for one machine."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.api_key_file import DEFAULT_API_KEY_FILE

_VAR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FT_", env_ignore_empty=True, extra="ignore")

    database_url: str = Field(default=f"sqlite:///{_VAR / 'finetune.sqlite'}",
                              description="SQLAlchemy URL of the job database")
    broker_url: str = Field(default=f"sqla+sqlite:///{_VAR / 'broker.sqlite'}",
                            description="Celery broker URL; redis://host:6379/0 in production")
    storage_dir: Path = Field(default=_VAR / "storage",
                              description="Local folder: the artifact store itself (uploaded "
                                          "datasets, checkpoints, models) unless "
                                          "FT_STORAGE_URL names a bucket; then only this "
                                          "process's work folders and cache")
    storage_url: str | None = Field(
        default=None, description="s3://bucket/prefix: the artifact store is this bucket of any "
                                  "S3-compatible store, shared by every machine; credentials "
                                  "come from the standard AWS chain (AWS_ACCESS_KEY_ID, "
                                  "~/.aws, an instance role). Default: the local folder")
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of a store other than AWS S3 (MinIO, Ceph, R2, "
                                  "GCS's S3 API): https://host:port")
    s3_region: str | None = Field(default=None, description="Region of the bucket")
    cache_max_bytes: int = Field(
        default=20 * 1024**3, ge=0,
        description="Most bytes of datasets a machine keeps in its local cache of the store "
                    "(keyed by sha256, least recently used first out)")
    presign_seconds: int = Field(
        default=300, ge=1, le=604800,
        description="Life of a presigned download URL (`?redirect=true`)")
    models_dir: Path = Field(default=_VAR / "models",
                             description="Local model catalog: <dir>/<name>/ is model <name>")
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1,
                                  description="Largest dataset upload accepted")
    max_json_bytes: int = Field(default=1024 * 1024, ge=1024,
                                description="Largest request body other than a dataset upload")
    require_api_keys: bool = Field(
        default=True, description="Every /v1 request needs a bearer API key. Switching this "
                                  "off is only allowed when the API listens on loopback")
    api_key_file: Path = Field(default=Path(DEFAULT_API_KEY_FILE),
                               description="Where `finetune up` keeps the key it made for the "
                                           "CLI (mode 0600); the CLI reads it from there")
    public_url: str | None = Field(
        default=None, description="The URL clients reach the API at (https://ft.example.com), "
                                  "named as the server in the OpenAPI document that Postman "
                                  "imports and Swagger UI calls; default: the URL the "
                                  "document is fetched from")
    api_db_connections: int = Field(
        default=20, ge=1, le=1000,
        description="Database connections of one API process, and as many threads for its "
                    "sync routes: a route's thread never waits for a connection. On "
                    "PostgreSQL as many again for the read-only routes on the event loop")
    rate_limit_per_minute: int = Field(default=600, ge=1,
                                       description="Requests per minute per API key")
    metrics_token: SecretStr | None = Field(
        default=None, min_length=16,
        description="Bearer token that GET /metrics requires from every client (Prometheus "
                    "sends it as `authorization: {credentials: ...}`); unset, /metrics answers "
                    "clients on this machine only")
    max_active_jobs_per_project: int = Field(
        default=20, ge=1, description="Queued plus running jobs a project may have at once")
    auto_migrate: bool | None = Field(
        default=None, description="Migrate the database on API start; default: only on SQLite")
    max_job_seconds: int = Field(default=7 * 24 * 3600, ge=60,
                                 description="Longest a job may run; sets the broker's "
                                             "visibility timeout above it")
    max_attempts: int = Field(default=5, ge=1, le=100,
                              description="Server cap on a job's max_attempts")
    lease_seconds: float = Field(default=60.0, gt=0,
                                 description="A running job's lease; a worker renews it while "
                                             "the trainer lives, and an expired one is taken back")
    reaper_interval_seconds: float = Field(default=15.0, gt=0,
                                           description="How often workers look for expired "
                                                       "leases and unsent or stale queued jobs")
    resend_after_seconds: float = Field(default=600.0, gt=0,
                                        description="A job queued this long without starting "
                                                    "is sent to the broker again")
    checkpoint_seconds: float = Field(default=300.0, gt=0,
                                      description="Checkpoint interval when a job sets no "
                                                  "checkpoint_steps: the most work a crash loses")
    progress_interval_seconds: float = Field(default=2.0, ge=0.0,
                                             description="Least time between progress writes")
    trainer_memory_bytes: int | None = Field(
        default=None, ge=64 * 1024**2,
        description="Most resident memory (RSS, all its processes) a job's trainer may use; "
                    "past it the worker kills the trainer as the kernel's OOM killer would, and "
                    "the job resumes with a smaller batch. Default: no cap")
    cancel_grace_seconds: float = Field(default=30.0, ge=0.0,
                                        description="Time a cancelled job gets to stop by itself "
                                                    "before its process group is signalled")

    worker_gpu_type: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$",
        description="The class of device this worker offers, a name the operator chooses "
                    "(a100-80gb, h100, cpu); jobs that name a compute.gpu_type run only on "
                    "workers of that type. Default: 'cpu' without a GPU, else the GPU's model "
                    "name in lower case with dashes")
    worker_gpus: int | None = Field(
        default=None, ge=1, le=64,
        description="Devices this worker offers, the most compute.gpus of a job it takes. "
                    "Default: the CUDA devices it sees, or 1 without a GPU")
    worker_heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker writes its heartbeat to the "
                                        "worker registry; one silent for three times as long "
                                        "is not live")

    dry_run_wait_seconds: float = Field(default=30.0, ge=0.0,
                                        description="How long POST /v1/jobs/validate waits for "
                                                    "a worker's report before it answers 202 "
                                                    "with the dry run's id to poll")
    dry_run_claim_seconds: float = Field(default=120.0, gt=0,
                                         description="A dry run claimed this long ago and not "
                                                     "answered is taken over by another worker")

    webhook_allow_private: bool = Field(
        default=False, description="Webhooks may go to loopback, private (RFC 1918, unique "
                                   "local) and shared addresses, over http too; link-local "
                                   "addresses (cloud metadata) still need "
                                   "FT_WEBHOOK_ALLOWED_NETWORKS")
    webhook_allowed_networks: str = Field(
        default="", description="Comma-separated networks (10.20.0.0/16, ::1/128) that webhooks "
                                "may reach although they are not public, over http too")
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="How long one webhook attempt may take")
    webhook_retry_first_seconds: float = Field(
        default=5.0, gt=0, description="Wait before the second attempt; each later wait is "
                                       "five times the one before, up to the cap, with jitter")
    webhook_retry_max_seconds: float = Field(
        default=4 * 3600.0, gt=0, description="Longest wait between two webhook attempts")
    webhook_retry_window_seconds: float = Field(
        default=24 * 3600.0, gt=0, description="A webhook is retried until it is delivered or "
                                               "its event is this old; then it is given up")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
                or parts.fragment:
            raise ValueError("FT_PUBLIC_URL must be an http:// or https:// URL such as "
                             "https://ft.example.com or https://example.com/finetune")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix):]
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks(cls, value: str) -> str:
        _networks(value)
        return value

    @model_validator(mode="after")
    def _known_backends(self) -> Settings:
        if not self.database_url.startswith(("sqlite", "postgresql")):
            raise ValueError("FT_DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if not self.broker_url.startswith(("sqla+", "redis://", "rediss://")):
            raise ValueError("FT_BROKER_URL must be redis://, rediss:// or sqla+<database url>")
        if self.storage_url is not None:
            parts = urlsplit(self.storage_url)
            if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
                raise ValueError("FT_STORAGE_URL must be s3://bucket or s3://bucket/prefix")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def migrate_on_start(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def webhook_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _networks(self.webhook_allowed_networks)

    def prepare_local_dirs(self) -> None:
        """Create the folders that SQLite files and the local store live in."""
        for url in (self.database_url, self.broker_url):
            sqlite_path = url.split("sqlite:///", 1)[1] if "sqlite:///" in url else ""
            if sqlite_path and sqlite_path != ":memory:":
                Path(sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(parents=True, exist_ok=True)


def _networks(listed: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip()) for item in listed.split(",")
                     if item.strip())
    except ValueError as error:
        raise ValueError(f"FT_WEBHOOK_ALLOWED_NETWORKS: {error} (write networks such as "
                         "10.20.0.0/16 or ::1/128, separated by commas)") from None


@lru_cache
def get_settings() -> Settings:
    return Settings()
