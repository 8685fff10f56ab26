"""Checking an access token from the authorization server: its header, its signature
against the issuer's keys, and its `iss`, `aud`, `exp` and `nbf` claims.

Every failure is an `AuthError` (401) with a reason a client can act on: a token is never
the cause of a 500. Only asymmetric algorithms are accepted, and only the one its key is
for, so neither `alg: none` nor an HMAC signature made with the issuer's public key passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from gateway.plugin import AuthError
from gateway_plugins.oauth.jwks import ASYMMETRIC_ALGORITHMS, KeySet


def token_header(token: str) -> tuple[str, str]:
    """The algorithm and kid a token names, or AuthError if it is not an acceptable JWS."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed token: not a JWT") from None
    alg = header.get("alg")
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise AuthError(f"token algorithm {str(alg)[:20]!r} is not allowed")
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        raise AuthError("token kid must be a string")
    return alg, kid


def signing_key(keys: Mapping[str, jwt.PyJWK], kid: str, alg: str) -> jwt.PyJWK | None:
    """The key `kid` names; a token without a kid may use the only key for its algorithm."""
    if kid:
        return keys.get(kid)
    candidates = [key for key in keys.values() if key.algorithm_name == alg]
    return candidates[0] if len(candidates) == 1 else None


def decode(
    token: str, key: jwt.PyJWK, alg: str, issuer: str, leeway: float, verify_exp: bool = True
) -> dict[str, Any]:
    """The verified claims (issuer, signature, exp and nbf; not the audience)."""
    if key.algorithm_name != alg:
        raise AuthError(f"token algorithm {alg} does not match its key's ({key.algorithm_name})")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            issuer=issuer,
            leeway=leeway,
            options={
                "require": ["exp", "iss"],
                "verify_aud": False,
                "verify_exp": verify_exp,
            },
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("token is not yet valid (nbf)") from None
    except jwt.InvalidIssuerError:
        raise AuthError("token was issued by another issuer than OAUTH_ISSUER") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token has no {exc.claim} claim") from None
    except jwt.InvalidSignatureError:
        raise AuthError("invalid signature") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise AuthError(f"invalid token: {str(exc)[:200]}") from None
    return claims


async def verified_claims(token: str, keys: KeySet, issuer: str, leeway: float) -> dict[str, Any]:
    """The claims of a token signed by one of the issuer's keys, fetching the keys again
    (within `KeySet`'s bound) when its kid is not known yet."""
    alg, kid = token_header(token)
    key = signing_key(keys.keys, kid, alg)
    if key is None:
        await keys.refresh()
        key = signing_key(keys.keys, kid, alg)
    if key is None:
        if not keys.keys:
            raise AuthError("the authorization server's signing keys are not available")
        raise AuthError(f"token is signed with an unknown key (kid {kid[:64]!r})")
    return decode(token, key, alg, issuer, leeway)


def audiences(claims: Mapping[str, Any]) -> frozenset[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return frozenset({aud})
    if isinstance(aud, list):
        return frozenset(a for a in aud if isinstance(a, str))
    return frozenset()


def scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes granted: `scope` (RFC 9068, space-separated) and `scp` (a string or a
    list, as some identity providers write it)."""
    granted: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(s for s in value if isinstance(s, str))
        elif value is not None:
            raise AuthError(f"{name} claim must be a string or a list of strings")
    return frozenset(granted)
