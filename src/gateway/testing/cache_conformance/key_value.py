"""The key-value part of the suite: round trips, overwrite, delete, TTLs, large values and
unusual keys.
"""

from __future__ import annotations

import os

import pytest

from gateway.contracts import Cache
from gateway.testing.cache_conformance.support import (
    EARLY_TOLERANCE,
    LONG_TTL,
    SHORT_TTL,
    gone_after,
    now,
    unique,
)

# NUL is left out: SQL text columns cannot hold it, and gateway keys never contain it.
UNUSUAL_KEYS = (
    "",
    "with space",
    " leading and trailing ",
    "colon:separated:key",
    "slash/and\\backslash",
    "glob*?[a-z]{1,2}",
    "quotes'\"`",
    "percent%s%(name)s%%",
    "question?mark&and=equals",
    "semicolon; DROP TABLE cache_entries; --",
    "new\nline\ttab\rreturn",
    "ünïcødé-ключ-鍵-🔑",
    "a-b",
    "a_b",
    "A-B",
    "k" * 1000,
)


class KeyValueTests:
    """`get`, `set` and `delete`, with and without a TTL."""

    async def test_get_of_a_missing_key_returns_none(self, cache: Cache) -> None:
        assert await cache.get(unique("missing")) is None

    @pytest.mark.parametrize(
        "value", [b"", b"value", bytes(range(256))], ids=["empty", "ascii", "every-byte"]
    )
    async def test_set_then_get_returns_the_same_bytes(self, cache: Cache, value: bytes) -> None:
        key = unique("round-trip")
        await cache.set(key, value)
        assert await cache.get(key) == value

    async def test_set_overwrites_the_value(self, cache: Cache) -> None:
        key = unique("overwrite")
        await cache.set(key, b"first")
        await cache.set(key, b"second")
        assert await cache.get(key) == b"second"

    async def test_delete_removes_a_key_and_ignores_a_missing_one(self, cache: Cache) -> None:
        key = unique("delete")
        await cache.set(key, b"value")
        await cache.delete(key)
        assert await cache.get(key) is None
        await cache.delete(key)
        await cache.delete(unique("never-set"))

    async def test_set_with_ttl_expires_after_the_ttl_and_not_before(self, cache: Cache) -> None:
        key = unique("ttl")
        started = now()
        await cache.set(key, b"value", ttl=SHORT_TTL)
        assert await cache.get(key) == b"value"
        assert await gone_after(cache, key, started) >= SHORT_TTL - EARLY_TOLERANCE

    async def test_set_without_ttl_persists_and_clears_an_earlier_ttl(self, cache: Cache) -> None:
        timed, plain, cleared = unique("timed"), unique("plain"), unique("cleared")
        started = now()
        await cache.set(plain, b"plain")
        await cache.set(cleared, b"timed", ttl=SHORT_TTL)
        await cache.set(cleared, b"plain")
        await cache.set(timed, b"timed", ttl=SHORT_TTL)
        await gone_after(cache, timed, started)
        assert await cache.get(plain) == b"plain"
        assert await cache.get(cleared) == b"plain"

    @pytest.mark.parametrize("mebibytes", [1, 5])
    async def test_large_values_round_trip(self, cache: Cache, mebibytes: int) -> None:
        key = unique("large")
        value = os.urandom(mebibytes * 1024 * 1024)
        await cache.set(key, value, ttl=LONG_TTL)
        assert await cache.get(key) == value

    async def test_keys_with_unusual_characters_round_trip_and_stay_distinct(
        self, cache: Cache
    ) -> None:
        suffix = unique("")
        keys = [key + suffix for key in UNUSUAL_KEYS]
        for number, key in enumerate(keys):
            await cache.set(key, f"value {number}".encode(), ttl=LONG_TTL)
        found = {key: await cache.get(key) for key in keys}
        assert found == {key: f"value {number}".encode() for number, key in enumerate(keys)}
