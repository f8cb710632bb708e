"""How the training code tells the outside world what happened, without knowing who listens."""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol


class EventSink(Protocol):
    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None: ...


class PrintSink:
    """Events as JSON lines on stderr: the standalone entry point's sink."""

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        print(json.dumps({"event": kind, "message": message, "data": data or {}}),
              file=sys.stderr, flush=True)


class SilentSink:
    """No events: a rank of a multi-device job other than the main one, which reports."""

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        return None
