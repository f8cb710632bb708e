"""Reading a `text/event-stream` answer line by line, as the SSE specification says."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One block of the stream. `event` is None for a block without data (a heartbeat, or
    the cursor alone): it dispatches nothing but shows that the stream is alive."""

    event: str | None
    data: str
    # The stream's last event id after this block: what Last-Event-ID resumes from.
    last_id: str | None


class EventStreamParser:
    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_seconds: float | None = None
        self._event = ""
        self._data: list[str] = []
        self._fields = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line (without its line break); a blank line ends a block and answers it."""
        if not line:
            return self._dispatch()
        self._fields = True
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_seconds = int(value) / 1000
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._fields:
            return None
        block = ServerSentEvent((self._event or "message") if self._data else None,
                                "\n".join(self._data), self.last_id)
        self._event, self._data, self._fields = "", [], False
        return block
