"""Numbered SQL migrations (``contracts/db/migrations/NNN_name.sql``), applied once, in order.

Each file runs in its own transaction together with its row in ``schema_migrations``, under a
session-level PostgreSQL advisory lock, so N gateway replicas starting together migrate once:
the first applies, the others wait for the lock and then find nothing left to do. A file, once
applied, is never edited: add the next number instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

MIGRATION_LOCK_KEY = 0x63656C6C7365674D  # b"cellsegM": pg_advisory_lock(bigint) key

_FILE_RE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by version.

    Raises:
        ValueError: a ``.sql`` file is misnamed or two files share a version.
    """
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} is not named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(
                f"migrations {found[version].path.name!r} and {path.name!r} share version {version}"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


async def apply_migrations(
    conn_or_dsn: asyncpg.Connection | str, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Apply every migration not yet recorded in ``schema_migrations``.

    Args:
        conn_or_dsn: an open connection (not inside a transaction) or a DSN to connect to.
        directory: where the ``NNN_name.sql`` files are.

    Returns:
        File names applied by this call (empty when the schema was already current).
    """
    if isinstance(conn_or_dsn, str):
        conn = await asyncpg.connect(conn_or_dsn)
        try:
            return await _apply(conn, directory)
        finally:
            await conn.close()
    return await _apply(conn_or_dsn, directory)


async def _apply(conn: asyncpg.Connection, directory: Path) -> list[str]:
    migrations = discover(directory)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in migrations:
            if mig.version in done:
                continue
            sql = mig.path.read_text(encoding="utf-8")
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mig.version,
                    mig.name,
                )
            log.info("applied migration %s", mig.path.name)
            applied_now.append(mig.path.name)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


def migrate(dsn: str) -> list[str]:
    """Synchronous entry for the CLI: :func:`apply_migrations` on ``dsn``."""
    return asyncio.run(apply_migrations(dsn))
