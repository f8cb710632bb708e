"""What this worker offers (device type, count, memory) and its row in the worker registry,
kept fresh by a heartbeat thread in the worker's main process.

The offer decides the queues the worker consumes (app.broker.worker_queues); the row lets the
API list the fleet (GET /v1/workers) and tell a queued job that no live worker serves it.
Detection asks nvidia-smi, not torch: the worker's main process never initializes CUDA, its
trainer children own the devices.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket

# Fixed argv, no shell: nvidia-smi's device list.
import subprocess  # nosec B404
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from app.broker import worker_queues
from app.config import Settings
from app.db import transaction
from app.models import Worker, utcnow

logger = logging.getLogger("finetune.worker")

IDLE, BUSY = "idle", "busy"
# A worker silent this long is removed from the registry by any live worker's heartbeat.
PRUNE_AFTER = timedelta(days=1)
_MIB = 1024**2


@dataclass(frozen=True)
class Offer:
    gpu_type: str
    gpus: int
    # Per device: a GPU's memory, or the machine's for a CPU worker; None when unknown.
    gpu_memory_bytes: int | None

    @property
    def queues(self) -> list[str]:
        return worker_queues(self.gpu_type, self.gpus)


@dataclass(frozen=True)
class Device:
    index: str
    uuid: str
    name: str
    memory_bytes: int


def detect_offer(settings: Settings) -> Offer:
    """The settings' FT_WORKER_GPU_TYPE and FT_WORKER_GPUS, each detected when unset: the
    CUDA devices this process sees, or the CPU (type 'cpu', one device) without any."""
    devices = visible_gpus()
    if devices:
        detected_type, count, memory = slug(devices[0].name), len(devices), devices[0].memory_bytes
    else:
        detected_type, count, memory = "cpu", 1, _machine_memory()
    return Offer(gpu_type=settings.worker_gpu_type or detected_type,
                 gpus=settings.worker_gpus or count, gpu_memory_bytes=memory)


def slug(name: str) -> str:
    """A device's model name as a gpu_type: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")[:40] or "gpu"


def visible_gpus() -> list[Device]:
    """The NVIDIA GPUs CUDA would show this process: nvidia-smi's list, narrowed and ordered
    by CUDA_VISIBLE_DEVICES (indices or UUIDs) when it is set."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        # A fixed argv and no shell.
        listed = subprocess.run(  # nosec B603
            [smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        logger.warning("nvidia-smi failed: this worker offers its CPU", exc_info=True)
        return []
    devices = []
    for line in listed.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 4 and fields[3].isdigit():
            devices.append(Device(fields[0], fields[1], fields[2], int(fields[3]) * _MIB))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return devices
    named = [entry.strip() for entry in visible.split(",") if entry.strip()]
    return [device for entry in named for device in devices if entry in (device.index,
                                                                          device.uuid)]


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return None


def worker_id() -> str:
    """This worker's name in the registry, its leases and its jobs' attempts."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Registration:
    """This worker's registry row: written when it is ready, on every heartbeat and when it
    takes or ends a job, deleted when it shuts down cleanly."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 offer: Offer) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.offer = offer
        self.id = worker_id()
        self.started_at = utcnow()
        self.status, self.job_id = IDLE, None
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def start(self) -> None:
        self._write()
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def busy(self, job_id: str) -> None:
        self.status, self.job_id = BUSY, job_id
        self._write()

    def idle(self) -> None:
        self.status, self.job_id = IDLE, None
        self._write()

    def stop(self) -> None:
        self.stopped.set()
        try:
            with self.lock, transaction(self.session_factory) as session:
                session.execute(delete(Worker).where(Worker.id == self.id))
        except Exception:  # its row goes offline by itself
            logger.warning("could not remove this worker from the registry", exc_info=True)

    def _beat(self) -> None:
        while not self.stopped.wait(self.settings.worker_heartbeat_seconds):
            self._write(prune=True)

    def _write(self, prune: bool = False) -> None:
        # The heartbeat must outlive a database that is away for a while.
        try:
            with self.lock, transaction(self.session_factory) as session:
                if self.stopped.is_set():
                    return
                session.merge(Worker(
                    id=self.id, host=socket.gethostname(), pid=os.getpid(),
                    gpu_type=self.offer.gpu_type, gpus=self.offer.gpus,
                    gpu_memory_bytes=self.offer.gpu_memory_bytes, queues=self.offer.queues,
                    status=self.status, job_id=self.job_id, started_at=self.started_at,
                    heartbeat_at=utcnow()))
                if prune:
                    session.execute(delete(Worker).where(
                        Worker.heartbeat_at < utcnow() - PRUNE_AFTER))
        except Exception:
            logger.warning("the worker's heartbeat failed; it will try again", exc_info=True)
