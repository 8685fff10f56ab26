"""Logging: structlog JSON lines (or console lines on a terminal) for the gateway, gunicorn
and aiohttp alike, each carrying the request id bound by the request-id middleware.

No level shows a secret: the database and HTTP client libraries, whose debug output carries
statements, parameters and headers, log at WARNING or above whatever `LOG_LEVEL` says, and
every event passes `redact_secrets` before it is rendered."""

from __future__ import annotations

import hashlib
import logging
import logging.config
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from gateway import content_codings
from gateway.settings import Settings

QUIET_LIBRARIES = ("aiosqlite", "aiopg", "psycopg2", "aiohttp.client", "asyncio", "redis")
"""Libraries whose debug and info lines may carry SQL parameters (the stored secrets),
headers or connection strings."""

SECRET_FIELDS = frozenset(
    {"authorization", "token", "secret", "password", "cookie", "headers", "session_id"}
)
# Not a bare `key`, which names cache keys worth seeing at debug.
SECRET_SUFFIXES = ("_token", "_secret", "_password", "api_key", "secret_key", "encryption_key")
REDACTED = "[redacted]"


def short_hash(value: str) -> str:
    """What a log line shows of an identifier that grants access, such as a session id."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A safety net under the call sites, which never log secrets in the first place."""
    for name in event:
        lowered = name.lower()
        if lowered in SECRET_FIELDS or lowered.endswith(SECRET_SUFFIXES):
            event[name] = REDACTED
    return event


class MalformedRequests(logging.Filter):
    """aiohttp logs a request its HTTP parser refuses (a bad header line, a header over
    8 KiB, an unknown method) at ERROR with a traceback, though the fault is the client's
    and the client already got its 400. Such a record becomes one INFO line with the reason.

    So does the one aiohttp logs as an unhandled exception when a body the app did not read
    (it answered 401, 404...) turns out not to be valid data of its `Content-Encoding` as
    aiohttp reads the rest of it after the answer; a body the app reads is answered 400
    by the front door (`middlewares`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = str(record.msg)
        if isinstance(exc, HttpProcessingError) and message.startswith("Error handling request"):
            reason = (exc.message or "").strip().splitlines()
            record.msg = "malformed HTTP request from %s refused: %s"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (remote, reason[0] if reason else "")
            _quiet(record)
        elif isinstance(exc, RequestPayloadError) and message == "Unhandled exception":
            record.msg = "malformed HTTP request body discarded: %s"
            record.args = (content_codings.reason(exc),)
            _quiet(record)
        return True


def _quiet(record: logging.LogRecord) -> None:
    """`record` as one INFO line, without its traceback."""
    record.exc_info = record.exc_text = None
    record.levelno, record.levelname = logging.INFO, "INFO"


def _use_console(settings: Settings) -> bool:
    if settings.log_format == "auto":
        return sys.stderr.isatty()
    return settings.log_format == "console"


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def _renderer(settings: Settings) -> Any:
    if _use_console(settings):
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer(
        serializer=lambda obj, **kw: orjson.dumps(obj, default=str).decode()
    )


def formatter_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config` formatter entry that renders stdlib records like structlog's."""
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(settings),
        ],
        "foreign_pre_chain": _shared_processors(),
    }


def logging_dict(settings: Settings) -> dict[str, Any]:
    """The whole stdlib logging configuration; gunicorn takes it as `logconfig_dict`."""
    level = settings.log_level.upper()
    quiet = max(logging.getLevelNamesMapping()[level], logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": formatter_config(settings)},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stderr",
                "filters": ["malformed_requests"],
            }
        },
        "filters": {"malformed_requests": {"()": MalformedRequests}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": [], "level": level, "propagate": True},
            "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": True},
            "aiohttp.access": {"handlers": [], "level": "INFO", "propagate": True},
            **{
                name: {"handlers": [], "level": quiet, "propagate": True}
                for name in QUIET_LIBRARIES
            },
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_dict(settings))
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.log_level.upper()]
        ),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
