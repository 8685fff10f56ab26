"""The authorization server's signing keys, as one worker knows them.

Keys are fetched at start (after discovering `jwks_uri` from the issuer's metadata when it
is not configured), again in the background every `max_age` seconds, and at once when a
token names a key not known yet, at most once every `min_interval` seconds: concurrent
requests for an unknown key share one fetch. A failed fetch or an answer that is not a
usable JWKS keeps the keys known before, so an authorization server that is down does not
stop tokens signed with them. Only asymmetric keys are kept: a JWKS that publishes a
shared secret cannot make the gateway accept HMAC-signed tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson
import structlog

log = structlog.get_logger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_DOCUMENT_BYTES = 256 * 1024
"""The largest metadata or JWKS answer read; real ones are a few kilobytes."""
MAX_KEYS = 100


class JwksError(Exception):
    """The keys could not be fetched or were not a usable JWKS."""


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be: RFC 8414's path-inserted form, then OpenID
    Connect Discovery's appended form."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


def parse_jwks(body: bytes) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by kid ("" for a key without one)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise JwksError("the JWKS answer is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("the JWKS answer has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries[:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in {"RSA", "EC", "OKP"}:
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        if key.algorithm_name not in ASYMMETRIC_ALGORITHMS:
            continue
        kid = entry.get("kid", "")
        keys[kid if isinstance(kid, str) else ""] = key
    if not keys:
        raise JwksError("the JWKS answer has no usable signing key")
    return keys


class KeySet:
    """The issuer's public keys by kid, refreshed as the module docstring says."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str,
        fetch_timeout: float,
        min_interval: float,
        max_age: float,
    ) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.fetch_timeout = fetch_timeout
        self.min_interval = min_interval
        self.max_age = max_age
        self.keys: Mapping[str, jwt.PyJWK] = {}
        self._http: aiohttp.ClientSession | None = None
        self._last_attempt = float("-inf")
        self._fetching: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.fetch_timeout),
            headers={"Accept": "application/json"},
        )
        await self.refresh(force=True)
        self._periodic = asyncio.create_task(self._refresh_periodically())

    async def close(self) -> None:
        for task in (self._periodic, self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._http is not None:
            await self._http.close()

    async def refresh(self, force: bool = False) -> None:
        """Fetch the keys, or join the fetch under way; failures are logged, not raised."""
        if self._fetching is None or self._fetching.done():
            if not force and time.monotonic() - self._last_attempt < self.min_interval:
                return
            self._last_attempt = time.monotonic()
            self._fetching = asyncio.create_task(self._fetch())
        # Shielded: a client that hangs up must not cancel the fetch others wait on.
        await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        try:
            if not self.jwks_url:
                self.jwks_url = await self._discover()
            keys = parse_jwks(await self._get(self.jwks_url))
            if keys.keys() != self.keys.keys():
                log.info("oauth signing keys loaded", kids=sorted(keys), jwks=self.jwks_url)
            self.keys = keys
        except Exception as exc:
            # Whatever went wrong, the keys known before stay: a token never gets a 500.
            log.warning("oauth signing keys not refreshed", reason=str(exc), known=len(self.keys))

    async def _discover(self) -> str:
        problems = []
        for url in metadata_urls(self.issuer):
            try:
                metadata = orjson.loads(await self._get(url))
            except (JwksError, orjson.JSONDecodeError) as exc:
                problems.append(f"{url}: {exc}")
                continue
            if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
                problems.append(f"{url}: its issuer is not OAUTH_ISSUER")
                continue
            jwks_uri = metadata.get("jwks_uri")
            if isinstance(jwks_uri, str) and jwks_uri.startswith(("https://", "http://")):
                return jwks_uri
            problems.append(f"{url}: no jwks_uri")
        raise JwksError("no jwks_uri discovered: " + "; ".join(problems))

    async def _get(self, url: str) -> bytes:
        if self._http is None:
            raise JwksError("not started")
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise JwksError(f"{url} answered HTTP {response.status}")
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksError(f"{url} could not be fetched: {type(exc).__name__} {exc}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise JwksError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        return body

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.max_age)
            await self.refresh(force=True)
