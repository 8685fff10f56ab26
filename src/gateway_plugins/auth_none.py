"""The `none` authenticator: every request is the anonymous principal.

For local development and trusted networks only; the anonymous principal is an admin
(see `Principal.is_admin`), so anything that can reach the gateway can use all of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.plugin import AuthSpec, Principal, Registrar, Settings, hookimpl

if TYPE_CHECKING:
    from aiohttp import web

ANONYMOUS = Principal(subject="anonymous", anonymous=True)


class NoAuthenticator:
    """Accepts every request without looking at it."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def authenticate(self, request: web.Request) -> Principal:
        return ANONYMOUS


def create_no_authenticator(settings: Settings, secret: str) -> NoAuthenticator:
    return NoAuthenticator()


@hookimpl(trylast=True)
def gateway_register_auth(register: Registrar[AuthSpec]) -> None:
    register.add(
        AuthSpec(
            name="none",
            factory=create_no_authenticator,
            description="No authentication: every request is anonymous (development only).",
        )
    )
