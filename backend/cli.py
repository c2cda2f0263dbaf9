"""``python -m backend [serve | migrate | create-user NAME [--admin]]`` (default: serve)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import asyncpg
import uvicorn

from backend.auth import hash_api_key, new_api_key
from contracts.db import repo
from contracts.db.migrate import apply_migrations, migrate
from contracts.settings import Settings, SettingsError, get_settings

log = logging.getLogger("backend")

ASGI_APP = "backend.asgi:create_asgi"
"""The uvicorn factory that ``serve`` runs (switch here to wrap the app, e.g. Socket.IO)."""


def serve(settings: Settings) -> None:
    uvicorn.run(
        ASGI_APP,
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        workers=settings.gateway_workers,
        log_level="info",
    )


async def _create_user(settings: Settings, name: str, is_admin: bool) -> str:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await apply_migrations(conn)
        key = new_api_key()
        await repo.create_user(conn, name, hash_api_key(key), is_admin=is_admin)
    finally:
        await conn.close()
    return key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (uvicorn; GATEWAY_HOST/PORT/WORKERS)")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    create = sub.add_parser("create-user", help="create a user and print its API key once")
    create.add_argument("name", help="the user's display name (1-200 characters)")
    create.add_argument("--admin", action="store_true", help="the user may create users")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = get_settings()
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    command = args.command or "serve"
    try:
        if command == "serve":
            serve(settings)
        elif command == "migrate":
            applied = migrate(settings.database_url)
            log.info("migrations applied: %s", ", ".join(applied) if applied else "none (current)")
        else:
            name = args.name.strip()
            if not 1 <= len(name) <= 200:
                log.error("NAME must be 1 to 200 characters")
                return 2
            key = asyncio.run(_create_user(settings, name, args.admin))
            sys.stdout.write(key + "\n")  # the product output: shown once, never stored
            log.info("created user %r%s", name, " (admin)" if args.admin else "")
    except (OSError, asyncpg.PostgresError) as exc:
        log.error("cannot reach PostgreSQL (DATABASE_URL): %s", exc)
        return 1
    return 0
