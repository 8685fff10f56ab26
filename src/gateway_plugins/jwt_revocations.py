"""Revoked JWTs for the `jwt` authenticator: the store's `revoked_tokens` table, each
worker's in-memory copy of it, the admin routes and the `token revoke` command.

The table is the durable record; a row lives until the token would have expired. Checking a
token never queries the store: each worker loads the revoked `jti`s at start, adds the ones
announced on the cache's `token-revocations` channel, and reloads the table every
`CATALOGUE_POLL_INTERVAL`, which also covers a lost message or a cache that is not shared.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway.plugin import (
    CACHE,
    SETTINGS,
    STORE,
    Cache,
    Settings,
    Store,
    Unstorable,
    admin,
    command_store,
)

log = structlog.get_logger(__name__)

REVOCATIONS_CHANNEL = "token-revocations"
CLOSE_GRACE = 0.5
JTI_CHARS_MAX = 256
"""The longest `jti` revoked by name; the gateway's own are 22 characters."""
"""Seconds the background tasks get to end after being cancelled once."""


@dataclass(frozen=True, slots=True)
class Revoked:
    jti: str
    subject: str
    expires_at: float
    """When the token expires anyway; the record is dropped after that."""
    revoked_at: float


async def store_revocation(store: Store, revoked: Revoked) -> None:
    """Record `revoked` (a second revocation of one jti keeps the first) and purge the
    records of tokens that have expired since."""
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO revoked_tokens (jti, subject, expires_at, revoked_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING",
            (revoked.jti, revoked.subject, revoked.expires_at, revoked.revoked_at),
        )
        await conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (time.time(),))


async def stored_revocations(store: Store) -> list[Revoked]:
    """The revocations of tokens that have not expired yet, oldest first."""
    async with store.connection() as conn:
        rows = await conn.fetchall(
            "SELECT jti, subject, expires_at, revoked_at FROM revoked_tokens"
            " WHERE expires_at >= ? ORDER BY revoked_at, jti",
            (time.time(),),
        )
    return [Revoked(str(j), str(s), float(e), float(r)) for j, s, e, r in rows]


async def announce(cache: Cache, revoked: Revoked) -> None:
    """Tell every worker now; the poll brings them up to date if this is lost."""
    try:
        await cache.publish(REVOCATIONS_CHANNEL, orjson.dumps(asdict(revoked)))
    except Exception as exc:
        log.warning("token revocation not published; workers will poll", error=str(exc))


class Revocations:
    """This worker's view of the revoked tokens: `jti in revocations` costs a dict lookup."""

    def __init__(self, store: Store, cache: Cache, poll_interval: float) -> None:
        self.store = store
        self.cache = cache
        self.poll_interval = poll_interval
        self._expiry: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __contains__(self, jti: object) -> bool:
        return jti in self._expiry

    async def start(self) -> None:
        await self.reload()
        self._spawn(self._poll)
        self._spawn(self._listen)

    async def close(self) -> None:
        tasks = list(self._tasks)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        # A Redis subscription cancelled while it reads can stall in its own clean-up;
        # a second cancellation ends that.
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def revoke(self, revoked: Revoked) -> None:
        await store_revocation(self.store, revoked)
        self._expiry[revoked.jti] = revoked.expires_at
        await announce(self.cache, revoked)

    async def reload(self) -> None:
        fresh = {r.jti: r.expires_at for r in await stored_revocations(self.store)}
        # Merged rather than replaced: an announcement that arrived while the table was
        # read must not be forgotten until the next poll.
        now = time.time()
        kept = {jti: exp for jti, exp in self._expiry.items() if exp >= now}
        self._expiry = kept | fresh

    def _spawn(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(loop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("token revocation poll failed", error=str(exc))

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self.cache.subscribe(REVOCATIONS_CHANNEL):
                    self._heard(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("token revocation subscription lost; retrying", error=str(exc))
            await asyncio.sleep(1.0)

    def _heard(self, message: bytes) -> None:
        try:
            data = orjson.loads(message)
            jti, expires_at = str(data["jti"]), float(data["expires_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed token revocation message")
            return
        self._expiry[jti] = expires_at


REVOCATIONS = web.AppKey("jwt_revocations", Revocations)
ClaimsOf = Callable[[str], Mapping[str, Any]]
"""Verifies a token's signature (not its expiry) and returns its claims, or raises
`ValueError` with the reason."""
CLAIMS_OF: web.AppKey[ClaimsOf] = web.AppKey("jwt_claims_of")
MAX_LIFETIME = web.AppKey("jwt_max_lifetime", float)


@asynccontextmanager
async def worker_revocations(
    app: web.Application, claims_of: ClaimsOf, max_lifetime: float
) -> AsyncIterator[Revocations]:
    """This worker's revoked jtis, loaded and kept up to date while the block runs, with
    what the admin routes need to revoke a token of the authenticator in use."""
    revocations = Revocations(app[STORE], app[CACHE], app[SETTINGS].catalogue_poll_interval)
    await revocations.start()
    app[REVOCATIONS] = revocations
    app[CLAIMS_OF] = claims_of
    app[MAX_LIFETIME] = max_lifetime
    try:
        yield revocations
    finally:
        await revocations.close()


def revocation(claims: Mapping[str, Any] | None, jti: str, max_lifetime: float) -> Revoked:
    """The record for a token known by its claims, or by its jti alone; such a token
    expires at the latest `max_lifetime` from now, since none is issued in the future."""
    now = time.time()
    if claims is None:
        return Revoked(jti, "", now + max_lifetime, now)
    return Revoked(jti, str(claims.get("sub", "")), float(claims["exp"]), now)


def _json_response(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _revocation_request(request: web.Request, body: Any) -> Revoked:
    if not isinstance(body, dict) or len({"jti", "token"} & body.keys()) != 1:
        raise web.HTTPBadRequest(text='request body must be {"jti": "..."} or {"token": "..."}')
    if "jti" in body:
        jti = body["jti"]
        if not isinstance(jti, str) or not jti:
            raise web.HTTPBadRequest(text="jti must be a non-empty string")
        if len(jti) > JTI_CHARS_MAX:
            raise web.HTTPBadRequest(text=f"jti must be at most {JTI_CHARS_MAX} characters")
        return revocation(None, jti, request.app[MAX_LIFETIME])
    token = body["token"]
    if not isinstance(token, str):
        raise web.HTTPBadRequest(text="token must be a string")
    try:
        claims = request.app[CLAIMS_OF](token)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise web.HTTPBadRequest(
            text="token has no jti claim, so it cannot be revoked alone;"
            " rotating JWT_SECRET_KEY revokes every token"
        )
    return revocation(claims, jti, request.app[MAX_LIFETIME])


@admin
async def revoke_token(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"request body is not valid JSON: {exc}") from None
    revoked = _revocation_request(request, body)
    try:
        await request.app[REVOCATIONS].revoke(revoked)
    except Unstorable as exc:
        raise web.HTTPUnprocessableEntity(text=f"jti cannot be revoked: {exc}") from None
    log.info("token revoked", jti=revoked.jti, subject=revoked.subject)
    return _json_response(asdict(revoked))


@admin
async def list_revoked(request: web.Request) -> web.Response:
    revoked = await stored_revocations(request.app[REVOCATIONS].store)
    return _json_response([asdict(r) for r in revoked])


routes = [
    web.post("/tokens/revoke", revoke_token),
    web.get("/tokens/revoked", list_revoked),
]


async def revoke_command(
    args: argparse.Namespace,
    settings: Settings,
    max_lifetime: float,
    shared_cache: Callable[[Store], Cache] | None,
) -> int:
    """`token revoke --jti ...`: record the revocation, and announce it when a shared cache
    can carry the message (the workers' poll finds it otherwise)."""
    revoked = revocation(None, args.jti, max_lifetime)
    async with command_store(settings) as store:
        await store_revocation(store, revoked)
        if shared_cache is not None:
            cache = shared_cache(store)
            await cache.start()
            try:
                await announce(cache, revoked)
            finally:
                await cache.close()
    print(f"revoked {revoked.jti}")
    return 0
