"""The secret handed to authenticators: `JWT_SECRET_KEY`, or one generated once into a key
file (see `gateway.keyfile`), so that every worker, every instance sharing the file and the
command line agree on it without the database holding it."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from gateway.keyfile import JWT_KEY_FILE, secrets_dir
from gateway.logconfig import configure_logging
from gateway.store import Store, open_store

if TYPE_CHECKING:
    from gateway.settings import Settings

JWT_SECRET_NAME = "jwt_secret"
"""Where earlier versions kept the generated secret in the store; moved to the key file."""


def new_secret() -> str:
    return secrets.token_urlsafe(48)


async def jwt_secret(settings: Settings, store: Store) -> str:
    """The configured secret, else the key file's, created by whichever process asks first."""
    if settings.jwt_secret_key:
        return settings.jwt_secret_key
    return await store.secret_from_file(JWT_SECRET_NAME, secrets_dir(settings) / JWT_KEY_FILE)


async def auth_secret(settings: Settings) -> str:
    """`jwt_secret` for commands run outside the server, such as `token create`; opens the
    store only to move a secret it still keeps."""
    if settings.jwt_secret_key:
        return settings.jwt_secret_key
    # To standard error, like the server's: a warning that the key file was made must not
    # mix with what the command prints.
    configure_logging(settings)
    store = open_store(
        settings.database_url, settings.auth_encryption_secret, secrets_dir(settings)
    )
    await store.start()
    try:
        return await jwt_secret(settings, store)
    finally:
        await store.close()
