"""``python -m backend``: migrate and create-user against the session database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.backend.helpers import SyncDb

ROOT = Path(__file__).resolve().parents[2]


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_and_create_user(database_url: str, db: SyncDb) -> None:
    migrated = run_cli(database_url, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout == ""  # diagnostics go to stderr

    made = run_cli(database_url, "create-user", "Dr. Cell", "--admin")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("csk_") and "\n" not in key  # the key, once, and nothing else
    row = db.fetch(
        "SELECT name, is_admin FROM users WHERE api_key_hash = $1",
        hashlib.sha256(key.encode()).hexdigest(),
    )[0]
    assert (row["name"], row["is_admin"]) == ("Dr. Cell", True)


def test_invalid_settings_stop_with_the_variable_named(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "MAX_UPLOAD_MB": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "backend", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "MAX_UPLOAD_MB" in done.stderr
