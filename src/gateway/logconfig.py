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
            }
        },
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
