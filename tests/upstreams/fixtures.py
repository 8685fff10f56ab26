"""Pytest fixtures that run the upstream servers as subprocesses.

Load them with `pytest_plugins = ["tests.upstreams.fixtures"]` in the top-level conftest.
Our own server is started per test, so `/admin/stats` counts only that test's traffic;
the SDK server is shared by the session because it is slow to start and holds no counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .processes import RunningUpstream, start_own, start_sdk, stop_upstream

UpstreamFactory = Callable[..., RunningUpstream]


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


@pytest.fixture(scope="session")
def sdk_upstream() -> Iterator[RunningUpstream]:
    """The official SDK's server: stateful sessions, SSE replies."""
    upstream = start_sdk()
    yield upstream
    stop_upstream(upstream)
