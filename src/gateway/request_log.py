"""What the gateway records of every HTTP request it answers: the request counter and
latency histogram by route pattern (never the raw path, so the labels stay few), and,
with `ACCESS_LOG=json`, one access-log line."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from gateway.access import PRINCIPAL
from gateway.logconfig import short_hash
from gateway.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

access_log = structlog.get_logger("gateway.access")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
CANCELLED = 499
"""The status counted for a request whose client left before its response (nginx's)."""


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def finished(request: web.Request, status: int, started: float, log_access: bool) -> None:
    """Count a request answered with `status`, begun at `started` (`time.perf_counter`)."""
    elapsed = time.perf_counter() - started
    route = route_of(request)
    method = request.method if request.method in METHODS else "other"
    HTTP_REQUESTS(route, method, str(status)).inc()
    HTTP_REQUEST_SECONDS(route, method).observe(elapsed)
    if log_access:
        who = request.get(PRINCIPAL)
        access_log.info(
            "request",
            method=method,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            subject_hash=short_hash(who.subject) if who is not None else None,
        )
