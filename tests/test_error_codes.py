"""Every job error code is documented, with the same retry behaviour as the code."""

from pathlib import Path

from app.error_codes import JOB_ERRORS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_job_error_code_is_in_the_readme_table() -> None:
    for entry in JOB_ERRORS.values():
        rows = [line for line in README.splitlines() if line.startswith(f"| `{entry.code}` |")]
        assert rows, f"{entry.code} is missing from the README's job error table"
        retry = "yes" if entry.retryable else "no"
        assert f"| {retry} |" in rows[0], f"{entry.code}: the README says otherwise on retry"
