"""A virtual server's interceptors in the store (migration 9): None, the gateway's, stays
NULL; a list, empty or not, comes back as it went in, on both stores."""

from __future__ import annotations

from gateway.store import ServerRecord, Store


async def test_a_server_keeps_its_interceptors_and_none_stays_none(store: Store) -> None:
    await store.create_server(ServerRecord(id="guarded", name="G", interceptors=("rules", "pii")))
    await store.create_server(ServerRecord(id="bare", name="B", interceptors=()))
    await store.create_server(ServerRecord(id="usual", name="U"))
    got = {server.id: server.interceptors for server in await store.list_servers()}
    assert got == {"guarded": ("rules", "pii"), "bare": (), "usual": None}


async def test_an_update_changes_the_interceptors_back_to_the_gateways(store: Store) -> None:
    created = await store.create_server(ServerRecord(id="s", name="S", interceptors=("pii",)))
    await store.update_server(ServerRecord(id="s", name="S", created_at=created.created_at))
    updated = await store.get_server("s")
    assert updated is not None and updated.interceptors is None
