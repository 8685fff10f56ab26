"""Text with a NUL character, which PostgreSQL cannot store, is a 4xx naming the problem on
every admin route that writes or looks up by it, never a 500; the gateway keeps serving."""

from __future__ import annotations

from tests.conftest import RUN_MINUTES, GatewayFactory, make_token

ADMIN = {"Authorization": f"Bearer {make_token('root', ('admin',), minutes=RUN_MINUTES)}"}
NUL = "a\x00b"


async def test_nul_text_on_postgresql_is_422_or_404_and_the_gateway_keeps_serving(
    gateway: GatewayFactory, postgres_url: str
) -> None:
    client = await gateway(database_url=postgres_url)
    refused = [
        await client.post("/servers", json={"id": "s1", "name": NUL}, headers=ADMIN),
        await client.post("/servers", json={"id": "s2", "description": NUL}, headers=ADMIN),
        await client.post("/tokens/revoke", json={"jti": NUL}, headers=ADMIN),
    ]
    for response in refused:
        assert response.status == 422, await response.text()
        assert "NUL" in (await response.json())["error"]["message"]
    lookups = [
        await client.get("/servers/a%00b", headers=ADMIN),
        await client.delete("/tokens/a%00b", headers=ADMIN),
    ]
    assert [response.status for response in lookups] == [422, 404]
    created = await client.post("/servers", json={"id": "s3", "name": "fine"}, headers=ADMIN)
    assert created.status == 201, await created.text()
    listed = await (await client.get("/servers", headers=ADMIN)).json()
    assert [server["id"] for server in listed["servers"]] == ["s3"]
