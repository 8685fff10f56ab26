"""OAuth 2.0 client credentials (RFC 6749 section 4.4) for upstreams: the registration's
`oauth` field, and the access token each backend keeps. With `"grant": "token_exchange"`,
calls made on a user's behalf carry a token exchanged for the user's own instead
(RFC 8693, `gateway.token_exchange`); such an upstream needs per-client sessions unless it
holds none (a REST API), and the gateway's own traffic to it (discovery, the shared
session) keeps the client's token.

The field names the token endpoint, the client id, the scopes and, optionally, the
`audience` or `resource` (RFC 8707) the token is for; its `client_secret` is kept encrypted
with the upstream's headers (under `SECRET_KEY`, a name no HTTP header can have, so it is
never sent as one) and never shown. Each backend (one per upstream per worker) fetches a
token when it first needs one, through the SSRF guard, reuses it, fetches the next one
before it expires (one fetch at a time however many calls wait), and fetches afresh when
the upstream answers 401 to a token it had accepted.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote_plus

import aiohttp
import orjson

from gateway.contracts import BackendError
from gateway.netguard import AddressPolicy, guarded_connector
from gateway.store import PER_CLIENT_SESSION
from gateway.token_exchange import EXCHANGED_MAX, ExchangedTokens, OnBehalf, exchange_form

FIELD = "oauth"
SECRET_KEY = "oauth:client_secret"
"""Where the client secret is kept among the upstream's (encrypted) headers."""
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
CLIENT_CREDENTIALS = "client_credentials"
TOKEN_EXCHANGE = "token_exchange"
GRANTS = (CLIENT_CREDENTIALS, TOKEN_EXCHANGE)
KNOWN = {
    "grant",
    "token_url",
    "client_id",
    "client_secret",
    "scopes",
    "audience",
    "resource",
    "auth_method",
}
FETCH_TIMEOUT = 10.0
ANSWER_BYTES_MAX = 65_536
"""The most of a token endpoint's answer that is read."""
DEFAULT_LIFETIME = 300.0
"""Seconds a token without `expires_in` is used for."""
EARLY = 0.2
"""The share of a token's lifetime before its expiry at which the next one is fetched..."""
EARLY_SLACK = 2.0
"""...plus these seconds: an issuer rounds `iat` down to its second, and clocks differ..."""
EARLY_MAX = 60.0
"""...but no more than this, nor half the lifetime."""


def renew_after(lifetime: float) -> float:
    """Seconds after a token was fetched at which the next one is."""
    return lifetime - min(EARLY * lifetime + EARLY_SLACK, lifetime / 2, EARLY_MAX)


def check_oauth(value: Any) -> dict[str, Any]:
    """The `oauth` field as stored (without its secret); `ValueError` naming the problem."""
    if not isinstance(value, dict):
        raise ValueError("'oauth' must be an object with token_url, client_id and client_secret")
    unknown = set(value) - KNOWN
    if unknown:
        raise ValueError(f"'oauth' has unknown field(s): {', '.join(sorted(unknown))}")
    token_url = value.get("token_url")
    if not isinstance(token_url, str) or not token_url.startswith(("http://", "https://")):
        raise ValueError("'oauth.token_url' must be an http:// or https:// URL")
    client_id = value.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise ValueError("'oauth.client_id' must be a non-empty string")
    scopes = value.get("scopes", [])
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list) or not all(
        isinstance(s, str) and s and not any(c.isspace() for c in s) for s in scopes
    ):
        raise ValueError("'oauth.scopes' must be a list of scopes without spaces")
    checked: dict[str, Any] = {"token_url": token_url, "client_id": client_id, "scopes": scopes}
    for name in ("audience", "resource"):
        if value.get(name) is not None:
            if not isinstance(value[name], str) or not value[name]:
                raise ValueError(f"'oauth.{name}' must be a non-empty string")
            checked[name] = value[name]
    method = value.get("auth_method", AUTH_METHODS[0])
    if method not in AUTH_METHODS:
        raise ValueError(f"'oauth.auth_method' must be one of: {', '.join(AUTH_METHODS)}")
    checked["auth_method"] = method
    grant = value.get("grant", CLIENT_CREDENTIALS)
    if grant not in GRANTS:
        raise ValueError(f"'oauth.grant' must be one of: {', '.join(GRANTS)}")
    if grant == TOKEN_EXCHANGE:  # the default is not stored, so older records stay as they are
        checked["grant"] = grant
    return checked


def exchanges(options: Mapping[str, Any]) -> bool:
    """Whether an upstream's options ask for token exchange."""
    oauth = options.get(FIELD)
    return isinstance(oauth, Mapping) and oauth.get("grant") == TOKEN_EXCHANGE


def check_session(options: Mapping[str, Any], session: str, sessionless: bool = False) -> None:
    """`ValueError` for a token-exchange upstream without per-client sessions: one shared
    upstream session would carry every user's calls. An upstream that holds no sessions
    (`sessionless`, such as a REST API) needs none: each call carries its caller's token."""
    if exchanges(options) and not sessionless and session != PER_CLIENT_SESSION:
        raise ValueError(
            "'oauth.grant' 'token_exchange' needs \"session\": \"per-client\": the upstream "
            "sees each user as themselves, so users cannot share one upstream session"
        )


def check_options(options: Mapping[str, Any], url: str, settings: Any) -> dict[str, Any]:
    """`BackendSpec.check_options` for a transport whose only own field is `oauth`."""
    if options.get(FIELD) is None:
        return dict(options)
    return {**options, FIELD: check_oauth(options[FIELD])}


def take_secret(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """The registration without `oauth.client_secret`, and that secret if it was given."""
    oauth = payload.get(FIELD)
    if not isinstance(oauth, dict) or "client_secret" not in oauth:
        return payload, None
    secret = oauth["client_secret"]
    if not isinstance(secret, str) or not secret:
        raise ValueError("'oauth.client_secret' must be a non-empty string")
    rest = {key: value for key, value in oauth.items() if key != "client_secret"}
    return {**payload, FIELD: rest}, secret


def with_secret(
    headers: Mapping[str, str],
    stored: Mapping[str, str],
    secret: str | None,
    options: Mapping[str, Any],
) -> dict[str, str]:
    """The headers to keep: with the new secret, else the stored one while `oauth` stays;
    `ValueError` when `oauth` is set without any secret."""
    kept = {k: v for k, v in headers.items() if k != SECRET_KEY}
    if FIELD not in options:
        return kept
    secret = secret or stored.get(SECRET_KEY)
    if not secret:
        raise ValueError("'oauth' needs a 'client_secret'")
    return {**kept, SECRET_KEY: secret}


@dataclass(frozen=True, slots=True)
class Grant:
    token_url: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    resource: str | None = None
    auth_method: str = AUTH_METHODS[0]
    exchange: bool = False
    """Token exchange on calls made for a user; the client's own token otherwise."""

    @classmethod
    def of(cls, options: Mapping[str, Any], headers: Mapping[str, str]) -> Grant | None:
        oauth = options.get(FIELD)
        secret = headers.get(SECRET_KEY)
        if not isinstance(oauth, Mapping) or not secret:
            return None
        return cls(
            str(oauth["token_url"]),
            str(oauth["client_id"]),
            secret,
            tuple(oauth.get("scopes", ())),
            oauth.get("audience"),
            oauth.get("resource"),
            str(oauth.get("auth_method", AUTH_METHODS[0])),
            oauth.get("grant") == TOKEN_EXCHANGE,
        )

    def request(self, subject_token: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """The token request's form and headers: client credentials, or the exchange of
        `subject_token` when given."""
        headers = {"Accept": "application/json"}
        form = {"grant_type": "client_credentials"}
        if subject_token is not None:
            form = exchange_form(subject_token)
        if self.scopes:
            form["scope"] = " ".join(self.scopes)
        if self.audience:
            form["audience"] = self.audience
        if self.resource:
            form["resource"] = self.resource
        if self.auth_method == "client_secret_post":
            return {
                **form,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            }, headers
        # RFC 6749 section 2.3.1: both parts form-urlencoded before Basic encoding.
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return form, headers


class Tokens(Protocol):
    """What a backend takes its `Authorization` header from."""

    grant: Grant

    async def header(self, refused: str | None = None) -> str: ...


@runtime_checkable
class Borrower(Protocol):
    """A backend that can use another backend's token source (of the same grant)."""

    oauth: Tokens | None

    def borrow(self, source: Tokens) -> None: ...


def share_token(backend: object, lender: object) -> None:
    """Let `backend` (a per-client session's) use the token of `lender` (the upstream's
    shared backend on this worker), so that client sessions do not fetch one each; for a
    token-exchange grant, the calling user's exchanged token, from the tokens `lender`
    keeps (or, without one, `backend`'s own)."""
    if not isinstance(backend, Borrower) or not isinstance(backend.oauth, TokenSource):
        return
    source = backend.oauth
    if (
        isinstance(lender, Borrower)
        and isinstance(lender.oauth, TokenSource)
        and lender.oauth.grant == source.grant
    ):
        source = lender.oauth
    if source.on_behalf is not None:
        backend.borrow(OnBehalf(source.upstream, source.grant, source.on_behalf))
    elif source is not backend.oauth:
        backend.borrow(source)


def sent_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """An upstream's headers as sent: without the client secret kept among them."""
    return {k: v for k, v in headers.items() if k != SECRET_KEY}


class TokenSource:
    """One upstream's access token: fetched when needed, renewed before it expires."""

    @classmethod
    def of(
        cls,
        upstream: str,
        options: Mapping[str, Any],
        headers: Mapping[str, str],
        guard: AddressPolicy,
    ) -> TokenSource | None:
        """The token source of an upstream registered with `oauth`, else None."""
        grant = Grant.of(options, headers)
        return None if grant is None else cls(upstream, grant, guard)

    def __init__(
        self,
        upstream: str,
        grant: Grant,
        guard: AddressPolicy,
        exchanged_max: int = EXCHANGED_MAX,
    ) -> None:
        self.upstream = upstream
        self.grant = grant
        self.guard = guard
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        """Closed by its owner while others still borrow it: each fetch then opens and
        closes a connection of its own."""
        self.on_behalf = (
            ExchangedTokens(self._fetch, renew_after, exchanged_max) if grant.exchange else None
        )
        """The tokens exchanged for this worker's callers (token-exchange grant only)."""

    async def close(self) -> None:
        self._closed = True
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def header(self, refused: str | None = None) -> str:
        """`Bearer <token>`; a fresh token when `refused` (a header the upstream answered
        401 to) is still the current one."""
        if self._usable(refused):
            return f"Bearer {self._token}"
        async with self._lock:  # one fetch; the calls waiting on it take its token
            if not self._usable(refused):
                self._token, lifetime = await self._fetch()
                self._renew_at = time.monotonic() + renew_after(lifetime)
            return f"Bearer {self._token}"

    def _usable(self, refused: str | None) -> bool:
        return (
            self._token is not None
            and time.monotonic() < self._renew_at
            and refused != f"Bearer {self._token}"
        )

    async def _fetch(self, subject_token: str | None = None) -> tuple[str, float]:
        """A token of the client's own, or one exchanged for `subject_token`."""
        if not self._closed:
            if self._http is None:
                self._http = aiohttp.ClientSession(connector=guarded_connector(self.guard))
            return await self._fetch_on(self._http, subject_token)
        async with aiohttp.ClientSession(connector=guarded_connector(self.guard)) as http:
            return await self._fetch_on(http, subject_token)

    async def _fetch_on(
        self, http: aiohttp.ClientSession, subject_token: str | None
    ) -> tuple[str, float]:
        form, headers = self.grant.request(subject_token)
        asked = "the client credentials" if subject_token is None else "the token exchange"
        where = f"upstream {self.upstream!r}: the OAuth token endpoint {self.grant.token_url}"
        try:
            async with (
                asyncio.timeout(FETCH_TIMEOUT),
                http.post(
                    self.grant.token_url,
                    data=form,
                    headers=headers,
                    allow_redirects=False,
                ) as resp,
            ):
                body = await resp.content.read(ANSWER_BYTES_MAX)
                status = resp.status
        except TimeoutError:
            raise BackendError(f"{where} did not answer within {FETCH_TIMEOUT:g} s") from None
        except aiohttp.ClientError as exc:
            raise BackendError(f"{where} could not be reached: {exc}") from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            detail = f" ({error})" if isinstance(error, str) and error.isprintable() else ""
            raise BackendError(f"{where} refused {asked}: HTTP {status}{detail}")
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise BackendError(f"{where} answered without an access_token")
        if str(answer.get("token_type", "bearer")).lower() != "bearer":
            raise BackendError(f"{where} issued a {answer.get('token_type')!r} token, not Bearer")
        lifetime = answer.get("expires_in", DEFAULT_LIFETIME)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_LIFETIME
        return answer["access_token"], float(lifetime)
