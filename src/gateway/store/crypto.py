"""Encryption at rest for upstream header values (API keys, bearer tokens).

A header dict is serialised to JSON and sealed with Fernet (AES-128-CBC plus HMAC-SHA256).
The Fernet key is derived from `AUTH_ENCRYPTION_SECRET`, or from a random secret the store
generates once, with PBKDF2-HMAC-SHA256 over the fixed salt `SALT`. The salt is fixed on
purpose: every worker and every gateway instance must derive the same key from the same
secret without sharing anything else. Changing the salt or the iteration count makes every
stored header unreadable, so both are part of the on-disk format.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from gateway.store import StoreError

SALT = b"aio-mcp-gateway/upstream-headers/v1"
ITERATIONS = 600_000  # OWASP 2023 guidance for PBKDF2-HMAC-SHA256


@functools.lru_cache(maxsize=8)
def derive_key(secret: str) -> bytes:
    """The urlsafe-base64 Fernet key for `secret`; cached because PBKDF2 is slow by design."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=SALT, iterations=ITERATIONS)
    return base64.urlsafe_b64encode(kdf.derive(secret.encode("utf-8")))


def purpose_key(secret: str, purpose: str) -> bytes:
    """32 bytes for `purpose` from `secret` by HKDF-SHA256, `purpose` as its info: keys for
    different purposes tell nothing of each other, nor of `secret` or the Fernet key."""
    info = f"aio-mcp-gateway/{purpose}/v1".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        secret.encode("utf-8")
    )


class HeaderCipher:
    """Seals and opens the `headers_enc` column of an upstream."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an encryption secret must not be empty")
        self._fernet = Fernet(derive_key(secret))

    def encrypt_headers(self, headers: Mapping[str, str]) -> str:
        # No headers store an empty string, so a changed secret only matters for
        # upstreams that actually carry credentials.
        if not headers:
            return ""
        return self._fernet.encrypt(orjson.dumps(dict(headers))).decode("ascii")

    def decrypt_headers(self, token: str) -> dict[str, str]:
        if not token:
            return {}
        try:
            plain = self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, ValueError):
            raise StoreError(
                "cannot decrypt stored upstream headers: the encryption key differs from the "
                "one they were written with (was AUTH_ENCRYPTION_SECRET changed or removed?)"
            ) from None
        headers = orjson.loads(plain)
        if not isinstance(headers, dict):
            raise StoreError("stored upstream headers are not a JSON object")
        return {str(key): str(value) for key, value in headers.items()}
