"""The only reader of the environment and `.env`: builds one frozen `Settings`.

The environment wins over `.env` in the working directory. A bad value raises
`SettingsError` with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= minimum:
        raise SettingsError(f"{name}={raw!r} must be greater than {minimum:g}")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r} is not one of: {', '.join(choices)}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _database_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise SettingsError(
            f"{name}={raw!r} is not supported; use sqlite:///path/to/file.db "
            "or postgresql://user@host:port/dbname"
        )
    return value


def _cpu_workers() -> int:
    return max(2, (os.cpu_count() or 1) * 2)


@dataclass(frozen=True)
class Settings:
    """Every setting of the gateway; see `.env.example` for what each one means."""

    host: str = "0.0.0.0"
    port: int = 4444
    database_url: str = "sqlite:///./gateway.db"
    cache_type: str = "database"
    cache_prefix: str = "mcpgw"
    redis_url: str = "redis://127.0.0.1:6379/0"
    memory_cache_max_items: int = 100_000
    auth_required: bool = True
    auth_type: str = "jwt"
    jwt_secret_key: str = ""
    jwt_algorithm: str = "HS256"
    auth_encryption_secret: str = ""
    tool_timeout: float = 30.0
    tool_name_separator: str = "__"
    max_request_bytes: int = 1_048_576
    catalogue_poll_interval: float = 1.0
    cache_timeout: float = 1.0
    rate_limit_per_minute: int = 0
    tool_rate_limit_per_minute: int = 0
    leader_ttl: float = 15.0
    upstream_health_interval: float = 30.0
    upstream_refresh_interval: float = 300.0
    session_ttl: float = 3600.0
    log_level: str = "info"
    log_format: str = "auto"
    plugins_blocked: tuple[str, ...] = ()
    plugins_trace: bool = False
    allowed_origins: tuple[str, ...] = ()
    event_loop: str = "auto"
    gunicorn_workers: int = field(default_factory=_cpu_workers)
    gunicorn_timeout: int = 60
    gunicorn_graceful_timeout: int = 30
    gunicorn_keepalive: int = 5
    gunicorn_max_requests: int = 100_000
    gunicorn_max_requests_jitter: int = 10_000
    gunicorn_preload_app: bool = False
    gunicorn_backlog: int = 2048
    gunicorn_access_log: bool = False

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_ALGORITHMS = ("HS256", "HS384", "HS512")

# Each entry: environment variable -> (field, parser). Parsers get (name, raw).
_PARSERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "HOST": ("host", lambda n, r: r.strip() or "0.0.0.0"),
    "PORT": ("port", lambda n, r: _int(n, r, 1)),
    "DATABASE_URL": ("database_url", _database_url),
    "CACHE_TYPE": ("cache_type", lambda n, r: r.strip().lower()),
    "CACHE_PREFIX": ("cache_prefix", lambda n, r: r.strip()),
    "REDIS_URL": ("redis_url", lambda n, r: r.strip()),
    "MEMORY_CACHE_MAX_ITEMS": ("memory_cache_max_items", lambda n, r: _int(n, r, 1)),
    "AUTH_REQUIRED": ("auth_required", _bool),
    "AUTH_TYPE": ("auth_type", lambda n, r: r.strip().lower()),
    "JWT_SECRET_KEY": ("jwt_secret_key", lambda n, r: r),
    "JWT_ALGORITHM": ("jwt_algorithm", lambda n, r: _algorithm(n, r)),
    "AUTH_ENCRYPTION_SECRET": ("auth_encryption_secret", lambda n, r: r),
    "TOOL_TIMEOUT": ("tool_timeout", _float),
    "TOOL_NAME_SEPARATOR": ("tool_name_separator", lambda n, r: _separator(n, r)),
    "MAX_REQUEST_BYTES": ("max_request_bytes", lambda n, r: _int(n, r, 1024)),
    "CATALOGUE_POLL_INTERVAL": ("catalogue_poll_interval", _float),
    "CACHE_TIMEOUT": ("cache_timeout", _float),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", lambda n, r: _int(n, r, 0)),
    "TOOL_RATE_LIMIT_PER_MINUTE": ("tool_rate_limit_per_minute", lambda n, r: _int(n, r, 0)),
    "LEADER_TTL": ("leader_ttl", _float),
    "UPSTREAM_HEALTH_INTERVAL": ("upstream_health_interval", _float),
    "UPSTREAM_REFRESH_INTERVAL": ("upstream_refresh_interval", _float),
    "SESSION_TTL": ("session_ttl", _float),
    "LOG_LEVEL": ("log_level", lambda n, r: _choice(n, r, _LOG_LEVELS)),
    "LOG_FORMAT": ("log_format", lambda n, r: _choice(n, r, ("auto", "json", "console"))),
    "PLUGINS_BLOCKED": ("plugins_blocked", lambda n, r: _list(r)),
    "PLUGINS_TRACE": ("plugins_trace", _bool),
    "ALLOWED_ORIGINS": ("allowed_origins", lambda n, r: _list(r)),
    "EVENT_LOOP": ("event_loop", lambda n, r: _choice(n, r, ("auto", "uvloop", "asyncio"))),
    "GUNICORN_WORKERS": ("gunicorn_workers", lambda n, r: _int(n, r, 1)),
    "GUNICORN_TIMEOUT": ("gunicorn_timeout", lambda n, r: _int(n, r, 1)),
    "GUNICORN_GRACEFUL_TIMEOUT": ("gunicorn_graceful_timeout", lambda n, r: _int(n, r, 1)),
    "GUNICORN_KEEPALIVE": ("gunicorn_keepalive", lambda n, r: _int(n, r, 0)),
    "GUNICORN_MAX_REQUESTS": ("gunicorn_max_requests", lambda n, r: _int(n, r, 0)),
    "GUNICORN_MAX_REQUESTS_JITTER": ("gunicorn_max_requests_jitter", lambda n, r: _int(n, r, 0)),
    "GUNICORN_PRELOAD_APP": ("gunicorn_preload_app", _bool),
    "GUNICORN_BACKLOG": ("gunicorn_backlog", lambda n, r: _int(n, r, 1)),
    "GUNICORN_ACCESS_LOG": ("gunicorn_access_log", _bool),
}

ENVIRONMENT_VARIABLES = tuple(_PARSERS)


def _algorithm(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in _ALGORITHMS:
        raise SettingsError(f"{name}={raw!r} is not one of: {', '.join(_ALGORITHMS)}")
    return value


def _separator(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(not (c.isalnum() or c in "_-.") for c in value):
        raise SettingsError(f"{name}={raw!r} must be one or more of the characters _ - .")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | str | None = ".env"
) -> Settings:
    """Read settings from `.env` (if present) overlaid by the environment."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    parsed: dict[str, Any] = {}
    for variable, (field_name, parser) in _PARSERS.items():
        raw = values.get(variable)
        if raw is not None and raw.strip() != "":
            parsed[field_name] = parser(variable, raw)
    return Settings(**parsed)
