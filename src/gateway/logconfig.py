"""Logging: structlog JSON lines (or console lines on a terminal) for the gateway, gunicorn
and aiohttp alike, each carrying the request id bound by the request-id middleware."""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import orjson
import structlog

from gateway.settings import Settings


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
