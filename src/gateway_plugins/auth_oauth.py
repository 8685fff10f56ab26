"""The `oauth` authenticator: access tokens issued by an external OAuth 2.1 / OpenID
Connect authorization server, checked against its published keys (JWKS), plus the
protected-resource metadata of the MCP authorization spec and the `OAUTH_*` settings.

A request costs no network call: the issuer's keys are held in memory (`oauth.jwks`), and
tokens already verified are remembered, bounded, until they expire. Only a token signed
with a key not known yet makes a worker fetch the keys again, at most every
`OAUTH_JWKS_MIN_REFRESH` seconds. The issuer is configured by the operator, like the
database, so these fetches do not go through the SSRF guard that upstream connections do.
Revoked `jti`s (`jwt_revocations`, `POST /tokens/revoke`, `token revoke`) are refused as
with the `jwt` authenticator.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Container, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from gateway.plugin import (
    AUTHENTICATOR,
    SETTINGS,
    AuthError,
    AuthSpec,
    Principal,
    Registrar,
    Settings,
    SettingsError,
    SettingSpec,
    hookimpl,
    number,
    text,
)
from gateway_plugins import jwt_revocations
from gateway_plugins.jwt_tokens import MAX_LIFETIME
from gateway_plugins.oauth import resource, tokens
from gateway_plugins.oauth.jwks import KeySet

VERIFIED_TOKENS_MAX = 4096
SERVERS_CLAIM = "servers"
_BEARER = "expected 'Authorization: Bearer <token>'"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/") if raw.strip() else ""
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"{name}={raw!r} must be an http:// or https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SettingsError(f"{name}={raw!r} must be https:// (http:// only on loopback)")
    return value


def _leeway(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= 600:
        raise SettingsError(f"{name}={raw!r} must be between 0 and 600 seconds")
    return value


def _words(name: str, raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(raw.replace(",", " ").split()))


def _issuer(name: str, raw: str) -> str:
    # An issuer is compared as written (RFC 8414), so only surrounding space is dropped.
    value = raw.strip()
    _url(name, value)
    return value


ISSUER = SettingSpec(
    "OAUTH_ISSUER", "", _issuer, "The authorization server's issuer URL (AUTH_TYPE=oauth)."
)
AUDIENCE = SettingSpec(
    "OAUTH_AUDIENCE", "", text, "The aud tokens must carry; unset: PUBLIC_URL (AUTH_TYPE=oauth)."
)
JWKS_URL = SettingSpec(
    "OAUTH_JWKS_URL",
    "",
    _url,
    "The issuer's JWKS; unset: jwks_uri from its /.well-known metadata (AUTH_TYPE=oauth).",
)
REQUIRED_SCOPES: SettingSpec[tuple[str, ...]] = SettingSpec(
    "OAUTH_REQUIRED_SCOPES", (), _words, "Scopes every token needs, space-separated (oauth)."
)
ADMIN_SCOPE = SettingSpec(
    "OAUTH_ADMIN_SCOPE", "admin", text, "The scope that makes a token an administrator (oauth)."
)
SERVERS_CLAIM_NAME = SettingSpec(
    "OAUTH_SERVERS_CLAIM",
    SERVERS_CLAIM,
    text,
    "The claim listing the virtual servers a token is limited to (oauth).",
)
LEEWAY = SettingSpec(
    "OAUTH_LEEWAY", 30.0, _leeway, "Seconds of clock skew allowed on exp and nbf (oauth)."
)
JWKS_MIN_REFRESH = SettingSpec(
    "OAUTH_JWKS_MIN_REFRESH",
    5.0,
    number(),
    "Seconds between fetches of the JWKS for a token with an unknown kid (oauth).",
)
JWKS_MAX_AGE = SettingSpec(
    "OAUTH_JWKS_MAX_AGE", 3600.0, number(above=1), "Seconds between routine JWKS fetches (oauth)."
)
FETCH_TIMEOUT = SettingSpec(
    "OAUTH_FETCH_TIMEOUT", 5.0, number(above=0), "Seconds a metadata or JWKS fetch may take."
)
SETTINGS_DECLARED = (
    ISSUER,
    AUDIENCE,
    JWKS_URL,
    REQUIRED_SCOPES,
    ADMIN_SCOPE,
    SERVERS_CLAIM_NAME,
    LEEWAY,
    JWKS_MIN_REFRESH,
    JWKS_MAX_AGE,
    FETCH_TIMEOUT,
)


def protected_resource(settings: Settings) -> resource.ProtectedResource:
    """The gateway as the resource these settings describe, or SettingsError."""
    issuer = settings.plugin_value(ISSUER)
    if not issuer:
        raise SettingsError("AUTH_TYPE=oauth needs OAUTH_ISSUER, the authorization server")
    audience = settings.plugin_value(AUDIENCE) or settings.public_url
    if not audience:
        raise SettingsError("AUTH_TYPE=oauth needs OAUTH_AUDIENCE or PUBLIC_URL (the audience)")
    return resource.ProtectedResource(
        issuer=issuer,
        audience=audience,
        public_url=settings.public_url,
        required_scopes=settings.plugin_value(REQUIRED_SCOPES),
        admin_scope=settings.plugin_value(ADMIN_SCOPE) or "admin",
    )


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    deadline: float
    """When the token stops being accepted: exp plus the leeway."""
    jti: str | None
    audiences: frozenset[str]


class OAuthAuthenticator:
    """Verifies `Authorization: Bearer <access token>` issued by `OAUTH_ISSUER`."""

    def __init__(
        self,
        protected: resource.ProtectedResource,
        keys: KeySet,
        leeway: float,
        servers_claim: str = SERVERS_CLAIM,
        max_cached: int = VERIFIED_TOKENS_MAX,
    ) -> None:
        self.protected = protected
        self.keys = keys
        self.leeway = leeway
        self.servers_claim = servers_claim
        self.revoked: Container[object] = frozenset()
        """The revoked jtis; the gateway puts this worker's `Revocations` here."""
        self._max_cached = max_cached
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def start(self) -> None:
        await self.keys.start()

    async def close(self) -> None:
        self._verified.clear()
        await self.keys.close()

    def challenge(self, request: web.Request, error: AuthError) -> str:
        return self.protected.challenge(request, error)

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            raise AuthError(f"missing token: {_BEARER}")
        accepted = self.protected.audiences(request)
        cached = self._verified.get(header)
        if cached is not None:
            if cached.deadline > time.time() and cached.jti not in self.revoked:
                if not cached.audiences & accepted:
                    raise AuthError(_wrong_audience(accepted))
                self._verified.move_to_end(header)
                return cached.principal
            del self._verified[header]
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(f"malformed Authorization header: {_BEARER}")
        claims = await tokens.verified_claims(
            token.strip(), self.keys, self.protected.issuer, self.leeway
        )
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise AuthError("token jti claim must be a string")
        if jti is not None and jti in self.revoked:
            raise AuthError("token has been revoked")
        audiences = tokens.audiences(claims)
        if not audiences & accepted:
            raise AuthError(_wrong_audience(accepted))
        principal = self.principal(claims)
        self._verified[header] = _Verified(
            principal, float(claims["exp"]) + self.leeway, jti, audiences
        )
        if len(self._verified) > self._max_cached:
            self._verified.popitem(last=False)
        return principal

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """Who verified claims name, with the gateway's `admin` scope for a token that has
        `OAUTH_ADMIN_SCOPE`; 403 for a token without `OAUTH_REQUIRED_SCOPES`."""
        subject = claims.get("sub") or claims.get("client_id")
        if not isinstance(subject, str) or not subject:
            raise AuthError("token has no sub claim")
        granted = tokens.scopes(claims)
        missing = [s for s in self.protected.required_scopes if s not in granted]
        if missing:
            raise AuthError(f"token lacks the scope {' '.join(missing)!r}", 403, " ".join(missing))
        scopes = granted - {"admin"}
        if self.protected.admin_scope in granted:
            scopes |= {"admin"}
        kept = {k: v for k, v in claims.items() if k != SERVERS_CLAIM}
        if self.servers_claim in claims:
            kept[SERVERS_CLAIM] = claims[self.servers_claim]
        return Principal(subject=subject, scopes=frozenset(scopes), claims=kept)

    def claims_of(self, token: str) -> Mapping[str, Any]:
        """The claims of a token signed with a key known now, expired or not (to revoke it)."""
        try:
            alg, kid = tokens.token_header(token)
            key = tokens.signing_key(self.keys.keys, kid, alg)
            if key is None:
                raise AuthError("token is signed with an unknown key")
            return tokens.decode(
                token, key, alg, self.protected.issuer, self.leeway, verify_exp=False
            )
        except AuthError as exc:
            raise ValueError(f"token is not one OAUTH_ISSUER signed: {exc.message}") from None


def _wrong_audience(accepted: frozenset[str]) -> str:
    return f"token is not for this resource: its aud must be one of {sorted(accepted)}"


def create_oauth_authenticator(settings: Settings, secret: str) -> OAuthAuthenticator:
    protected = protected_resource(settings)
    keys = KeySet(
        protected.issuer,
        settings.plugin_value(JWKS_URL),
        fetch_timeout=settings.plugin_value(FETCH_TIMEOUT),
        min_interval=settings.plugin_value(JWKS_MIN_REFRESH),
        max_age=settings.plugin_value(JWKS_MAX_AGE),
    )
    return OAuthAuthenticator(
        protected,
        keys,
        settings.plugin_value(LEEWAY),
        settings.plugin_value(SERVERS_CLAIM_NAME) or SERVERS_CLAIM,
    )


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """This worker's revoked jtis, as for the `jwt` authenticator."""
    authenticator = app.get(AUTHENTICATOR)
    if not isinstance(authenticator, OAuthAuthenticator):
        yield
        return
    max_lifetime = app[SETTINGS].plugin_value(MAX_LIFETIME)
    async with jwt_revocations.worker_revocations(
        app, authenticator.claims_of, max_lifetime
    ) as revocations:
        authenticator.revoked = revocations
        yield


@hookimpl(trylast=True)
def gateway_register_auth(register: Registrar[AuthSpec]) -> None:
    register.add(
        AuthSpec(
            name="oauth",
            factory=create_oauth_authenticator,
            description="Access tokens of an OAuth 2.1 / OpenID Connect authorization server"
            " (OAUTH_ISSUER), checked against its JWKS (RS256, ES256, EdDSA...).",
        )
    )


@hookimpl(trylast=True)
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    for spec in SETTINGS_DECLARED:
        register.add(spec)


@hookimpl(trylast=True)
def gateway_configure_app(app: web.Application, settings: Settings) -> None:
    if settings.auth_required and settings.auth_type == "oauth":
        try:
            app[resource.RESOURCE] = protected_resource(settings)
        except SettingsError:
            return  # building the authenticator reports it, as a start-up error
        app.router.add_routes(resource.routes)
        app.cleanup_ctx.append(_revocations_ctx)
        app.router.add_routes(jwt_revocations.routes)
