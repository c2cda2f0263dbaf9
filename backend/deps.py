"""FastAPI dependencies as ``Annotated`` aliases; the objects live on ``app.state``
(created in :func:`backend.app.lifespan`)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import redis.asyncio as aioredis
from fastapi import Depends, Request

from backend.auth import User, current_user, require_admin
from contracts.settings import Settings
from contracts.storage import BlobStore


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


def _store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
RedisDep = Annotated[aioredis.Redis, Depends(_redis)]
StoreDep = Annotated[BlobStore, Depends(_store)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminKey = Annotated[None, Depends(require_admin)]
