"""Key files: where the JWT signing secret and the encryption key live when the environment
does not give them, outside the database they protect.

A file is made readable by its owner only (0600) and appears whole or not at all: it is
written under a temporary name and then linked to its own name, which fails if the name is
taken. So of the workers that start together exactly one creates it, and the others read
what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from gateway.settings import Settings

JWT_KEY_FILE = "jwt_secret.key"
ENCRYPTION_KEY_FILE = "encryption.key"


def default_secrets_dir(database_url: str) -> Path:
    """The SQLite database's directory, else the working directory."""
    if database_url.startswith("sqlite://"):
        # Imported here: the store imports this module.
        from gateway.store.sqlite import sqlite_path

        return Path(sqlite_path(database_url)).parent
    return Path.cwd()


def secrets_dir(settings: Settings) -> Path:
    """`SECRETS_DIR`, else `default_secrets_dir`."""
    if settings.secrets_dir:
        return Path(settings.secrets_dir)
    return default_secrets_dir(settings.database_url)


def read_key(path: Path) -> str | None:
    """The file's secret, or None when there is no file."""
    try:
        value = path.read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    if not value:
        raise OSError(f"key file {path} is empty")
    return value


def create_key(path: Path, value: str) -> bool:
    """Write `value` to `path` unless it exists; True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(value + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def read_or_create_key(path: Path, value: str) -> tuple[str, bool]:
    """The file's secret, writing `value` first if there is none; and whether we wrote it."""
    existing = read_key(path)
    if existing is not None:
        return existing, False
    created = create_key(path, value)
    found = read_key(path)
    if found is None:
        raise OSError(f"key file {path} vanished while being created")
    return found, created
