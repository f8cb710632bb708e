"""No code but app/jobs/lifecycle.py writes a job's status: every move goes through its
table. The scan reads app/ and worker/ as syntax trees."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THE_WRITER = ROOT / "app" / "jobs" / "lifecycle.py"
RAW_SQL = re.compile(r"(update\s+job\s+set|insert\s+into\s+job\s*\().*\bstatus\b",
                     re.IGNORECASE | re.DOTALL)


def status_writes(source: str) -> list[str]:
    """Where `source` writes Job.status: Job(status=...), update(Job)...values(status=...), a
    'status' key in a module that updates Job, `x.status = ...` or setattr(x, "status", ...)
    in a module that uses Job, and raw SQL."""
    tree = ast.parse(source)
    uses_job = any(isinstance(node, ast.Name) and node.id == "Job" for node in ast.walk(tree))
    writes_job = any(_writes_job(node) for node in ast.walk(tree) if isinstance(node, ast.Call))
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call):
            keywords = {keyword.arg for keyword in node.keywords}
            if _names_job(node.func) and "status" in keywords:
                found.append(f"line {line}: Job(status=...)")
            if (isinstance(node.func, ast.Attribute) and node.func.attr == "values"
                    and _writes_job(node.func.value)
                    and ("status" in keywords or _dict_has_status(node.args))):
                found.append(f"line {line}: update(Job).values(status=...)")
            if (isinstance(node.func, ast.Name) and node.func.id == "setattr"
                    and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == "status" and uses_job):
                found.append(f"line {line}: setattr(..., 'status', ...)")
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                   else [])
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and part.attr == "status" and uses_job:
                    found.append(f"line {line}: .status = ...")
        if writes_job and _status_key(node):
            found.append(f"line {line}: a 'status' key beside update(Job)")
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and RAW_SQL.search(node.value)):
            found.append(f"line {line}: SQL writing job.status")
    return found


def _names_job(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "Job") or (
        isinstance(node, ast.Attribute) and node.attr == "__table__" and _names_job(node.value))


def _writes_job(chain: ast.expr) -> bool:
    """Whether a method chain starts at update(Job) or insert(Job)."""
    for node in ast.walk(chain):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("update", "insert") and node.args
                and _names_job(node.args[0])):
            return True
    return False


def _status_key(node: ast.AST) -> bool:
    """A values dict built apart: {"status": ...}, values["status"] = ..., dict(status=...)."""
    if isinstance(node, ast.Dict):
        return _dict_has_status([node])
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "status"
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "dict" and any(k.arg == "status" for k in node.keywords))


def _dict_has_status(args: list[ast.expr]) -> bool:
    return any(isinstance(arg, ast.Dict) and any(
        isinstance(key, ast.Constant) and key.value == "status" for key in arg.keys)
        for arg in args)


@pytest.mark.parametrize("source", [
    "Job(id='x', status='queued')",
    "session.execute(update(Job).where(Job.id == i).values(status=JobStatus.FAILED))",
    "update(Job.__table__).values({'status': 'failed'})",
    "session.execute(insert(Job).values(id='x', status='queued'))",
    "job = session.get(Job, i)\njob.status = 'failed'",
    "job = session.get(Job, i)\njob.status, job.step = 'failed', 0",
    "job = session.get(Job, i)\nsetattr(job, 'status', 'failed')",
    "session.execute(text('UPDATE job SET step = 0, status = :s WHERE id = :i'))",
    "values = {}\nvalues['status'] = 'failed'\nsession.execute(update(Job).values(**values))",
    "session.execute(update(Job).values(**dict(status='failed')))",
])
def test_the_scan_finds_each_way_of_writing_a_status(source: str) -> None:
    assert status_writes(source)


def test_only_the_lifecycle_writes_a_jobs_status() -> None:
    scanned = [path for folder in ("app", "worker") for path in (ROOT / folder).rglob("*.py")]
    assert THE_WRITER in scanned
    writes = {str(path.relative_to(ROOT)): status_writes(path.read_text())
              for path in scanned if path != THE_WRITER}
    assert {path: found for path, found in writes.items() if found} == {}
    # The scan sees the writer's own writes, both kinds.
    assert {finding.split(": ", 1)[1] for finding in status_writes(THE_WRITER.read_text())} \
        == {".status = ...", "a 'status' key beside update(Job)"}
