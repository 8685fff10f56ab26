"""Pytest fixtures that run the upstream servers as subprocesses.

Load them with `pytest_plugins = ["tests.upstreams.fixtures"]` in the top-level conftest.
Our own server is started per test, so `/admin/stats` counts only that test's traffic;
the SDK servers are shared by the session because they are slow to start and hold no counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.waiting import eventually as eventually

from .processes import RunningUpstream, start_own, start_sdk, stop_upstream

JSON = dict[str, Any]

UpstreamFactory = Callable[..., RunningUpstream]


async def stat_is(upstream: RunningUpstream, key: str, value: Any) -> None:
    """Wait until our server's `/admin/stats` shows `key` at `value`."""

    async def check() -> bool:
        return bool((await upstream.stats())[key] == value)

    await eventually(check, what=f"stats[{key!r}] == {value!r}")


class Recorder:
    """Collects notifications, as a request's `on_notification` or a backend's listener."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, JSON]] = []

    async def __call__(self, method: str, params: JSON) -> None:
        self.seen.append((method, params))

    def methods(self) -> list[str]:
        return [method for method, _ in self.seen]

    def of(self, method: str) -> list[JSON]:
        return [params for seen, params in self.seen if seen == method]

    async def received(self, method: str, count: int = 1) -> None:
        """Wait until `count` notifications of `method` have come."""

        async def check() -> bool:
            return len(self.of(method)) >= count

        await eventually(check, what=f"{count} x {method}")


@pytest.fixture
def own_upstream_factory() -> Iterator[UpstreamFactory]:
    """Start our server with any options, e.g. `own_upstream_factory("--tools", "25")`;
    every server started is stopped at teardown."""
    started: list[RunningUpstream] = []

    def start(*args: str) -> RunningUpstream:
        upstream = start_own(*args)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        stop_upstream(upstream)


@pytest.fixture
def own_upstream(own_upstream_factory: UpstreamFactory) -> RunningUpstream:
    """Our server answering with JSON bodies."""
    return own_upstream_factory()


@pytest.fixture
def own_upstream_sse(own_upstream_factory: UpstreamFactory) -> RunningUpstream:
    """Our server answering every request with an SSE stream."""
    return own_upstream_factory("--sse")


@pytest.fixture
def own_upstream_legacy(own_upstream_factory: UpstreamFactory) -> RunningUpstream:
    """Our server on the 2024-11-05 HTTP+SSE transport; connect to its `sse_url`."""
    return own_upstream_factory("--legacy-sse")


@pytest.fixture(scope="session")
def sdk_upstream() -> Iterator[RunningUpstream]:
    """The official SDK's server: stateful sessions, SSE replies."""
    upstream = start_sdk()
    yield upstream
    stop_upstream(upstream)


@pytest.fixture(scope="session")
def sdk_upstream_legacy() -> Iterator[RunningUpstream]:
    """The official SDK's server on the 2024-11-05 HTTP+SSE transport (`sse_url`)."""
    upstream = start_sdk("--legacy-sse")
    yield upstream
    stop_upstream(upstream)
