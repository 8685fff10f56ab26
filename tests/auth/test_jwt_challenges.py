"""The `jwt` authenticator's challenges (RFC 6750), which the `oauth` one extends: a refused
token gets `invalid_token`, a token without the scope a route needs gets 403
`insufficient_scope` naming it."""

from __future__ import annotations

from tests.conftest import GatewayFactory, make_token


async def test_a_jwt_without_the_admin_scope_gets_insufficient_scope_naming_admin(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    response = await client.get(
        "/upstreams", headers={"Authorization": f"Bearer {make_token('user')}"}
    )
    assert response.status == 403
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer error="insufficient_scope", scope="admin", error_description="'
    )


async def test_a_jwt_without_the_metrics_scope_gets_insufficient_scope_naming_metrics(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    response = await client.get(
        "/metrics", headers={"Authorization": f"Bearer {make_token('user')}"}
    )
    assert response.status == 403
    assert 'scope="metrics"' in response.headers["WWW-Authenticate"]


async def test_a_refused_jwt_still_gets_invalid_token(gateway: GatewayFactory) -> None:
    client = await gateway()
    response = await client.get("/upstreams", headers={"Authorization": "Bearer nope"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert "resource_metadata" not in response.headers["WWW-Authenticate"]
