"""The client's reading of `text/event-stream`, line by line as the SSE specification says."""

from __future__ import annotations

from app.client.sse import EventStreamParser, ServerSentEvent


def blocks(text: str) -> tuple[list[ServerSentEvent], EventStreamParser]:
    parser = EventStreamParser()
    found = [block for line in text.split("\n") if (block := parser.feed(line)) is not None]
    return found, parser


def test_events_comments_ids_and_retry() -> None:
    found, parser = blocks("retry: 2000\n\nevent: metric\nid: 3.7\ndata: {\"a\":\ndata: 1}\n\n"
                           ": keep-alive\n\n: keep-alive\nid: 9.7\n\ndata:plain\n\n")
    assert found == [ServerSentEvent(None, "", None),
                     ServerSentEvent("metric", '{"a":\n1}', "3.7"),
                     ServerSentEvent(None, "", "3.7"),
                     ServerSentEvent(None, "", "9.7"),
                     ServerSentEvent("message", "plain", "9.7")]
    assert parser.retry_seconds == 2.0 and parser.last_id == "9.7"


def test_blank_lines_alone_and_odd_fields_dispatch_nothing() -> None:
    found, parser = blocks("\n\nretry: soon\nid: a\0b\nunknown: x\n\n")
    assert found == [ServerSentEvent(None, "", None)]
    assert parser.retry_seconds is None and parser.last_id is None
