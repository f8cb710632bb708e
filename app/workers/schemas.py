from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.models import Worker


class WaitingFor(BaseModel):
    """What a queued job needs that no live worker offers."""

    gpus: int = Field(description="Devices the job asks for (compute.gpus)")
    gpu_type: str | None = Field(description="The device type it asks for (compute.gpu_type); "
                                             "null: any type")
    reason: str = Field(description="What is missing, and what the live workers offer")


class WorkerOut(BaseModel):
    id: str = Field(description="host:pid; the `worker` its jobs' attempts record")
    object: Literal["worker"] = "worker"
    host: str
    pid: int
    gpu_type: str = Field(description="The device type it offers (FT_WORKER_GPU_TYPE, or "
                                      "detected)")
    gpus: int = Field(description="Devices it offers: it runs jobs of at most this many "
                                  "compute.gpus")
    gpu_memory_bytes: int | None = Field(description="Memory per device (the machine's for a "
                                                     "CPU worker)")
    queues: list[str] = Field(description="The broker queues it consumes, one per job class")
    status: Literal["idle", "busy", "offline"] = Field(
        description="offline: no heartbeat for three heartbeat intervals (it stopped "
                    "without saying so); offline workers are forgotten after a day")
    job_id: str | None = Field(description="The job it is running, when busy")
    started_at: datetime
    heartbeat_at: datetime

    @classmethod
    def from_worker(cls, worker: Worker, live: bool) -> WorkerOut:
        return cls(id=worker.id, host=worker.host, pid=worker.pid, gpu_type=worker.gpu_type,
                   gpus=worker.gpus, gpu_memory_bytes=worker.gpu_memory_bytes,
                   queues=worker.queues,
                   status=worker.status if live else "offline",  # type: ignore[arg-type]
                   job_id=worker.job_id if live else None, started_at=worker.started_at,
                   heartbeat_at=worker.heartbeat_at)
