"""The `jwt` authenticator: bearer tokens verified by aiohttp-jwt, the plugin's hooks, and
the `/tokens` admin routes (revocation in `jwt_revocations`, managed tokens in
`jwt_managed`). Minting and the `JWT_ALGORITHM` and `MAX_TOKEN_LIFETIME` settings are
`jwt_tokens`; the `aio-mcp-gateway token` commands are `jwt_commands`.

aiohttp-jwt does the header parsing and signature checks; this module turns its HTTP
exceptions into `AuthError`s with readable messages, insists on `exp` and `iat` claims no
further apart than `MAX_TOKEN_LIFETIME`, refuses revoked tokens (`jwt_revocations`), keeps a
bounded cache of verified tokens, and silences the traceback aiohttp-jwt logs for every
rejected token (the core logs one line per denied request instead).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Container, Mapping, Sequence
from typing import Any

import jwt
from aiohttp import hdrs, web
from aiohttp_jwt import JWTMiddleware

from gateway.plugin import (
    AUTHENTICATOR,
    MANAGED_TOKENS,
    AuthError,
    AuthSpec,
    CommandSpec,
    Principal,
    Registrar,
    Settings,
    SettingsError,
    SettingSpec,
    hookimpl,
)
from gateway_plugins import jwt_managed, jwt_revocations
from gateway_plugins.jwt_commands import TOKEN_COMMAND
from gateway_plugins.jwt_tokens import ALGORITHM, DEFAULT_MAX_LIFETIME, MAX_LIFETIME, create_token

# Verifying an HMAC signature costs more than the rest of a small request; at thousands
# of requests per second from a few clients, remembering recent tokens pays for itself.
VERIFIED_TOKENS_MAX = 4096

_MIDDLEWARE_LOGGER = "aiohttp_jwt.middleware"
_BEARER = "expected 'Authorization: Bearer <token>'"
_HEADER_REASONS = {
    "Missing authorization token": f"missing token: {_BEARER}",
    "Invalid authorization header": f"malformed Authorization header: {_BEARER}",
    "Invalid token scheme": f"unsupported Authorization scheme: {_BEARER}",
}
_TOKEN_REASON_PREFIX = "Invalid authorization token, "
_TOKEN_REASONS = {
    "Signature verification failed": "invalid signature",
    "Signature has expired": "token has expired",
    "The specified alg value is not allowed": "token algorithm is not allowed",
}
_MALFORMED_TOKEN_STARTS = (
    "Not enough segments",
    "Invalid header",
    "Invalid payload",
    "Invalid crypto",
)


class _DropTracebacks(logging.Filter):
    """aiohttp-jwt logs every rejected token with `logger.exception`; a bad token is a
    client error, not a fault, so those records must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info


_DROP_TRACEBACKS = _DropTracebacks()


class _Probe:
    """What the middleware sees instead of the request.

    The middleware stores the payload with a string key, which aiohttp warns about on a
    real request, so it stores it here. It also lets OPTIONS through unchecked; the core
    decides which requests need a principal, so the probe always claims GET.
    """

    __slots__ = ("_request", "payload")
    method = hdrs.METH_GET

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.payload: Mapping[str, Any] | None = None

    @property
    def headers(self) -> Any:
        return self._request.headers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    def __setitem__(self, key: str, value: Mapping[str, Any]) -> None:
        self.payload = value


async def _payload_of(probe: _Probe) -> Mapping[str, Any] | None:
    return probe.payload


def _message(reason: str) -> str:
    """A readable message for the reason aiohttp-jwt put on its HTTP exception."""
    if reason in _HEADER_REASONS:
        return _HEADER_REASONS[reason]
    detail = reason.removeprefix(_TOKEN_REASON_PREFIX)
    if detail in _TOKEN_REASONS:
        return _TOKEN_REASONS[detail]
    if detail.startswith(_MALFORMED_TOKEN_STARTS):
        return "malformed token: not a JWT"
    if detail.startswith("The token is not yet valid"):
        return "token is not yet valid (nbf)"
    return f"invalid token: {detail.rstrip('.')}"


def _scopes(payload: Mapping[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    scope = payload.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthError("scope claim must be a space-separated string")
        scopes.update(scope.split())
    listed = payload.get("scopes")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            raise AuthError("scopes claim must be a list of strings")
        scopes.update(listed)
    return frozenset(scopes)


def principal_from_claims(
    payload: Mapping[str, Any], max_lifetime: float = DEFAULT_MAX_LIFETIME
) -> tuple[Principal, float]:
    """The principal a verified payload names, and its expiry (seconds since the epoch)."""
    # PyJWT checks `exp` only when present; a token without one would never expire.
    if "exp" not in payload:
        raise AuthError("token has no exp claim")
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("token has no sub claim")
    principal = Principal(subject=subject, scopes=_scopes(payload), claims=dict(payload))
    # A leaked token is only as bad as it is long-lived: the lifetime needs both ends.
    # PyJWT has checked that both are integers and that `iat` is not in the future.
    if "iat" not in payload:
        raise AuthError("token has no iat claim, so its lifetime is unknown")
    if int(payload["exp"]) - int(payload["iat"]) > max_lifetime:
        raise AuthError(
            f"token lifetime (exp - iat) exceeds MAX_TOKEN_LIFETIME ({max_lifetime:g} seconds)"
        )
    # PyJWT compares int(exp) with the clock; so must a cached token.
    return principal, int(payload["exp"])


class JwtAuthenticator:
    """Verifies `Authorization: Bearer <jwt>` headers signed with one shared secret."""

    def __init__(
        self,
        secret: str,
        algorithm: str = "HS256",
        max_cached: int = VERIFIED_TOKENS_MAX,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
    ) -> None:
        if not secret:
            raise SettingsError("JWT_SECRET_KEY is empty; the jwt authenticator needs a secret")
        logging.getLogger(_MIDDLEWARE_LOGGER).addFilter(_DROP_TRACEBACKS)
        self._middleware = JWTMiddleware(
            secret,
            algorithms=[algorithm],
            credentials_required=True,
            # RFC 7235: the scheme is case-insensitive; aiohttp-jwt uses re.match.
            auth_scheme=r"(?i)bearer\Z",
        )
        self._secret = secret
        self._algorithm = algorithm
        self._max_cached = max_cached
        self.max_lifetime = max_lifetime
        self.revoked: Container[object] = frozenset()
        """The revoked jtis; the gateway puts this worker's `Revocations` here."""
        # Authorization header value -> (principal, exp, jti). Keyed by the whole header so
        # a hit is exactly a header the middleware accepted before.
        self._verified: OrderedDict[str, tuple[Principal, float, object]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._verified.clear()

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None:
            cached = self._verified.get(header)
            if cached is not None:
                # Checked on every hit: a token revoked after it was cached is refused.
                if cached[1] > time.time() and cached[2] not in self.revoked:
                    self._verified.move_to_end(header)
                    return cached[0]
                del self._verified[header]
        try:
            payload = await self._middleware(_Probe(request), _payload_of)
        except (web.HTTPUnauthorized, web.HTTPForbidden) as exc:
            raise AuthError(_message(exc.reason), 401) from None
        if payload is None:
            raise AuthError(_HEADER_REASONS["Missing authorization token"], 401)
        principal, exp = principal_from_claims(payload, self.max_lifetime)
        jti = payload.get("jti")
        if jti in self.revoked:
            raise AuthError("token has been revoked", 401)
        if header is not None:
            self._remember(header, principal, exp, jti)
        return principal

    def mint(
        self, subject: str, scopes: Sequence[str], minutes: float, servers: Sequence[str]
    ) -> str:
        """A token signed with this authenticator's secret (see `create_token`)."""
        return create_token(
            self._secret, subject, scopes, minutes, self._algorithm, servers, self.max_lifetime
        )

    def claims_of(self, token: str) -> Mapping[str, Any]:
        """The claims of a token this gateway signed, expired or not (for revoking it)."""
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token, self._secret, algorithms=[self._algorithm], options={"verify_exp": False}
            )
        except jwt.PyJWTError as exc:
            raise ValueError(f"token is not one this gateway signed: {exc}") from None
        if "exp" not in claims:
            raise ValueError("token has no exp claim")
        return claims

    def _remember(self, header: str, principal: Principal, exp: float, jti: object) -> None:
        self._verified[header] = (principal, exp, jti)
        if len(self._verified) > self._max_cached:
            self._verified.popitem(last=False)


def create_jwt_authenticator(settings: Settings, secret: str) -> JwtAuthenticator:
    return JwtAuthenticator(
        secret, settings.plugin_value(ALGORITHM), max_lifetime=settings.plugin_value(MAX_LIFETIME)
    )


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """This worker's revoked jtis, handed to the authenticator once the store and the
    cache are up; nothing when another authenticator is in use."""
    authenticator = app.get(AUTHENTICATOR)
    if not isinstance(authenticator, JwtAuthenticator):
        yield
        return
    async with jwt_revocations.worker_revocations(
        app, authenticator.claims_of, authenticator.max_lifetime
    ) as revocations:
        app[jwt_managed.MINT] = authenticator.mint
        app[MANAGED_TOKENS] = jwt_managed.Managed(app)
        authenticator.revoked = revocations
        yield


@hookimpl(trylast=True)
def gateway_register_auth(register: Registrar[AuthSpec]) -> None:
    register.add(
        AuthSpec(
            name="jwt",
            factory=create_jwt_authenticator,
            description="Bearer JWTs signed with JWT_SECRET_KEY (HS256/384/512), via aiohttp-jwt.",
        )
    )


@hookimpl(trylast=True)
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    register.add(ALGORITHM)
    register.add(MAX_LIFETIME)


@hookimpl(trylast=True)
def gateway_configure_app(app: web.Application, settings: Settings) -> None:
    if settings.auth_required and settings.auth_type == "jwt":
        app.cleanup_ctx.append(_revocations_ctx)
        app.router.add_routes(jwt_revocations.routes)
        app.router.add_routes(jwt_managed.routes)


@hookimpl(trylast=True)
def gateway_register_commands(register: Registrar[CommandSpec]) -> None:
    register.add(TOKEN_COMMAND)
