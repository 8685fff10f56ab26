"""Prometheus metrics: every family the gateway exports, and `GET /metrics`, for a token with
the `metrics` or `admin` scope (the metrics name every upstream).

Under gunicorn the workers count into prometheus_client's multiprocess files, in a
directory `gateway.metrics_files` sets up in the master before any worker starts, so
`/metrics` on any worker shows the whole server. Gauges say how workers' values combine
(`livesum`: what is open across live workers; `livemax`/`livemostrecent`: one view of
shared state). A single process (`serve`) counts in its own registry.

What every request counts goes through a `Tally`: plain Python numbers on the hot path,
added to the Prometheus metrics by `flush()` (every second, before a scrape, at exit).
A multiprocess write costs a lock and an mmap store per value, which measured at about a
tenth of a tools/call's CPU; a tally costs a dict lookup and an addition.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_async.aio.web import server_stats
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.access import scoped

M = TypeVar("M", bound=MetricWrapperBase)
P = TypeVar("P", "Count", "Observations")


class Children(Generic[M]):
    """The label children of one metric, each bound once: `children(a, b).set(1)`. Callers
    pass only bounded label values (route patterns, known methods, catalogue names)."""

    __slots__ = ("bound", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self.bound: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self.bound.get(labels)
        if child is None:
            child = self.bound[labels] = self.metric.labels(*labels)
        return child


class Count:
    """What one label set of a counter has counted since the last flush."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.n += amount


class Observations:
    """What one label set of a histogram has observed since the last flush."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.sum = 0.0
        self.counts = [0] * len(bounds)

    def observe(self, value: float) -> None:
        self.sum += value
        # The first bucket whose upper bound holds the value, as prometheus_client finds it.
        self.counts[bisect_left(self.bounds, value)] += 1


class Tally(Generic[P]):
    """A counter's or a histogram's label sets, counted in plain numbers until `flush`:
    `tally(a, b).inc()`, `tally(a).observe(seconds)`. Label values must be bounded."""

    __slots__ = ("metric", "new", "rows")

    def __init__(self, metric: Counter | Histogram, new: Callable[[], P]) -> None:
        self.metric = metric
        self.new: Callable[[], P] = new
        self.rows: dict[tuple[str, ...], P] = {}

    def __call__(self, *labels: str) -> P:
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = self.new()
        return row

    def flush(self) -> None:
        for labels, row in self.rows.items():
            if isinstance(row, Count):
                if row.n:
                    self.metric.labels(*labels).inc(row.n)  # type: ignore[union-attr]
                    row.n = 0.0
            elif any(row.counts):
                child = self.metric.labels(*labels)
                child._sum.inc(row.sum)  # type: ignore[union-attr]
                for bucket, n in zip(child._buckets, row.counts, strict=True):  # type: ignore[union-attr]
                    if n:
                        bucket.inc(n)
                row.sum, row.counts = 0.0, [0] * len(row.counts)


TALLIES: list[Tally[Count] | Tally[Observations]] = []


def counter(name: str, documentation: str, labels: Sequence[str]) -> Tally[Count]:
    tally = Tally(Counter(name, documentation, labels), Count)
    TALLIES.append(tally)
    return tally


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> Tally[Observations]:
    bounds = [float(b) for b in buckets]
    if bounds[-1] != math.inf:
        bounds.append(math.inf)
    metric = Histogram(name, documentation, labels, buckets=bounds)
    tally = Tally(metric, lambda: Observations(bounds))
    TALLIES.append(tally)
    return tally


def flush() -> None:
    """Add what every tally counted to the Prometheus metrics (this worker's files)."""
    for tally in TALLIES:
        tally.flush()


HTTP_REQUESTS = counter(
    "gateway_http_requests",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = histogram(
    "gateway_http_request_duration_seconds",
    "Time from a request's arrival to its response (a stream's whole life), by route "
    "pattern and method.",
    ["route", "method"],
)
MCP_REQUESTS = counter(
    "gateway_mcp_requests",
    "MCP (JSON-RPC) requests by method and outcome (ok, error, cancelled).",
    ["method", "outcome"],
)
TOOL_CALLS = counter(
    "gateway_tool_calls",
    "Tool calls sent upstream, by upstream, tool and outcome (ok, error, timeout).",
    ["upstream", "tool", "outcome"],
)
TOOL_CALL_SECONDS = histogram(
    "gateway_tool_call_duration_seconds",
    "Time of tool calls sent upstream, by upstream.",
    ["upstream"],
)
INTERCEPTOR_OUTCOMES = Counter(
    "gateway_interceptor_outcomes",
    "Calls an interceptor refused, failed (closed) or was skipped on (failing open).",
    ["interceptor", "outcome"],
)
CACHE_OPERATIONS = counter(
    "gateway_cache_operations",
    "Cache operations by cache type, use and outcome (ok, hit, miss, write, limited, error).",
    ["cache", "use", "outcome"],
)
CACHE_OPERATION_SECONDS = histogram(
    "gateway_cache_operation_duration_seconds",
    "Time of cache operations, by cache type and use.",
    ["cache", "use"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
RATE_LIMITED = Children(
    Counter(
        "gateway_rate_limited",
        "Requests refused by a rate limit, by limit (caller or tool).",
        ["limit"],
    )
)
UPSTREAM_UP = Children(
    Gauge(
        "gateway_upstream_up",
        "1 when the upstream answered its last health check, 0 when it failed.",
        ["upstream"],
        multiprocess_mode="livemostrecent",
    )
)
UPSTREAM_CONNECTIONS = Gauge(
    "gateway_upstream_connections_open",
    "HTTP connections to upstreams held open in the connection pools (in use or idle).",
    multiprocess_mode="livesum",
)
UPSTREAM_SESSIONS = Gauge(
    "gateway_upstream_sessions_open",
    "Per-client upstream sessions held open.",
    multiprocess_mode="livesum",
)
CLIENT_SESSIONS_CREATED = Counter(
    "gateway_client_sessions_created", "MCP client sessions created (initialize)."
)
CLIENT_SESSIONS_STREAMING = Gauge(
    "gateway_client_sessions_streaming",
    "MCP client sessions with at least one open stream.",
    multiprocess_mode="livesum",
)
CLIENT_STREAMS = Gauge(
    "gateway_client_streams_open",
    "Client streams (SSE, Streamable HTTP GET) open.",
    multiprocess_mode="livesum",
)
CATALOGUE_TOOLS = Gauge(
    "gateway_catalogue_tools",
    "Tools in the catalogue.",
    multiprocess_mode="livemax",
)
CATALOGUE_VERSION = Gauge(
    "gateway_catalogue_version",
    "The catalogue's version (the store's change counter) the most current worker holds.",
    multiprocess_mode="livemax",
)


PER_UPSTREAM: tuple[Children[Gauge] | Tally[Count] | Tally[Observations], ...] = (
    UPSTREAM_UP,
    TOOL_CALLS,
    TOOL_CALL_SECONDS,
)
"""The metrics whose first label is `upstream`: an upstream's series go with it."""


def forget_upstreams(kept: Collection[str]) -> None:
    """Drop this process's series of upstreams not in `kept` (deleted ones). In multiprocess
    mode the values stay in the workers' files, which cannot drop a series, so `metrics`
    also leaves them out of what it serves."""
    removable = multiprocess_dir() is None
    for family in PER_UPSTREAM:
        held = family.bound if isinstance(family, Children) else family.rows
        for labels in [labels for labels in held if labels[0] not in kept]:
            del held[labels]
            if removable:
                family.metric.remove(*labels)


class _KnownUpstreams:
    """The multiprocess collector's families without series of upstreams not in `kept`."""

    def __init__(self, inner: Collector, kept: Collection[str]) -> None:
        self.inner = inner
        self.kept = kept

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            family.samples = [
                s
                for s in family.samples
                if "upstream" not in s.labels or s.labels["upstream"] in self.kept
            ]
            yield family


def multiprocess_dir() -> str | None:
    # prometheus_client's own variable, read by that library at import time; the gateway
    # only follows its lead, so it is not one of the gateway's settings.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@scoped("metrics")
async def metrics(request: web.Request) -> web.Response:
    # Imported here: the keys' modules import this one.
    from gateway.keys import REGISTRY

    kept = request.app[REGISTRY].catalogue.upstreams
    forget_upstreams(kept)
    flush()
    if multiprocess_dir() is None:
        return await server_stats(request)
    registry = CollectorRegistry(auto_describe=False)
    files = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    registry.register(_KnownUpstreams(files, kept))
    response = web.Response(body=generate_latest(registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def install(app: web.Application) -> None:
    # Imported here: the sampler reads the app's parts, whose modules import this one.
    from gateway.metrics_sampler import sampler_ctx

    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(sampler_ctx)
