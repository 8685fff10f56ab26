"""The gateway's environment variables and the parsers that check their text.

`PARSERS` names, for each variable the gateway itself reads, the `Settings` field it sets
and the parser that turns its raw text into a value. A parser raises `SettingsError` with
one line naming the variable and what it accepts. `text`, `boolean`, `integer`, `number`
and `choice` are the parsers plugins use for their own settings. `gateway.settings` does
the reading.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson

from gateway.jsonrpc import DEPTH_CEILING
from gateway.roles import Role, RoleError, parse_roles

T = TypeVar("T")


Parser = Callable[[str, str], T]
"""Turns (variable, raw text) into a value, or raises `SettingsError` with one line."""


class SettingsError(ValueError):
    """Settings the gateway cannot use: one line per problem."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    """The choice `raw` names, in any letter case, spelt as in `choices`."""
    value = raw.strip().lower()
    for choice in choices:
        if choice.lower() == value:
            return choice
    raise SettingsError(f"{name}={raw!r} is not one of: {', '.join(choices)}")


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _cidrs(name: str, raw: str) -> tuple[str, ...]:
    """Address ranges in CIDR notation (a bare address is a range of one), normalised."""
    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in _list(raw))
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a list of CIDR ranges: {exc}") from None


def _database_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise SettingsError(
            f"{name}={raw!r} is not supported; use sqlite:///path/to/file.db "
            "or postgresql://user@host:port/dbname"
        )
    return value


# --- parsers for plugins' settings ----------------------------------------------------------


def text(name: str, raw: str) -> str:
    return raw.strip()


def boolean(name: str, raw: str) -> bool:
    return _bool(name, raw)


def integer(minimum: int = 0) -> Parser[int]:
    return lambda name, raw: _int(name, raw, minimum)


def number(above: float = 0.0) -> Parser[float]:
    return lambda name, raw: _float(name, raw, above)


def choice(*choices: str) -> Parser[str]:
    return lambda name, raw: _choice(name, raw, choices)


_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Each entry: environment variable -> (field, parser). Parsers get (name, raw).
PARSERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "HOST": ("host", lambda n, r: r.strip() or "0.0.0.0"),
    "PORT": ("port", lambda n, r: _int(n, r, 1)),
    "DATABASE_URL": ("database_url", _database_url),
    "CACHE_TYPE": ("cache_type", lambda n, r: r.strip().lower()),
    "CACHE_PREFIX": ("cache_prefix", lambda n, r: r.strip()),
    "AUTH_REQUIRED": ("auth_required", _bool),
    "AUTH_TYPE": ("auth_type", lambda n, r: r.strip().lower()),
    "JWT_SECRET_KEY": ("jwt_secret_key", lambda n, r: r),
    "AUTH_ENCRYPTION_SECRET": ("auth_encryption_secret", lambda n, r: r),
    "SECRETS_DIR": ("secrets_dir", lambda n, r: r.strip()),
    "TOOL_TIMEOUT": ("tool_timeout", _float),
    "TOOL_NAME_SEPARATOR": ("tool_name_separator", lambda n, r: _separator(n, r)),
    "MAX_REQUEST_BYTES": ("max_request_bytes", lambda n, r: _int(n, r, 1024)),
    "MAX_JSON_DEPTH": ("max_json_depth", lambda n, r: _at_most(n, _int(n, r, 2), DEPTH_CEILING)),
    "MAX_BATCH": ("max_batch", lambda n, r: _int(n, r, 1)),
    "MAX_RESPONSE_BYTES": ("max_response_bytes", lambda n, r: _int(n, r, 1024)),
    "MAX_INITIALIZE_BYTES": ("max_initialize_bytes", lambda n, r: _int(n, r, 256)),
    "MAX_SESSIONS_PER_SUBJECT": ("max_sessions_per_subject", lambda n, r: _int(n, r, 0)),
    "MAX_STREAMS_PER_SESSION": ("max_streams_per_session", lambda n, r: _int(n, r, 0)),
    "MAX_STREAMS_PER_SUBJECT": ("max_streams_per_subject", lambda n, r: _int(n, r, 0)),
    "MAX_STREAMS": ("max_streams", lambda n, r: _int(n, r, 0)),
    "MAX_INFLIGHT_PER_SESSION": ("max_inflight_per_session", lambda n, r: _int(n, r, 0)),
    "MAX_INFLIGHT_PER_SUBJECT": ("max_inflight_per_subject", lambda n, r: _int(n, r, 0)),
    "MAX_INFLIGHT": ("max_inflight", lambda n, r: _int(n, r, 0)),
    "MAX_UPSTREAM_RESPONSE_BYTES": (
        "max_upstream_response_bytes",
        lambda n, r: _int(n, r, 1024),
    ),
    "MAX_SSE_LINE_BYTES": ("max_sse_line_bytes", lambda n, r: _int(n, r, 1024)),
    "CATALOGUE_POLL_INTERVAL": ("catalogue_poll_interval", _float),
    "CACHE_TIMEOUT": ("cache_timeout", _float),
    "CONSISTENCY_TIMEOUT": ("consistency_timeout", _float),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", lambda n, r: _int(n, r, 0)),
    "TOOL_RATE_LIMIT_PER_MINUTE": ("tool_rate_limit_per_minute", lambda n, r: _int(n, r, 0)),
    "LEADER_TTL": ("leader_ttl", _float),
    "UPSTREAM_HEALTH_INTERVAL": ("upstream_health_interval", _float),
    "UPSTREAM_REFRESH_INTERVAL": ("upstream_refresh_interval", _float),
    "SESSION_TTL": ("session_ttl", _float),
    "ADMIN_UI": ("admin_ui", _bool),
    "ADMIN_UI_SESSION_TTL": ("admin_ui_session_ttl", lambda n, r: _float(n, r, 60.0)),
    "PER_CLIENT_SESSIONS_MAX": ("per_client_sessions_max", lambda n, r: _int(n, r, 1)),
    "BRIDGED_CALLS_MAX": ("bridged_calls_max", lambda n, r: _int(n, r, 1)),
    "DETACHED_CALLS_MAX": ("detached_calls_max", lambda n, r: _int(n, r, 0)),
    "MCP_SESSIONS": ("mcp_sessions", lambda n, r: _choice(n, r, ("optional", "required"))),
    "LOG_LEVEL": ("log_level", lambda n, r: _choice(n, r, _LOG_LEVELS)),
    "LOG_FORMAT": ("log_format", lambda n, r: _choice(n, r, ("auto", "json", "console"))),
    "ACCESS_LOG": ("access_log", lambda n, r: _choice(n, r, ("off", "json"))),
    "PLUGINS_BLOCKED": ("plugins_blocked", lambda n, r: _list(r)),
    "PLUGINS_TRACE": ("plugins_trace", _bool),
    "INTERCEPTORS": ("interceptors", lambda n, r: _list(r)),
    "INTERCEPTOR_TIMEOUT": ("interceptor_timeout", _float),
    "INTERCEPTORS_FAIL_OPEN": ("interceptors_fail_open", _bool),
    "ALLOWED_ORIGINS": ("allowed_origins", lambda n, r: _list(r)),
    "UPSTREAM_ALLOW_CIDRS": ("upstream_allow_cidrs", lambda n, r: _cidrs(n, r)),
    "UPSTREAM_DENY_CIDRS": ("upstream_deny_cidrs", lambda n, r: _cidrs(n, r)),
    "ALLOWED_HOSTS": ("allowed_hosts", lambda n, r: _list(r)),
    "PUBLIC_URL": ("public_url", lambda n, r: _public_url(n, r)),
    "GATEWAY_CONFIG": ("config_file", lambda n, r: r.strip()),
    "ROLES": ("roles", lambda n, r: _roles(n, r)),
    "ROLES_FILE": ("roles_from_file", lambda n, r: _roles_file(n, r)),
    "ROLES_GROUP_CLAIM": ("roles_group_claim", lambda n, r: r.strip() or "groups"),
    "EVENT_LOOP": ("event_loop", lambda n, r: _choice(n, r, ("auto", "uvloop", "asyncio"))),
    "GC_THRESHOLD": ("gc_threshold", lambda n, r: _int(n, r, 0)),
    "GUNICORN_WORKERS": ("gunicorn_workers", lambda n, r: _int(n, r, 1)),
    "GUNICORN_TIMEOUT": ("gunicorn_timeout", lambda n, r: _int(n, r, 1)),
    "GUNICORN_GRACEFUL_TIMEOUT": ("gunicorn_graceful_timeout", lambda n, r: _int(n, r, 1)),
    "GUNICORN_KEEPALIVE": ("gunicorn_keepalive", lambda n, r: _int(n, r, 0)),
    "GUNICORN_MAX_REQUESTS": ("gunicorn_max_requests", lambda n, r: _int(n, r, 0)),
    "GUNICORN_MAX_REQUESTS_JITTER": ("gunicorn_max_requests_jitter", lambda n, r: _int(n, r, 0)),
    "GUNICORN_PRELOAD_APP": ("gunicorn_preload_app", _bool),
    "GUNICORN_BACKLOG": ("gunicorn_backlog", lambda n, r: _int(n, r, 1)),
    "GUNICORN_ACCESS_LOG": ("gunicorn_access_log", _bool),
    "OTEL_ENABLED": ("otel_enabled", _bool),
    "OTEL_SDK_DISABLED": ("otel_sdk_disabled", _bool),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("otel_exporter_otlp_endpoint", lambda n, r: _otlp_url(n, r)),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": (
        "otel_exporter_otlp_traces_endpoint",
        lambda n, r: _otlp_url(n, r),
    ),
    "OTEL_EXPORTER_OTLP_HEADERS": ("otel_exporter_otlp_headers", lambda n, r: _pairs(n, r)),
    "OTEL_SERVICE_NAME": ("otel_service_name", lambda n, r: r.strip() or "aio-mcp-gateway"),
    "OTEL_RESOURCE_ATTRIBUTES": ("otel_resource_attributes", lambda n, r: _pairs(n, r)),
    "OTEL_TRACES_SAMPLER": ("otel_traces_sampler", lambda n, r: _choice(n, r, _SAMPLERS)),
    "OTEL_TRACES_SAMPLER_ARG": ("otel_traces_sampler_arg", lambda n, r: _ratio(n, r)),
    "OTEL_BSP_SCHEDULE_DELAY": ("otel_bsp_schedule_delay", lambda n, r: _int(n, r, 1)),
}


def _at_most(name: str, value: int, maximum: int) -> int:
    if value > maximum:
        raise SettingsError(f"{name}={value} must be at most {maximum}")
    return value


def _public_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"{name}={raw!r} must be an http:// or https:// URL")
    return value


def _roles(name: str, raw: str) -> tuple[Role, ...]:
    if not raw.strip():
        return ()
    try:
        return parse_roles(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not JSON: {exc}") from None
    except RoleError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _roles_file(name: str, raw: str) -> tuple[Role, ...]:
    import yaml

    path = raw.strip()
    if not path:
        return ()
    try:
        return parse_roles(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except OSError as exc:
        raise SettingsError(f"{name}={path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{name}={path!r} is not YAML: {exc}") from None
    except RoleError as exc:
        raise SettingsError(f"{name}={path!r}: {exc}") from None


def _otlp_url(name: str, raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"{name}={raw!r} must be an http:// or https:// URL (OTLP/HTTP)")
    return value


def _pairs(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key=value` with percent-encoded values, as the OTEL_* variables write them."""
    pairs = []
    for item in _list(raw):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{name}: {item!r} is not key=value")
        pairs.append((key.strip(), unquote(value.strip())))
    return tuple(pairs)


def _ratio(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name}={raw!r} must be between 0 and 1")
    return value


def _separator(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(not (c.isalnum() or c in "_-.") for c in value):
        raise SettingsError(f"{name}={raw!r} must be one or more of the characters _ - .")
    return value
