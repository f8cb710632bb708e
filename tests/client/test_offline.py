"""The CLI's answers when there is no service to talk to, or nothing worth sending it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.client.helpers import UNREACHABLE_URL, finetune


@pytest.mark.parametrize("args", [("jobs", "ls"), ("logs", "job_1", "--follow", "--json")])
def test_an_unreachable_service_is_one_line_and_exit_status_3(args: tuple[str, ...]) -> None:
    result = finetune(*args, url=UNREACHABLE_URL)
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert UNREACHABLE_URL in lines[0]
    assert "finetune up" in lines[0] and "--url" in lines[0] and "FT_URL" in lines[0]


def test_the_url_option_wins_over_the_environment() -> None:
    result = finetune("jobs", "ls", "--url", "http://127.0.0.1:2", url=UNREACHABLE_URL)
    assert result.returncode == 3 and "http://127.0.0.1:2" in result.stderr


def test_a_url_without_scheme_is_a_usage_error() -> None:
    result = finetune("jobs", "ls", "--url", "localhost:8000")
    assert result.returncode == 2
    assert "http://" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (None, "spec file not found"),
    ("task: [unclosed\n", "is not valid YAML"),
    ("- a list\n", "must hold a mapping"),
])
def test_a_bad_spec_file_is_reported_before_anything_is_sent(tmp_path: Path, content: str | None,
                                                             message: str) -> None:
    spec = tmp_path / "spec.yaml"
    if content is not None:
        spec.write_text(content)
    result = finetune("submit", str(spec))
    assert result.returncode == 2
    assert message in result.stderr and str(spec) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_malformed_set_is_a_usage_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"task": "text-classification"}')
    result = finetune("submit", str(spec), "--set", "hyperparameters.learning_rate")
    assert result.returncode == 2
    assert "dotted.path=value" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert finetune("jobs").returncode == 2
    assert finetune("jobs", "ls", "--status", "done").returncode == 2
