"""The `none` authenticator: every request is the anonymous administrator."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from gateway.contracts import Authenticator
from gateway.settings import Settings
from gateway_plugins.auth_none import NoAuthenticator, create_no_authenticator


async def test_request_without_credentials_is_anonymous() -> None:
    auth = create_no_authenticator(Settings(), "")
    await auth.start()
    who = await auth.authenticate(make_mocked_request("GET", "/tools"))
    await auth.close()
    assert who.subject == "anonymous"
    assert who.anonymous
    assert who.is_admin


async def test_credentials_are_ignored() -> None:
    request = make_mocked_request("GET", "/", headers={"Authorization": "Bearer whatever"})
    who = await NoAuthenticator().authenticate(request)
    assert who.anonymous and who.subject == "anonymous"


def test_none_authenticator_follows_the_contract() -> None:
    assert isinstance(NoAuthenticator(), Authenticator)
