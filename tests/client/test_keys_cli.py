"""`finetune keys create|ls|revoke`: the operator's commands, straight on the database."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.service import service_env


def keys(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "keys", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    settings = service_env({"FT_DATABASE_URL": f"sqlite:///{tmp_path / 'ft.sqlite'}"})
    migrated = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=settings,
                              cwd=tmp_path, capture_output=True, text=True, check=False)
    assert migrated.returncode == 0, migrated.stderr
    return settings


def test_create_list_revoke(env: dict[str, str], tmp_path: Path) -> None:
    created = keys("create", "--project", "nlp-team", "--name", "ci", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ftk_[A-Za-z0-9]{48}", secret)
    admin = keys("create", "--project", "ops", "--admin", env=env, cwd=tmp_path)
    assert "admin key" in admin.stdout

    listed = keys("ls", env=env, cwd=tmp_path)
    assert listed.returncode == 0
    assert secret[:12] in listed.stdout and "nlp-team" in listed.stdout
    assert secret[12:] not in listed.stdout, "a key is shown once, at creation"
    only = keys("ls", "--project", "ops", env=env, cwd=tmp_path).stdout
    assert "nlp-team" not in only and "ops" in only

    revoked = keys("revoke", secret[:12], env=env, cwd=tmp_path)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    row = next(line for line in keys("ls", env=env, cwd=tmp_path).stdout.splitlines()
               if line.startswith(secret[:12]))
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s*$", row), row


def test_revoking_an_unknown_prefix_fails(env: dict[str, str], tmp_path: Path) -> None:
    result = keys("revoke", "ftk_nothere1", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "no API key with prefix ftk_nothere1" in result.stdout


def test_bad_project_names_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    for name in ("Upper", "../x", "", "a b"):
        result = keys("create", "--project", name, env=env, cwd=tmp_path)
        assert result.returncode == 2 and "project name" in result.stderr


def test_an_unmigrated_database_is_named(tmp_path: Path) -> None:
    env = service_env({"FT_DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite'}"})
    result = keys("ls", env=env, cwd=tmp_path)
    assert result.returncode != 0 and "finetune migrate" in result.stderr
