"""Numbered migrations: applied once, in order, recorded, safe when replicas start together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from contracts.db.migrate import MIGRATIONS_DIR, apply_migrations, discover
from scripts.local_services import ensure_postgres
from tests.backend.helpers import create_database, drop_database, dsn_for


@pytest.fixture
def empty_db() -> Iterator[str]:
    ensure_postgres()
    name = create_database()
    yield dsn_for(name)
    drop_database(name)


def test_discover_orders_by_version() -> None:
    found = discover(MIGRATIONS_DIR)
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].version == 1 and found[0].name == "init"


def test_discover_refuses_misnamed_or_duplicate_files(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1")
    (tmp_path / "notes.sql").write_text("")
    with pytest.raises(ValueError, match="NNN_name"):
        discover(tmp_path)
    (tmp_path / "notes.sql").unlink()
    (tmp_path / "001_b.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="share version 1"):
        discover(tmp_path)


def test_migrations_apply_once(empty_db: str) -> None:
    first = asyncio.run(apply_migrations(empty_db))
    assert first == [m.path.name for m in discover()]
    assert asyncio.run(apply_migrations(empty_db)) == []

    async def recorded() -> list[tuple[int, str]]:
        conn = await asyncpg.connect(empty_db)
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
            await conn.fetchval("SELECT count(*) FROM jobs")  # the schema is there
        finally:
            await conn.close()
        return [(r["version"], r["name"]) for r in rows]

    assert asyncio.run(recorded()) == [(m.version, m.name) for m in discover()]


def test_replicas_starting_together_migrate_once(empty_db: str) -> None:
    async def four_replicas() -> list[list[str]]:
        return list(await asyncio.gather(*(apply_migrations(empty_db) for _ in range(4))))

    results = asyncio.run(four_replicas())
    assert sorted(results, key=len)[-1] == [m.path.name for m in discover()]
    assert sum(len(r) for r in results) == len(discover())  # each file applied exactly once


def test_a_failing_migration_leaves_nothing_half_done(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE b (x int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        asyncio.run(apply_migrations(empty_db, tmp_path))

    async def tables() -> set[str]:
        conn = await asyncpg.connect(empty_db)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            versions = await conn.fetch("SELECT version FROM schema_migrations")
        finally:
            await conn.close()
        return {r["tablename"] for r in rows} | {f"v{r['version']}" for r in versions}

    assert asyncio.run(tables()) == {"a", "schema_migrations", "v1"}
