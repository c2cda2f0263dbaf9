"""jsonb through the pool's codecs (orjson): what goes in comes back, as ``json`` would have
written it."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from contracts.db.pool import encode_json, init_connection


def test_encode_json_writes_what_json_dumps_means() -> None:
    value = {"objects": [{"id": 1, "area": 12.5, "polygon": [[0, 0], [3, 4]]}], 7: "seven"}
    assert json.loads(encode_json(value)) == json.loads(json.dumps(value))


def test_jsonb_round_trips_through_postgresql(database_url: str) -> None:
    value = {"width": 256, "objects": [{"label": 3, "centroid": [1.25, 2.5]}], "note": "µm²"}

    async def go() -> object:
        conn = await asyncpg.connect(database_url)
        try:
            await init_connection(conn)
            return await conn.fetchval("SELECT $1::jsonb", value)
        finally:
            await conn.close()

    assert asyncio.run(go()) == value
