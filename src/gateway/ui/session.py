"""Who is signed in to the admin UI, and the CSRF token of their forms.

Every visitor carries one random cookie (`gateway_admin`, `HttpOnly`, `SameSite=Strict`,
`Path=/admin`, `Secure` behind an https `PUBLIC_URL`). A sign-in stores, in the cache under
a hash of that cookie, the principal the token proved (never the token) for at most
`ADMIN_UI_SESSION_TTL` seconds and never past the token's own `exp`; signing in gives a new
cookie, so a cookie planted before sign-in is worth nothing after it.

The CSRF token of a page is an HMAC of the cookie with a key derived from the store's
encryption key: the same in every worker and instance, stored nowhere, and unknown to a
page of another site, which can neither read the cookie nor compute the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.cacheuse import CacheUse
from gateway.contracts import Principal

COOKIE = "gateway_admin"
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf"


@dataclass(frozen=True, slots=True)
class UiSession:
    """One signed-in browser: who it is and until when."""

    subject: str
    scopes: tuple[str, ...]
    claims: dict[str, Any]
    anonymous: bool
    expires: float

    @property
    def principal(self) -> Principal:
        return Principal(
            subject=self.subject,
            scopes=frozenset(self.scopes),
            claims=self.claims,
            anonymous=self.anonymous,
        )

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "subject": self.subject,
                "scopes": list(self.scopes),
                "claims": self.claims,
                "anonymous": self.anonymous,
                "expires": self.expires,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> UiSession:
        data = orjson.loads(raw)
        return cls(
            subject=data["subject"],
            scopes=tuple(data["scopes"]),
            claims=data["claims"],
            anonymous=data["anonymous"],
            expires=data["expires"],
        )


class UiSessions:
    """The admin UI's sessions in the cache, and its CSRF tokens."""

    def __init__(self, use: CacheUse, key: bytes, ttl: float, secure: bool) -> None:
        self.use = use
        self._key = key
        self.ttl = ttl
        self.secure = secure

    @staticmethod
    def _cache_key(cookie: str) -> str:
        return "ui-session:" + hashlib.sha256(cookie.encode()).hexdigest()

    def cookie_of(self, request: web.Request) -> str | None:
        value = request.cookies.get(COOKIE)
        return value if value and 20 <= len(value) <= 100 else None

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, cookie: str | None, given: object) -> bool:
        if cookie is None or not isinstance(given, str):
            return False
        return hmac.compare_digest(self.csrf_token(cookie), given)

    def set_cookie(self, response: web.StreamResponse, cookie: str) -> None:
        response.set_cookie(
            COOKIE,
            cookie,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=self.secure,
        )

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(32)

    async def load(self, cookie: str | None) -> UiSession | None:
        """The session of this cookie, or None (not signed in, expired, cache down)."""
        if cookie is None:
            return None
        raw = await self.use.run(self.use.cache.get(self._cache_key(cookie)))
        if raw is None:
            return None
        session = UiSession.from_bytes(raw)
        return session if session.expires > time.time() else None

    async def save(self, cookie: str, session: UiSession) -> None:
        left = session.expires - time.time()
        if left > 0:
            raw = session.to_bytes()
            await self.use.run(self.use.cache.set(self._cache_key(cookie), raw, left))

    async def sign_in(self, principal: Principal) -> tuple[str, UiSession]:
        """A new cookie and its session for `principal`."""
        expires = time.time() + self.ttl
        token_exp = principal.claims.get("exp") if principal.claims else None
        if isinstance(token_exp, int | float) and not isinstance(token_exp, bool):
            expires = min(expires, float(token_exp))
        session = UiSession(
            subject=principal.subject,
            scopes=tuple(sorted(principal.scopes)),
            claims=dict(principal.claims),
            anonymous=principal.anonymous,
            expires=expires,
        )
        cookie = self.new_cookie()
        await self.save(cookie, session)
        return cookie, session

    async def sign_out(self, cookie: str) -> None:
        await self.use.run(self.use.cache.delete(self._cache_key(cookie)))
