"""Every error code is documented in the README, job codes with the code's retry behaviour."""

import re
from pathlib import Path

from app.error_codes import JOB_ERRORS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Codes set by an error class's default or by the app's exception handlers, not by a
# `code="..."` where the error is raised.
DEFAULT_CODES = {"not_found", "invalid_request", "invalid_multipart", "range_not_satisfiable",
                 "unknown_field", "invalid_json", "method_not_allowed", "internal_error",
                 "not_ready", "conflict", "database_unavailable"}


def test_every_job_error_code_is_in_the_readme_table() -> None:
    for entry in JOB_ERRORS.values():
        rows = [line for line in README.splitlines() if line.startswith(f"| `{entry.code}` |")]
        assert rows, f"{entry.code} is missing from the README's job error table"
        retry = "yes" if entry.retryable else "no"
        assert f"| {retry} |" in rows[0], f"{entry.code}: the README says otherwise on retry"


def test_every_request_error_code_is_in_the_readme_table() -> None:
    raised = {match for path in (ROOT / "app").rglob("*.py") if path.name != "error_codes.py"
              for match in re.findall(r'code="([a-z_]+)"', path.read_text())}
    documented = set(re.findall(r"^\| \d{3} \| ([^|]+)\|", README, flags=re.MULTILINE))
    documented_codes = {code for cell in documented for code in re.findall(r"`([a-z_]+)`", cell)}
    # The dry run's warnings: a table of two columns, code and when.
    warnings = set(re.findall(r"^\| `([a-z_]+)` \| [^|]+\|$", README, flags=re.MULTILINE))
    must_document = (raised - set(JOB_ERRORS) - warnings) | DEFAULT_CODES
    assert must_document - documented_codes == set()
