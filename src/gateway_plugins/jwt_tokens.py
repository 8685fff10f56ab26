"""Minting the `jwt` authenticator's tokens: `create_token`, and the `JWT_ALGORITHM` and
`MAX_TOKEN_LIFETIME` settings that both minting and verification (`auth_jwt`) obey.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

import jwt

from gateway.plugin import SettingSpec, choice, number

ALGORITHM = SettingSpec(
    "JWT_ALGORITHM", "HS256", choice("HS256", "HS384", "HS512"), "HS256, HS384 or HS512."
)
DEFAULT_MAX_LIFETIME = 30 * 24 * 3600.0
MAX_LIFETIME = SettingSpec(
    "MAX_TOKEN_LIFETIME",
    DEFAULT_MAX_LIFETIME,
    number(above=0),
    "Seconds a token may live (exp - iat); longer tokens are refused and not minted.",
)


def create_token(
    secret: str,
    subject: str,
    scopes: Sequence[str] = (),
    expires_minutes: float = 60,
    algorithm: str = "HS256",
    servers: Sequence[str] = (),
    max_lifetime: float = DEFAULT_MAX_LIFETIME,
) -> str:
    """A signed token for `subject`, with `scope` as an OAuth-style space-separated string
    and a random `jti` by which it can be revoked.

    `servers`, when given, becomes the `servers` claim: the bearer may then reach only those
    virtual servers' MCP endpoints. A lifetime over `max_lifetime` seconds is refused.
    """
    if not secret:
        raise ValueError("secret must not be empty")
    if not subject:
        raise ValueError("subject must not be empty")
    if not expires_minutes > 0:
        raise ValueError(f"expires_minutes must be positive, got {expires_minutes!r}")
    if expires_minutes * 60 > max_lifetime:
        raise ValueError(
            f"expires_minutes={expires_minutes:g} exceeds MAX_TOKEN_LIFETIME"
            f" ({max_lifetime:g} seconds)"
        )
    for scope in scopes:
        if not scope or any(c.isspace() for c in scope):
            raise ValueError(f"scope {scope!r} must be non-empty and contain no spaces")
    now = time.time()
    # Rounding `iat` down and `exp` up must not take a token asked for with the longest
    # lifetime past MAX_TOKEN_LIFETIME, which verification checks on exp - iat.
    expires = min(math.ceil(now + expires_minutes * 60), int(now) + math.floor(max_lifetime))
    payload: dict[str, Any] = {
        "sub": subject,
        "iat": int(now),
        "exp": expires,
        # Hex, so a jti never starts with "-" and reads as an option on a command line.
        "jti": secrets.token_hex(16),
    }
    if scopes:
        payload["scope"] = " ".join(dict.fromkeys(scopes))
    if servers:
        payload["servers"] = list(dict.fromkeys(servers))
    return jwt.encode(payload, secret, algorithm=algorithm)
