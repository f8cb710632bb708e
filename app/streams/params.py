"""The parameters and the OpenAPI answers of the streamed routes (`?stream=true`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query
from pydantic import WithJsonSchema

StreamQuery = Annotated[bool, Query(
    description="Answer `text/event-stream`: the changes live, as they are written (see the "
                "200 answer)")]
_RESUME = ("With `stream=true`: resume after this `id:` of an earlier stream (clients send it "
           "when they reconnect)")
JOB_CURSOR, EVENT_CURSOR = r"^[0-9]{1,10}(\.[0-9]{1,10})?$", r"^[0-9]{1,10}$"
# Documented as a plain string: an absent header is no `null` a client could send.
JobCursorHeader = Annotated[str | None, WithJsonSchema({"type": "string",
                                                        "pattern": JOB_CURSOR}),
                            Header(alias="Last-Event-ID", pattern=JOB_CURSOR,
                                   description=_RESUME + ": `<event_id>.<metric_point_id>`")]
EventCursorHeader = Annotated[str | None, WithJsonSchema({"type": "string",
                                                          "pattern": EVENT_CURSOR}),
                              Header(alias="Last-Event-ID", pattern=EVENT_CURSOR,
                                     description=_RESUME + ": an event id")]


def _event_stream_answer(description: str, names: list[str],
                         example: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI of a streamed 200: each server-sent event, as `itemSchema` describes one."""
    event = {"type": "object", "properties": {
        "event": {"type": "string", "enum": names},
        "id": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "minimum": 0}}}
    return {200: {"description": description,
                  "content": {"text/event-stream": {"itemSchema": event, "example": example}}}}


JOB_STREAM_ANSWER = _event_stream_answer(
    "A page of events as JSON; with `stream=true`, the job's events (`event: event`) and "
    "metric points (`event: metric`) as server-sent events until the job ends (`event: end`), "
    "each with `id: <event_id>.<metric_point_id>`, and a `: keep-alive` comment every 15 s.",
    ["event", "metric", "end"],
    'retry: 2000\n\nevent: event\nid: 12.0\ndata: {"id":12,"kind":"started",'
    '"message":"Attempt 1 started on gpu-1","data":{"attempt":1},'
    '"created_at":"2026-12-03T10:00:00Z"}\n\nevent: metric\nid: 12.40\n'
    'data: {"step":10,"epoch":0.1,"value":0.52,"name":"loss"}\n\n')
CHANGE_STREAM_ANSWER = _event_stream_answer(
    "A page of jobs as JSON; with `stream=true`, every status change of the project's jobs "
    "(`event: job`, `id: <event_id>`) as server-sent events, with a `: keep-alive` comment "
    "every 15 s; it never ends by itself.",
    ["job"],
    'retry: 2000\n\nevent: job\nid: 57\ndata: {"id":"job_1f2e","project_id":"proj_5ece",'
    '"status":"succeeded","progress":{"step":339,"total_steps":339,"epoch":3.0,'
    '"percent":100.0,"eta_seconds":0.0},"changed_at":"2026-12-03T10:20:00Z"}\n\n')
