"""The secret handed to authenticators: `JWT_SECRET_KEY`, or one generated once and kept in
the store, so that every worker, every instance and the command line agree on it."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from gateway.store import Store, open_store

if TYPE_CHECKING:
    from gateway.settings import Settings

JWT_SECRET_NAME = "jwt_secret"


def new_secret() -> str:
    return secrets.token_urlsafe(48)


async def stored_secret(store: Store) -> str:
    """The store's secret, created by whichever process asks first."""
    return await store.get_or_create_secret(JWT_SECRET_NAME, new_secret)


async def auth_secret(settings: Settings) -> str:
    """The configured secret, else the stored one; opens the store only to read it.

    For commands run outside the server, such as `token create`.
    """
    if settings.jwt_secret_key:
        return settings.jwt_secret_key
    store = open_store(settings.database_url, settings.auth_encryption_secret)
    await store.start()
    try:
        return await stored_secret(store)
    finally:
        await store.close()
