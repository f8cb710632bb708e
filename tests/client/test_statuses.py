"""The client names the job statuses itself (it imports nothing of the server): they must be
the server's."""

from __future__ import annotations

from app.client.commands import JOB_STATUSES
from app.client.http import TERMINAL_STATUSES
from app.jobs import lifecycle
from app.models import JobStatus


def test_the_client_knows_the_servers_statuses() -> None:
    assert set(JOB_STATUSES) == {status.value for status in JobStatus}
    assert set(TERMINAL_STATUSES) == {status.value for status in lifecycle.TERMINAL}
