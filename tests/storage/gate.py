"""A TCP proxy in front of the test store that can be shut and opened again: the store going
away for a while (connections refused and cut) while moto keeps its objects."""

from __future__ import annotations

import socket
import threading


class Gate:
    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.is_open = True
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def shut(self) -> None:
        """Cut every connection; new ones are closed as soon as they are accepted."""
        with self.lock:
            self.is_open = False
            for connection in self.connections:
                _close(connection)
            self.connections.clear()

    def open(self) -> None:
        with self.lock:
            self.is_open = True

    def close(self) -> None:
        self.shut()
        _close(self.listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self.lock:
                if not self.is_open:
                    _close(client)
                    continue
                upstream = socket.create_connection(self.target)
                self.connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    _close(source)
    _close(sink)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()
