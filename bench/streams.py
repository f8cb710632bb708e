"""Live-stream benchmark: one API process holding 1,000 open streams under the API load mix.

    python bench/streams.py [--streams 1000] [--jobs 30] [--clients 100] [--seconds 15]

Starts `finetune api` on PostgreSQL + Redis as bench/api_load.py does, submits `--jobs` jobs
(no worker runs: they stay queued) and measures `hey` against authenticated
`GET /v1/jobs/{id}` with no stream open. Then opens `--streams` streams (nine in ten follow one
of the jobs, `GET /v1/jobs/{id}/events?stream=true`, the rest the project's job list,
`GET /v1/jobs?stream=true`) from one asyncio client, and runs the same `hey` load again while
a writer adds an event and two metric points to a job every 0.2 s, as a worker's reporter
does; then cancels one more job, which every list stream must see. Prints the API process's
resident memory, threads and database connections before and after, its memory through the
loaded run, the streams still open at the end (as the client and the server's sockets see
them), how many streams received exactly what was written for them, and requests/s, p50, p99
and errors of both runs. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import redis
from sqlalchemy import Engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from api_load import REDIS, LoadResult, cpu_seconds, saturate, server

from app.db import make_engine, make_session_factory, transaction
from app.jobs import lifecycle
from app.models import JobEvent, MetricPoint
from tests.api.helpers import job_spec, sentiment_dataset
from tests.conftest import postgres_database

PORT = 18741
WRITE_SECONDS = 0.2
QUIET_SECONDS = 10


@dataclass
class Streams:
    """The client side: how many streams are open and what each has received."""

    paths: list[str] = field(default_factory=list)
    opened: int = 0
    failed: list[str] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    open_now: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ft-streams-") as scratch, \
            postgres_database() as url:
        run(url, Path(scratch), args)
    redis.Redis.from_url(REDIS).flushdb()


def run(database_url: str, workdir: Path, args: argparse.Namespace) -> None:
    env = {**os.environ, "FT_DATABASE_URL": database_url, "FT_BROKER_URL": REDIS,
           "FT_STORAGE_DIR": str(workdir / "storage"), "FT_RATE_LIMIT_PER_MINUTE": "100000000",
           "FT_MAX_ACTIVE_JOBS_PER_PROJECT": str(args.jobs + 1)}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=workdir,
                   check=True, capture_output=True)
    key = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--project",
                          "bench"], env=env, cwd=workdir, check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    database = make_engine(database_url, 2)
    with server([sys.executable, "-m", "app.cli", "api", "--port", str(PORT)], env, workdir,
                f"http://127.0.0.1:{PORT}") as (base, pid):
        *jobs, spare = submit_jobs(base, headers, workdir, args.jobs + 1)
        job_url = f"{base}/v1/jobs/{jobs[0]}"
        quiet = saturate(job_url, headers, base, pid, args.clients, args.seconds,
                         probe_ready=False)
        # After a load: the routes' threads and connections are all open already.
        before = process_figures(pid, database)
        streams = Streams()
        stop = threading.Event()
        client = threading.Thread(target=asyncio.run, daemon=True, args=(
            hold_streams(PORT, key, jobs, args.streams, streams, stop),))
        client.start()
        while streams.opened + len(streams.failed) < args.streams:
            time.sleep(0.2)
        time.sleep(5)  # every stream has read its backlog: what follows is the idle cost
        opened = process_figures(pid, database)
        idle_cpu = cpu_share(pid, QUIET_SECONDS)
        writes = Writer(database, jobs)
        rss_samples = sample_rss(pid, stop)
        writes.start()
        writing_cpu = cpu_share(pid, QUIET_SECONDS)
        loaded = saturate(job_url, headers, base, pid, args.clients, args.seconds,
                          probe_ready=False)
        writes.stop()
        httpx.post(f"{base}/v1/jobs/{spare}/cancel", headers=headers).raise_for_status()
        time.sleep(2)  # the last writes and the cancel reach the streams
        established = sockets_of(PORT)
        still_open = streams.open_now
        after = process_figures(pid, database)
        expected = messages_written(database, jobs)
        stop.set()
        client.join(timeout=30)
    database.dispose()
    report(args, quiet, loaded, before, opened, after, rss_samples, streams, still_open,
           established, writes.count, expected)
    print(f"API process CPU with the streams open and no request: {idle_cpu:.1%} of a core "
          f"idle, {writing_cpu:.1%} while the writer writes ({QUIET_SECONDS} s each)")


def submit_jobs(base: str, headers: dict[str, str], workdir: Path, count: int) -> list[str]:
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        dataset = sentiment_dataset(client, workdir)  # type: ignore[arg-type]
        answers = [client.post("/v1/jobs", json=job_spec(dataset["id"])) for _ in range(count)]
    assert all(answer.status_code == 201 for answer in answers), answers[-1].text
    return [answer.json()["id"] for answer in answers]


async def hold_streams(port: int, key: str, jobs: list[str], count: int, streams: Streams,
                       stop: threading.Event) -> None:
    streams.paths = [f"/v1/jobs/{jobs[index % len(jobs)]}/events?stream=true" if index % 10
                     else "/v1/jobs?stream=true" for index in range(count)]
    streams.received = [0] * count
    tasks = []
    for index, path in enumerate(streams.paths):
        tasks.append(asyncio.create_task(follow(port, key, path, index, streams)))
        if index % 100 == 99:
            await asyncio.sleep(0.2)  # within uvicorn's backlog
    while not stop.is_set():
        await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def follow(port: int, key: str, path: str, index: int, streams: Streams) -> None:
    """One stream on a raw connection: it counts the messages (`event:` lines) it reads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    status = await reader.readline()
    if b" 200 " not in status:
        streams.failed.append(status.decode().strip())
        writer.close()
        return
    while (await reader.readline()).strip():
        pass  # the headers
    streams.opened += 1
    streams.open_now += 1
    try:
        while line := await reader.readline():
            if line.startswith(b"event: "):
                streams.received[index] += 1
    finally:
        streams.open_now -= 1
        writer.close()


class Writer:
    """What a worker's reporter writes: an event and two metric points, to one job each time."""

    def __init__(self, engine: Engine, jobs: list[str]) -> None:
        self.sessions = make_session_factory(engine)
        self.jobs = jobs
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(WRITE_SECONDS):
            step += 1
            job_id = random.choice(self.jobs)  # nosec B311
            with transaction(self.sessions) as session:
                lifecycle.add_event(session, job_id, "evaluation", f"step {step}", {"step": step})
                session.add_all([MetricPoint(job_id=job_id, step=step, epoch=None, name=name,
                                             value=1.0 / step) for name in ("loss", "grad_norm")])
            self.count += 1


def messages_written(engine: Engine, jobs: list[str]) -> dict[str, int]:
    """A job stream's messages: every event and metric point of its job; a list stream's:
    one status change (the cancel)."""
    with engine.connect() as connection:
        counts = {job_id: 0 for job_id in jobs}
        for model in (JobEvent, MetricPoint):
            for job_id, count in connection.execute(
                    select(model.job_id, func.count()).where(model.job_id.in_(jobs))
                    .group_by(model.job_id)):
                counts[job_id] += count
    return {f"/v1/jobs/{job_id}/events?stream=true": count for job_id, count in counts.items()
            } | {"/v1/jobs?stream=true": 1}


def process_figures(pid: int, engine: Engine) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    with engine.connect() as connection:
        connections = connection.scalar(
            select(func.count()).select_from(text("pg_stat_activity"))
            .where(text("datname = current_database() AND pid <> pg_backend_pid()")))
    return {"rss_mib": int(status["VmRSS"].split()[0]) // 1024,
            "threads": int(status["Threads"]), "db_connections": int(connections or 0)}


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core the process used over the next `seconds`."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def sample_rss(pid: int, stop: threading.Event) -> list[int]:
    samples: list[int] = []

    def sample() -> None:
        while not stop.wait(1.0):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]) // 1024)

    threading.Thread(target=sample, daemon=True).start()
    return samples


def sockets_of(port: int) -> int:
    """Established connections on the server's side of `port`."""
    listed = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                            capture_output=True, text=True, check=False).stdout
    return len(listed.splitlines())


def report(args: argparse.Namespace, quiet: LoadResult, loaded: LoadResult,
           before: dict[str, int], opened: dict[str, int], after: dict[str, int],
           rss: list[int], streams: Streams, still_open: int, established: int,
           writes: int, expected: dict[str, int]) -> None:
    print(f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs (load average "
          f"{os.getloadavg()[0]:.1f}), {args.streams} streams over {args.jobs} jobs, "
          f"{args.clients} hey clients for {args.seconds} s\n")
    print(f"{'API process':34}{'RSS MiB':>9}{'threads':>9}{'DB connections':>16}")
    for name, figures in (("after the load, no stream", before),
                          ("the streams open, idle", opened),
                          ("after the load with the streams", after)):
        print(f"{name:34}{figures['rss_mib']:>9}{figures['threads']:>9}"
              f"{figures['db_connections']:>16}")
    if rss:
        print(f"RSS through the loaded run: {min(rss)} to {max(rss)} MiB ({len(rss)} samples)")
    print(f"\nstreams opened {streams.opened}, refused {len(streams.failed)} "
          f"{streams.failed[:3] or ''}; open at the end: {still_open} (client), "
          f"{established} established sockets on the server (streams + keep-alive)")
    exact = sum(received == expected[path]
                for path, received in zip(streams.paths, streams.received, strict=True))
    job_streams = [received for path, received in zip(streams.paths, streams.received,
                                                      strict=True) if "/events" in path]
    print(f"{writes} writes of 1 event + 2 metric points, then 1 cancel; streams that "
          f"received exactly what was written for them: {exact} of {len(streams.paths)}; "
          f"messages per job stream: median {statistics.median(job_streams):.0f}, max "
          f"{max(job_streams)}")
    print(f"\n{'GET /v1/jobs/{id}':34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}"
          "  answers, errors")
    for name, result in (("no stream open", quiet), (f"{args.streams} streams open", loaded)):
        print(f"{name:34}{result.requests_per_second:>8.0f}{result.p50_ms:>9.1f}"
              f"{result.p99_ms:>9.1f}{result.cpu_ms_per_request:>12.2f}  {result.answered}, "
              f"{result.errors or 'none'}")
    print(f"/healthz with the streams open: median {loaded.median_health_ms:.0f} ms, slowest "
          f"{loaded.slowest_health_ms:.0f} ms")


if __name__ == "__main__":
    main()
