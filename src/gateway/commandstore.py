"""The store as a command run outside the server opens it, for plugins' commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.settings import Settings
from gateway.store import Store, open_store


@asynccontextmanager
async def command_store(settings: Settings) -> AsyncIterator[Store]:
    """The started store of `DATABASE_URL`, closed on leaving."""
    store = open_store(settings.database_url, settings.auth_encryption_secret)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
