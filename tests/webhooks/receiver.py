"""A real HTTP receiver on loopback: it records every POST and answers as a test tells it."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HANG = "hang"  # an answer: keep the request open until the test releases it


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` alone, and its key (openssl's command line)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Receiver:
    """POST receiver; `answers` are given in order (a status or HANG), then 200. With `tls`
    (certificate, key) it speaks https."""

    def __init__(self, *answers: int | str, tls: tuple[Path, Path] | None = None) -> None:
        self.answers: deque[int | str] = deque(answers)
        self.received: list[Received] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.received.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    answer = receiver.answers.popleft() if receiver.answers else 200
                if answer == HANG:
                    receiver.released.wait(60)
                    return
                self.send_response(int(answer))
                if answer in (301, 302, 307, 308):
                    self.send_header("location", "http://127.0.0.1:1/elsewhere")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}/hooks/finetune"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.received)} requests, not {count}")

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
