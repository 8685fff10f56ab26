"""Prometheus metrics at `GET /metrics`, for a token with the `metrics` or `admin` scope
(the metrics name every upstream).

Each gunicorn worker counts in its own registry. For one view of the whole server, set
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's own variable) to an empty directory that
every worker can write: workers then count into shared files, `/metrics` adds them up, and
gunicorn's `child_exit` hook retires a dead worker's files.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_async.aio.web import server_stats
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway.access import scoped

TOOL_CALLS = Histogram(
    "gateway_tool_call_seconds",
    "Time of tool calls through the gateway, by upstream and outcome (ok, error, timeout).",
    ["upstream", "outcome"],
)


def multiprocess_dir() -> str | None:
    # prometheus_client's own variable, read by that library at import time; the gateway
    # only follows its lead, so it is not one of the gateway's settings.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@scoped("metrics")
async def metrics(request: web.Request) -> web.Response:
    if multiprocess_dir() is None:
        return await server_stats(request)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    response = web.Response(body=generate_latest(registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def install(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
