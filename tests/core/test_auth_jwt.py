"""The `jwt` authenticator: valid tokens become principals, every failure is a clear 401."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from gateway.contracts import AuthError, Principal
from gateway.settings import Settings, SettingsError, load_settings
from gateway_plugins.auth_jwt import JwtAuthenticator, create_jwt_authenticator
from gateway_plugins.jwt_tokens import create_token
from tests.conftest import GatewayFactory
from tests.support.raw_http import NOT_UTF8_AUTHORIZATION, raw_answer

# PyJWT warns about HMAC keys shorter than the hash; 64 bytes suits HS256 to HS512.
SECRET = "test-secret-" + "s" * 52
OTHER_SECRET = "other-secret-" + "o" * 51


@pytest.fixture
def auth() -> JwtAuthenticator:
    return JwtAuthenticator(SECRET)


def request_with(authorization: str | None) -> web.Request:
    headers = {} if authorization is None else {"Authorization": authorization}
    return make_mocked_request("POST", "/rpc", headers=headers)


def signed(claims: dict[str, Any], secret: str = SECRET) -> str:
    """A token with the given claims, issued now unless they say otherwise."""
    return jwt.encode({"iat": int(time.time()), **claims}, secret, algorithm="HS256")


async def rejection(auth: JwtAuthenticator, authorization: str | None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(request_with(authorization))
    assert caught.value.status == 401
    return caught.value


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts signature verifications done by aiohttp-jwt."""
    calls: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(token.decode())
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    yield calls


# --- accepted ------------------------------------------------------------------------


async def test_valid_token_yields_principal_with_subject_scopes_and_claims(
    auth: JwtAuthenticator,
) -> None:
    token = create_token(SECRET, "alice", scopes=["admin", "tools:read"])
    who = await auth.authenticate(request_with(f"Bearer {token}"))
    assert who.subject == "alice"
    assert who.scopes == frozenset({"admin", "tools:read"})
    assert who.is_admin and not who.anonymous
    assert who.claims["sub"] == "alice"
    assert who.claims["scope"] == "admin tools:read"


async def test_scopes_list_claim_is_merged_with_scope_string(auth: JwtAuthenticator) -> None:
    exp = int(time.time()) + 60
    token = signed({"sub": "bob", "exp": exp, "scope": "a b", "scopes": ["b", "c"]})
    who = await auth.authenticate(request_with(f"Bearer {token}"))
    assert who.scopes == frozenset({"a", "b", "c"})


async def test_token_without_scopes_has_none(auth: JwtAuthenticator) -> None:
    who = await auth.authenticate(request_with(f"Bearer {create_token(SECRET, 'carol')}"))
    assert who.scopes == frozenset()
    assert not who.is_admin


async def test_bearer_scheme_is_case_insensitive(auth: JwtAuthenticator) -> None:
    who = await auth.authenticate(request_with(f"bearer {create_token(SECRET, 'dave')}"))
    assert who.subject == "dave"


async def test_authenticate_in_an_aiohttp_handler_accepts_a_bearer_and_refuses_none(
    auth: JwtAuthenticator,
) -> None:
    async def whoami(request: web.Request) -> web.Response:
        try:
            who = await auth.authenticate(request)
        except AuthError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        return web.json_response({"subject": who.subject, "scopes": sorted(who.scopes)})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    async with TestClient(TestServer(app)) as client:
        token = create_token(SECRET, "erin", scopes=["x"])
        ok = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 200
        assert await ok.json() == {"subject": "erin", "scopes": ["x"]}
        denied = await client.get("/whoami")
        assert denied.status == 401
        assert "missing token" in (await denied.json())["error"]


# --- rejected ------------------------------------------------------------------------


async def test_missing_header_is_401_missing_token(auth: JwtAuthenticator) -> None:
    error = await rejection(auth, None)
    assert error.message.startswith("missing token")


async def test_wrong_scheme_is_401_naming_the_scheme(auth: JwtAuthenticator) -> None:
    error = await rejection(auth, "Basic dXNlcjpwYXNz")
    assert error.message.startswith("unsupported Authorization scheme")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "", "Token"])
async def test_malformed_header_is_401_malformed_header(
    auth: JwtAuthenticator, header: str
) -> None:
    error = await rejection(auth, header)
    assert error.message.startswith("malformed Authorization header")


async def test_gateway_answers_an_authorization_of_bytes_that_are_not_utf8_with_400_json(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    head, body = await raw_answer(client.port, NOT_UTF8_AUTHORIZATION)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"application/json" in head
    assert orjson.loads(body)["error"]["message"] == "header Authorization is not valid UTF-8"


async def test_token_that_is_not_a_jwt_is_401_malformed_token(auth: JwtAuthenticator) -> None:
    error = await rejection(auth, "Bearer not-a-jwt")
    assert error.message == "malformed token: not a JWT"


async def test_bad_signature_is_401_invalid_signature(auth: JwtAuthenticator) -> None:
    error = await rejection(auth, f"Bearer {create_token(OTHER_SECRET, 'mallory')}")
    assert error.message == "invalid signature"


async def test_expired_token_is_401_token_has_expired(auth: JwtAuthenticator) -> None:
    token = signed({"sub": "old", "exp": int(time.time()) - 10})
    error = await rejection(auth, f"Bearer {token}")
    assert error.message == "token has expired"


async def test_token_without_exp_is_401_no_exp_claim(auth: JwtAuthenticator) -> None:
    error = await rejection(auth, f"Bearer {signed({'sub': 'forever'})}")
    assert error.message == "token has no exp claim"


async def test_token_without_sub_is_401_no_sub_claim(auth: JwtAuthenticator) -> None:
    error = await rejection(auth, f"Bearer {signed({'exp': int(time.time()) + 60})}")
    assert error.message == "token has no sub claim"


async def test_token_signed_with_another_algorithm_is_401(auth: JwtAuthenticator) -> None:
    token = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512")
    error = await rejection(auth, f"Bearer {token}")
    assert error.message == "token algorithm is not allowed"


async def test_scope_claim_of_the_wrong_type_is_401(auth: JwtAuthenticator) -> None:
    token = signed({"sub": "x", "exp": int(time.time()) + 60, "scope": ["admin"]})
    error = await rejection(auth, f"Bearer {token}")
    assert error.message == "scope claim must be a space-separated string"


async def test_rejected_token_writes_no_traceback_to_the_logs(
    auth: JwtAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for header in (
        f"Bearer {create_token(OTHER_SECRET, 'mallory')}",
        f"Bearer {signed({'sub': 'old', 'exp': int(time.time()) - 10})}",
        "Bearer garbage",
    ):
        await rejection(auth, header)
    assert [r for r in caplog.records if r.exc_info] == []


# --- the verified-token cache ----------------------------------------------------------


async def test_repeated_token_is_verified_once(
    auth: JwtAuthenticator, decode_calls: list[str]
) -> None:
    header = f"Bearer {create_token(SECRET, 'alice', scopes=['a'])}"
    first = await auth.authenticate(request_with(header))
    second = await auth.authenticate(request_with(header))
    assert first == second
    assert len(decode_calls) == 1


async def test_failures_are_never_cached(auth: JwtAuthenticator, decode_calls: list[str]) -> None:
    header = f"Bearer {signed({'sub': 'forever'})}"
    for _ in range(3):
        await rejection(auth, header)
    assert len(decode_calls) == 3


async def test_cache_stays_within_its_bound(decode_calls: list[str]) -> None:
    auth = JwtAuthenticator(SECRET, max_cached=1)
    first = f"Bearer {create_token(SECRET, 'one')}"
    second = f"Bearer {create_token(SECRET, 'two')}"
    for header in (first, second, first, first):
        await auth.authenticate(request_with(header))
    assert len(decode_calls) == 3


async def test_cached_token_still_expires() -> None:
    auth = JwtAuthenticator(SECRET)
    exp = int(time.time()) + 1
    header = f"Bearer {signed({'sub': 'brief', 'exp': exp})}"
    assert (await auth.authenticate(request_with(header))).subject == "brief"
    await asyncio.sleep(exp - time.time() + 0.05)
    error = await rejection(auth, header)
    assert error.message == "token has expired"


# --- construction and create_token -------------------------------------------------------


async def test_factory_accepts_only_tokens_of_the_configured_algorithm() -> None:
    settings = load_settings({"JWT_ALGORITHM": "hs384"}, env_file=None)
    auth = create_jwt_authenticator(settings, SECRET)
    token = create_token(SECRET, "zoe", algorithm="HS384")
    assert (await auth.authenticate(request_with(f"Bearer {token}"))).subject == "zoe"
    other = create_token(SECRET, "zoe", algorithm="HS256")
    error = await rejection(auth, f"Bearer {other}")
    assert error.message == "token algorithm is not allowed"


async def test_factory_defaults_to_hs256() -> None:
    auth = create_jwt_authenticator(Settings(), SECRET)
    token = create_token(SECRET, "zoe", algorithm="HS256")
    assert (await auth.authenticate(request_with(f"Bearer {token}"))).subject == "zoe"


def test_token_create_command_prints_a_token_signed_as_configured(tmp_path: Path) -> None:
    environ = {**os.environ, "JWT_SECRET_KEY": SECRET, "JWT_ALGORITHM": "HS512"}
    command = ["token", "create", "--sub", "ops", "--scope", "admin tools", "--server", "s1"]
    completed = subprocess.run(
        [sys.executable, "-m", "gateway", *command, "--exp", "5"],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    payload = jwt.decode(completed.stdout.strip(), SECRET, algorithms=["HS512"])
    assert (payload["sub"], payload["scope"], payload["servers"]) == ("ops", "admin tools", ["s1"])
    assert 299 <= payload["exp"] - payload["iat"] <= 301
    assert completed.stderr == ""


def test_empty_secret_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET_KEY"):
        JwtAuthenticator("")


def test_create_token_sets_sub_scope_iat_and_exp() -> None:
    before = time.time()
    token = create_token(SECRET, "alice", scopes=["a", "b", "a"], expires_minutes=2)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["scope"] == "a b"
    assert int(before) <= claims["iat"] <= time.time()
    assert before + 120 <= claims["exp"] <= time.time() + 121


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": ""}, "secret"),
        ({"subject": ""}, "subject"),
        ({"expires_minutes": 0}, "expires_minutes"),
        ({"scopes": ["has space"]}, "scope"),
    ],
)
def test_create_token_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"secret": SECRET, "subject": "s", **kwargs}
    with pytest.raises(ValueError, match=message):
        create_token(**arguments)


async def test_principal_is_a_plain_gateway_principal(auth: JwtAuthenticator) -> None:
    who = await auth.authenticate(request_with(f"Bearer {create_token(SECRET, 'p')}"))
    assert type(who) is Principal
