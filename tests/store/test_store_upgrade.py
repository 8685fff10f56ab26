"""What earlier versions stored is put right when the store starts, on SQLite and PostgreSQL:
credentials in an upstream's URL become its encrypted Authorization header, and the
requestState secret once kept in plaintext leaves the store, the key that replaces it being
derived from the encryption key."""

from __future__ import annotations

import base64
import time

import pytest

from gateway.jsonrpc import RPCError
from gateway.mcp.request_state import KEY_PURPOSE, Sealer, State
from tests.store.conftest import SECRET, opened, raw_rows, upstream

PASSWORD = "s3cret-pa55"
OLD_URL = f"http://alice:{PASSWORD}@old.example:8080/mcp?x=1"


async def test_credentials_in_a_stored_url_become_the_encrypted_authorization_header(
    database_url: str,
) -> None:
    store = await opened(database_url)
    # As an earlier version stored them: the URL as given.
    await store.create_upstream(upstream("old", url=OLD_URL, headers={"X-Key": "k"}), [])
    await store.create_upstream(upstream("at", url="http://at.example/@team/mcp"), [])
    version = await store.catalogue_version()
    await store.close()

    store = await opened(database_url)
    try:
        old = await store.get_upstream("old")
        at = await store.get_upstream("at")
        assert await store.catalogue_version() > version
    finally:
        await store.close()
    assert old is not None and at is not None
    assert old.url == "http://old.example:8080/mcp?x=1"
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert old.headers == {"X-Key": "k", "Authorization": f"Basic {basic}"}
    assert at.url == "http://at.example/@team/mcp"  # an @ in the path is no credential
    rows = raw_rows(database_url, "SELECT url, headers_enc FROM upstreams WHERE name = 'old'")
    assert PASSWORD not in repr(rows) and basic not in repr(rows)


async def test_the_rewrite_runs_once_and_changes_nothing_on_later_starts(
    database_url: str,
) -> None:
    store = await opened(database_url)
    await store.create_upstream(upstream("old", url=OLD_URL), [])
    await store.close()
    store = await opened(database_url)
    version, first = await store.catalogue_version(), await store.get_upstream("old")
    await store.close()
    store = await opened(database_url)
    try:
        assert await store.catalogue_version() == version
        assert await store.get_upstream("old") == first
    finally:
        await store.close()


async def test_a_stored_request_state_secret_leaves_the_store_at_start(database_url: str) -> None:
    store = await opened(database_url)
    await store.get_or_create_secret("request_state_secret", lambda: "kept-in-plaintext")
    await store.close()
    query = "SELECT name FROM secrets WHERE name = 'request_state_secret'"
    assert raw_rows(database_url, query) == [("request_state_secret",)]
    store = await opened(database_url)
    await store.close()
    assert raw_rows(database_url, query) == []


async def test_request_state_sealed_by_one_instance_opens_on_another_sharing_the_key(
    database_url: str,
) -> None:
    first, second = await opened(database_url), await opened(database_url)
    other = await opened(database_url, "another-encryption-secret")
    try:
        state = State("call-1", "user", "tool", ("ask-1",), "round-1", time.time() + 30)
        sealed = Sealer(first.derived_key(KEY_PURPOSE)).seal(state)
        assert Sealer(second.derived_key(KEY_PURPOSE)).open(sealed) == state
        # Another encryption key, or another purpose, gives another key.
        assert other.derived_key(KEY_PURPOSE) != first.derived_key(KEY_PURPOSE)
        assert first.derived_key("something-else") != first.derived_key(KEY_PURPOSE)
        with pytest.raises(RPCError, match="tampered"):
            Sealer(first.derived_key("something-else")).open(sealed)
        # The key is neither the encryption secret nor anywhere in the database.
        key = first.derived_key(KEY_PURPOSE)
        assert SECRET.encode() != key
        dump = repr(raw_rows(database_url, "SELECT name, value FROM secrets"))
        assert key.hex() not in dump and base64.b64encode(key).decode() not in dump
    finally:
        for store in (first, second, other):
            await store.close()
