"""The middleware every request passes: its id, admission, and JSON for every error.

No traceback or HTML page ever reaches a client: HTTP errors become
`{"error": {"status", "message"}}` and anything unexpected becomes a 500 of that shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError

from gateway import content_codings, expectations, request_ids
from gateway.access import Admit
from gateway.request_log import CANCELLED, finished

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = request_ids.HEADER


def error_response(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": message}}, status=status, headers=headers or None
    )


def front_door(admit: Admit, access_log: bool = False) -> Middleware:
    """The one middleware every request passes: tag it (its log lines and its upstream
    requests) with its id, admit it or not (`access.gatekeeper`), turn every failure into
    JSON, and count it (`request_log`). One layer rather than four: every request pays for
    each layer it passes."""

    @web.middleware
    async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_ids.request_id(request.headers.get(REQUEST_ID_HEADER, ""))
        request_ids.current.set(rid)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            response = (
                _undecodable_headers(request)
                or _unmet_expectation(request)
                or _unsupported_coding(request)
                or await admit(request)
                or await handler(request)
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                exc.headers[REQUEST_ID_HEADER] = rid
                finished(request, exc.status, started, access_log)
                raise
            response = _http_error(exc)
        except RequestPayloadError as exc:
            response = _undecodable_body(request, exc)
        except asyncio.CancelledError:
            finished(request, CANCELLED, started, access_log)
            raise
        except Exception:
            log.exception("request failed", path=request.path, method=request.method)
            response = error_response(500, "internal server error")
        response.headers[REQUEST_ID_HEADER] = rid
        finished(request, response.status, started, access_log)
        return response

    return envelope


def _undecodable_headers(request: web.Request) -> web.Response | None:
    """A 400 naming a header whose value is not UTF-8, if there is one. aiohttp keeps such
    bytes as lone surrogates, which every encoder downstream (JSON, HTML, the JWT
    libraries, cache keys) refuses with an exception, so nothing may read them."""
    for name, value in request.raw_headers:
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                header = name.decode("ascii", "replace")
                return error_response(400, f"header {header} is not valid UTF-8")
    return None


def _unmet_expectation(request: web.Request) -> web.Response | None:
    """A 417 for an `Expect` other than `100-continue`, which the gateway does not meet
    (`expectations` leaves it here, so it is answered like every other error)."""
    if expectations.unmet(request):
        return error_response(417, "header Expect: only 100-continue is supported")
    return None


def _unsupported_coding(request: web.Request) -> web.Response | None:
    """A 415 for a body in a coding aiohttp does not decode, which it would pass on as if
    it were the body itself (`content_codings`)."""
    if content_codings.unsupported(request):
        return error_response(
            415, content_codings.UNSUPPORTED, **{"Accept-Encoding": content_codings.ACCEPT_ENCODING}
        )
    return None


def _undecodable_body(request: web.Request, exc: RequestPayloadError) -> web.Response:
    """A 400 naming what is wrong with a body aiohttp could not decode (not valid gzip...):
    the client's fault, logged as one line. aiohttp's parser takes nothing more from the
    connection after the fault, so the answer closes it; and the body is marked ended, or
    aiohttp would read it again after the answer, to discard its rest, and log the same
    fault as an unhandled exception."""
    message = content_codings.fault(request, exc)
    log.info(
        "malformed HTTP request body refused",
        path=request.path,
        method=request.method,
        reason=content_codings.reason(exc),
    )
    request.content.feed_eof()
    response = error_response(400, message)
    response.force_close()
    return response


def _http_error(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return error_response(exc.status, message or exc.reason, **headers)
