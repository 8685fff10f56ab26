"""Pub/sub on one instance: publishing with nobody listening, fan-out, distinct channels."""

from __future__ import annotations

import asyncio

from gateway.contracts import Cache
from gateway.testing.cache_conformance.listeners import MESSAGE, listening, wait_until_listening
from gateway.testing.cache_conformance.support import unique


class PubSubTests:
    """`publish` and `subscribe`, which carry invalidations between workers."""

    async def test_publish_without_subscribers_succeeds(self, cache: Cache) -> None:
        await cache.publish(unique("nobody"), MESSAGE)

    async def test_publish_reaches_two_subscribers_within_one_second(self, cache: Cache) -> None:
        channel = unique("news")
        async with listening(cache, channel) as first, listening(cache, channel) as second:
            await wait_until_listening(cache, channel, first, second)
            await cache.publish(channel, MESSAGE)
            received = list(await asyncio.gather(first.expect(), second.expect()))
        assert received == [MESSAGE, MESSAGE]

    async def test_channels_with_similar_names_stay_distinct(self, cache: Cache) -> None:
        suffix = unique("")
        dashed, underscored = f"news-a.b{suffix}", f"news_a_b{suffix}"
        async with listening(cache, dashed) as one, listening(cache, underscored) as other:
            await wait_until_listening(cache, dashed, one)
            await wait_until_listening(cache, underscored, other)
            for channel, message in [
                (dashed, b"one"),
                (underscored, b"other"),
                (dashed, b"end one"),
                (underscored, b"end other"),
            ]:
                await cache.publish(channel, message)
            assert [await one.expect(), await one.expect()] == [b"one", b"end one"]
            assert [await other.expect(), await other.expect()] == [b"other", b"end other"]
