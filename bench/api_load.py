"""API load benchmark: the service under 100 concurrent clients, against a hello-world app.

    python bench/api_load.py [--clients 100] [--seconds 15] [--processes 1]

Starts `finetune api` on PostgreSQL + Redis (a fresh database, the rate limit raised out of
the way), uploads a dataset and submits one job (no worker runs, so it stays queued), then
runs `hey` against authenticated `GET /v1/jobs/{id}`. Runs the same load against a
hello-world FastAPI app on the same uvicorn that returns a body of the same size. While each
is saturated, a probe reads `/healthz` (and, for the service, `/readyz`) every half second.
Prints requests/s, p50 and p99 of both, the ratios against the targets, errors and timeouts,
and the slowest health answer. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import redis

# Run from the repository's root: the tests' helpers make the database and the job.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.api.helpers import submit_a_job
from tests.conftest import postgres_database

REDIS = os.environ.get("FT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
HELLO_APP = '''
from fastapi import FastAPI, Response

app = FastAPI()
BODY = open({body_file!r}, "rb").read()


@app.get("/hello")
async def hello() -> Response:
    return Response(BODY, media_type="application/json")
'''
TARGET_THROUGHPUT = 0.25
TARGET_P99 = 4.0


@dataclass
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    answered: dict[int, int]
    errors: dict[str, int]
    slowest_health_ms: float
    median_health_ms: float = float("nan")
    # The server process's CPU time (user + system) per answered request.
    cpu_ms_per_request: float = float("nan")
    slowest_ready_ms: float | None = None
    ready_answers: tuple[int, ...] = ()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--processes", type=int, default=1,
                        help="API processes of both the service and the hello-world app "
                             "(uvicorn's --workers)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ft-load-") as scratch, postgres_database() as url:
        workdir = Path(scratch)
        service, body = load_the_service(url, workdir, args.clients, args.seconds,
                                         args.processes)
        hello = load_hello_world(body, workdir, args.clients, args.seconds, args.processes)
    redis.Redis.from_url(REDIS).flushdb()
    report(service, hello, args.clients, args.seconds, args.processes)


def load_the_service(database_url: str, workdir: Path, clients: int, seconds: int,
                     processes: int) -> tuple[LoadResult, bytes]:
    env = {**os.environ, "FT_DATABASE_URL": database_url, "FT_BROKER_URL": REDIS,
           "FT_STORAGE_DIR": str(workdir / "storage"), "FT_RATE_LIMIT_PER_MINUTE": "100000000"}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=workdir,
                   check=True, capture_output=True)
    key = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--project",
                          "bench"], env=env, cwd=workdir, check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    with server([sys.executable, "-m", "app.cli", "api", "--port", "18731", "--workers",
                 str(processes)], env, workdir, "http://127.0.0.1:18731") as (base, pid):
        headers = {"Authorization": f"Bearer {key}"}
        job_url = f"{base}/v1/jobs/{submit_a_job(base, headers, workdir)}"
        body = httpx.get(job_url, headers=headers).content
        result = saturate(job_url, headers, base, pid, clients, seconds, probe_ready=True)
    return result, body


def load_hello_world(body: bytes, workdir: Path, clients: int, seconds: int,
                     processes: int) -> LoadResult:
    (workdir / "body.json").write_bytes(body)
    (workdir / "hello.py").write_text(HELLO_APP.format(body_file=str(workdir / "body.json")))
    # uvicorn's defaults, access log included, as `finetune api` runs it.
    command = [sys.executable, "-m", "uvicorn", "hello:app", "--app-dir", str(workdir),
               "--port", "18732", "--workers", str(processes)]
    with server(command, dict(os.environ), workdir, "http://127.0.0.1:18732") as (base, pid):
        return saturate(f"{base}/hello", {}, base, pid, clients, seconds, probe_ready=False,
                        health_path="/hello")


def saturate(url: str, headers: dict[str, str], base: str, pid: int, clients: int,
             seconds: int, *,
             probe_ready: bool, health_path: str = "/healthz") -> LoadResult:
    stop = threading.Event()
    health_ms: list[float] = []
    ready: list[tuple[float, int]] = []

    def probe() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.wait(0.5):
                health_ms.append(timed(client, health_path)[0])
                if probe_ready:
                    ready.append(timed(client, "/readyz"))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    command = ["hey", "-z", f"{seconds}s", "-c", str(clients), "-t", "20"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    cpu_before = cpu_seconds(pid)
    output = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    cpu_used = cpu_seconds(pid) - cpu_before
    stop.set()
    prober.join()
    result = parse_hey(output)
    result.cpu_ms_per_request = 1000 * cpu_used / max(1, sum(result.answered.values()))
    result.slowest_health_ms = max(health_ms, default=float("nan"))
    result.median_health_ms = statistics.median(health_ms) if health_ms else float("nan")
    if probe_ready:
        result.slowest_ready_ms = max((ms for ms, _ in ready), default=float("nan"))
        result.ready_answers = tuple(sorted({status for _, status in ready}))
    return result


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server: the process and, with several API processes,
    the ones it started."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


def timed(client: httpx.Client, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        status = client.get(path).status_code
    except httpx.HTTPError:
        status = 0
    return (time.perf_counter() - started) * 1000, status


def parse_hey(output: str) -> LoadResult:
    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else float("nan")

    answered = {int(code): int(count) for code, count
                in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors_part = output.split("Error distribution:", 1)[1] if "Error distribution:" in output \
        else ""
    errors = {message.strip(): int(count) for count, message
              in re.findall(r"\[(\d+)\]\s+(.+)", errors_part)}
    return LoadResult(requests_per_second=number(r"Requests/sec:\s+([\d.]+)"),
                      p50_ms=number(r"50%+ in ([\d.]+) secs") * 1000,
                      p99_ms=number(r"99%+ in ([\d.]+) secs") * 1000,
                      answered=answered, errors=errors, slowest_health_ms=float("nan"))


@contextmanager
def server(command: list[str], env: dict[str, str], workdir: Path,
           base: str) -> Iterator[tuple[str, int]]:
    with (workdir / "server.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"{command} did not start: see {workdir / 'server.log'}")
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=120)


def report(service: LoadResult, hello: LoadResult, clients: int, seconds: int,
           processes: int) -> None:
    print(f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, {clients} concurrent "
          f"clients for {seconds} s (hey), {processes} API process(es) each\n")
    print(f"{'':30}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}  answers, errors")
    for name, result in (("service GET /v1/jobs/{id}", service), ("hello-world app", hello)):
        print(f"{name:30}{result.requests_per_second:>8.0f}{result.p50_ms:>9.1f}"
              f"{result.p99_ms:>9.1f}{result.cpu_ms_per_request:>12.2f}  {result.answered}, "
              f"{result.errors or 'none'}")
    throughput = service.requests_per_second / hello.requests_per_second
    p99 = service.p99_ms / hello.p99_ms
    errors = sum(service.errors.values()) + sum(
        count for status, count in service.answered.items() if status != 200)
    print(f"\nthroughput ratio {throughput:.2f} (target >= {TARGET_THROUGHPUT}): "
          f"{'met' if throughput >= TARGET_THROUGHPUT else 'MISSED'}")
    print(f"p99 ratio        {p99:.2f} (target <= {TARGET_P99}): "
          f"{'met' if p99 <= TARGET_P99 else 'MISSED'}")
    print(f"errors/timeouts  {errors} (target 0): {'met' if errors == 0 else 'MISSED'}")
    print(f"/healthz while saturated: median {service.median_health_ms:.0f} ms, slowest "
          f"{service.slowest_health_ms:.0f} ms (target < 100)")
    print(f"/readyz while saturated: slowest {service.slowest_ready_ms:.0f} ms, "
          f"answers {service.ready_answers}")


if __name__ == "__main__":
    main()
