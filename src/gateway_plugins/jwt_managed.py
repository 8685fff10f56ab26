"""Managed tokens of the `jwt` authenticator: tokens the gateway mints for scripts and
services, recorded in the store's `managed_tokens` table without the token itself.

`POST /tokens` mints one and shows it once; `GET /tokens` lists them (never the token);
`DELETE /tokens/{id}` revokes one through `jwt_revocations`, so every worker of every
instance refuses it within a second. A token's id is its `jti`. The `token create --name`,
`token list` and `token revoke` commands do the same from the command line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.plugin import Store, Unstorable, admin
from gateway_plugins import jwt_revocations

NAME = re.compile(r"[^\x00-\x1f]{1,100}")
MANAGED_TOKENS_MAX = 10_000
"""Managed tokens the store keeps (expired ones are dropped first)."""
FIELDS = {"name", "subject", "scopes", "servers", "expires_in"}
DEFAULT_LIFETIME = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class ManagedToken:
    id: str
    name: str
    subject: str
    scopes: tuple[str, ...]
    servers: tuple[str, ...]
    created_at: float
    expires_at: float
    revoked_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "subject": self.subject,
            "scopes": list(self.scopes),
            "servers": list(self.servers),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "expired": self.expires_at < time.time(),
            "revoked": self.revoked_at is not None,
            "revoked_at": self.revoked_at,
        }


_COLUMNS = "id, name, subject, scopes, servers, created_at, expires_at, revoked_at"


def _row(row: Sequence[Any]) -> ManagedToken:
    ident, name, subject, scopes, servers, created, expires, revoked = row
    return ManagedToken(
        str(ident),
        str(name),
        str(subject),
        tuple(orjson.loads(scopes)),
        tuple(orjson.loads(servers)),
        float(created),
        float(expires),
        None if revoked is None else float(revoked),
    )


class TooMany(Exception):
    """The store holds `MANAGED_TOKENS_MAX` live managed tokens already."""


async def record(store: Store, token: ManagedToken) -> None:
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM managed_tokens WHERE expires_at < ?", (time.time(),))
        count = await conn.fetchone("SELECT COUNT(*) FROM managed_tokens")
        if count is not None and int(count[0]) >= MANAGED_TOKENS_MAX:
            raise TooMany(f"there are {MANAGED_TOKENS_MAX} managed tokens, the most allowed")
        await conn.execute(
            f"INSERT INTO managed_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.id,
                token.name,
                token.subject,
                orjson.dumps(list(token.scopes)).decode(),
                orjson.dumps(list(token.servers)).decode(),
                token.created_at,
                token.expires_at,
                token.revoked_at,
            ),
        )


async def listed(store: Store) -> list[ManagedToken]:
    async with store.connection() as conn:
        rows = await conn.fetchall(f"SELECT {_COLUMNS} FROM managed_tokens ORDER BY created_at, id")
    return [_row(row) for row in rows]


async def mark_revoked(store: Store, ident: str, when: float) -> ManagedToken | None:
    """Mark a managed token revoked (a second time keeps the first); None if unknown."""
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE managed_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (when, ident),
        )
        row = await conn.fetchone(f"SELECT {_COLUMNS} FROM managed_tokens WHERE id = ?", (ident,))
    return None if row is None else _row(row)


Mint = Callable[[str, Sequence[str], float, Sequence[str]], str]
"""Signs a token: (subject, scopes, lifetime in minutes, servers) -> token; `ValueError`
for a lifetime past MAX_TOKEN_LIFETIME or a bad scope."""
MINT: web.AppKey[Mint] = web.AppKey("jwt_mint")


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"status": status, "message": message}}),
        status=status,
        content_type="application/json",
    )


def _strings(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"'{key}' must be a list of non-empty strings")
    return list(dict.fromkeys(value))


def _request(body: Any, max_lifetime: float) -> tuple[str, str, list[str], list[str], float]:
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise ValueError(
            f"unknown field(s): {', '.join(sorted(unknown))}; send {', '.join(sorted(FIELDS))}"
        )
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError("'name' must be a string of 1-100 printable characters")
    subject = body.get("subject", name)
    if not isinstance(subject, str) or not NAME.fullmatch(subject):
        raise ValueError("'subject' must be a string of 1-100 printable characters")
    lifetime = body.get("expires_in", min(DEFAULT_LIFETIME, max_lifetime))
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        raise ValueError("'expires_in' must be a positive number of seconds")
    if lifetime > max_lifetime:
        raise ValueError(
            f"'expires_in' ({lifetime:g} s) exceeds MAX_TOKEN_LIFETIME ({max_lifetime:g} s)"
        )
    return name, subject, _strings(body, "scopes"), _strings(body, "servers"), float(lifetime)


async def issue(app: web.Application, body: Any) -> tuple[ManagedToken, str]:
    """Mint and record the token a `POST /tokens` body asks for; `ValueError` for a body
    it refuses, `TooMany` when the store is full."""
    name, subject, scopes, servers, lifetime = _request(body, app[jwt_revocations.MAX_LIFETIME])
    token = app[MINT](subject, scopes, lifetime / 60, servers)
    claims = app[jwt_revocations.CLAIMS_OF](token)
    managed = ManagedToken(
        str(claims["jti"]),
        name,
        subject,
        tuple(scopes),
        tuple(servers),
        float(claims["iat"]),
        float(claims["exp"]),
    )
    await record(app[jwt_revocations.REVOCATIONS].store, managed)
    return managed, token


async def revoke(app: web.Application, ident: str) -> ManagedToken | None:
    """Mark a managed token revoked and revoke its jti everywhere; None if unknown."""
    revocations = app[jwt_revocations.REVOCATIONS]
    now = time.time()
    managed = await mark_revoked(revocations.store, ident, now)
    if managed is not None:
        await revocations.revoke(
            jwt_revocations.Revoked(ident, managed.subject, managed.expires_at, now)
        )
    return managed


class Managed:
    """The managed tokens as the admin UI uses them (`gateway.plugin.ManagedTokens`)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    async def listed(self) -> list[dict[str, Any]]:
        return [t.view() for t in await listed(self.app[jwt_revocations.REVOCATIONS].store)]

    async def issue(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            managed, token = await issue(self.app, body)
        except TooMany as exc:
            raise ValueError(str(exc)) from None
        return {**managed.view(), "token": token}

    async def revoke(self, ident: str) -> dict[str, Any] | None:
        managed = await revoke(self.app, ident)
        return None if managed is None else managed.view()


@admin
async def create_token(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"request body is not valid JSON: {exc}")
    try:
        managed, token = await issue(request.app, body)
    except ValueError as exc:
        return _error(422, str(exc))
    except TooMany as exc:
        return _error(409, str(exc))
    return web.Response(
        body=orjson.dumps({**managed.view(), "token": token}),
        status=201,
        content_type="application/json",
    )


@admin
async def list_tokens(request: web.Request) -> web.Response:
    tokens = await listed(request.app[jwt_revocations.REVOCATIONS].store)
    return web.Response(
        body=orjson.dumps({"tokens": [t.view() for t in tokens]}),
        content_type="application/json",
    )


@admin
async def revoke_token(request: web.Request) -> web.Response:
    ident = request.match_info["id"]
    try:
        managed = await revoke(request.app, ident)
    except Unstorable:  # an id no token can have
        managed = None
    if managed is None:
        return _error(404, f"no managed token with id {ident!r}")
    return web.Response(body=orjson.dumps(managed.view()), content_type="application/json")


routes = [
    web.post("/tokens", create_token),
    web.get("/tokens", list_tokens),
    web.delete("/tokens/{id}", revoke_token),
]
