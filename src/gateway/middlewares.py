"""The middleware every request passes: its id, admission, and JSON for every error.

No traceback or HTML page ever reaches a client: HTTP errors become
`{"error": {"status", "message"}}` and anything unexpected becomes a 500 of that shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.access import Admit
from gateway.ids import process_tag

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-ID"
_MAX_REQUEST_ID = 128
# A random per-process prefix plus a counter: unique across workers and restarts, and much
# cheaper than a uuid4 per request.
_ID_COUNTER = itertools.count(1)


def error_response(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": message}}, status=status, headers=headers or None
    )


def front_door(admit: Admit) -> Middleware:
    """The one middleware every request passes: tag it (and its log lines) with its id,
    admit it or not (`access.gatekeeper`), and turn every failure into JSON. One layer
    rather than three: every request pays for each layer it passes."""

    @web.middleware
    async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        if 0 < len(given) <= _MAX_REQUEST_ID and given.isprintable():
            rid = given
        else:
            rid = f"{process_tag()}{next(_ID_COUNTER):012x}"
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            response = await admit(request) or await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                exc.headers[REQUEST_ID_HEADER] = rid
                raise
            response = _http_error(exc)
        except Exception:
            log.exception("request failed", path=request.path, method=request.method)
            response = error_response(500, "internal server error")
        response.headers[REQUEST_ID_HEADER] = rid
        return response

    return envelope


def _http_error(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return error_response(exc.status, message or exc.reason, **headers)
