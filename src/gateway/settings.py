"""The only reader of the environment and `.env`: builds one frozen `Settings`.

The environment wins over `.env` in the working directory. Plugins declare their own
settings (`SettingSpec`, through `gateway_register_settings`); they are read here too, in
the same pass. Every bad value is reported, one line each naming the variable and what it
accepts, in one `SettingsError`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

from dotenv import dotenv_values

from gateway.jsonrpc import DEPTH_CEILING

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


@dataclass(frozen=True, slots=True)
class SettingSpec(Generic[T]):
    """A setting a plugin declares: one environment variable, read and checked at start.

    The plugin reads its value with `settings.plugin_value(spec)`.
    """

    name: str
    """The environment variable, e.g. `REDIS_URL`."""
    default: T
    parse: Parser[T]
    help: str = ""
    """One line for `.env.example` and the README."""


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
    auth_required: bool = True
    auth_type: str = "jwt"
    jwt_secret_key: str = ""
    auth_encryption_secret: str = ""
    secrets_dir: str = ""
    tool_timeout: float = 30.0
    tool_name_separator: str = "__"
    max_request_bytes: int = 1_048_576
    max_json_depth: int = 64
    max_batch: int = 100
    max_response_bytes: int = 16_777_216
    max_initialize_bytes: int = 16_384
    max_sessions_per_subject: int = 100
    max_streams_per_session: int = 10
    max_streams_per_subject: int = 100
    max_inflight_per_session: int = 64
    max_inflight_per_subject: int = 256
    catalogue_poll_interval: float = 1.0
    cache_timeout: float = 1.0
    consistency_timeout: float = 5.0
    rate_limit_per_minute: int = 0
    tool_rate_limit_per_minute: int = 0
    leader_ttl: float = 15.0
    upstream_health_interval: float = 30.0
    upstream_refresh_interval: float = 300.0
    session_ttl: float = 3600.0
    per_client_sessions_max: int = 1000
    bridged_calls_max: int = 1000
    detached_calls_max: int = 1000
    mcp_sessions: str = "optional"
    log_level: str = "info"
    log_format: str = "auto"
    plugins_blocked: tuple[str, ...] = ()
    plugins_trace: bool = False
    allowed_origins: tuple[str, ...] = ()
    upstream_allow_cidrs: tuple[str, ...] = ()
    upstream_deny_cidrs: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    public_url: str = ""
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
    plugin_values: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """The plugins' own settings by variable name; read one with `plugin_value`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugin_values", MappingProxyType(dict(self.plugin_values)))

    def plugin_value(self, spec: SettingSpec[T]) -> T:
        """The value of a plugin's setting: as loaded, else the spec's default."""
        return cast(T, self.plugin_values.get(spec.name, spec.default))

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Each entry: environment variable -> (field, parser). Parsers get (name, raw).
_PARSERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
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
    "MAX_INFLIGHT_PER_SESSION": ("max_inflight_per_session", lambda n, r: _int(n, r, 0)),
    "MAX_INFLIGHT_PER_SUBJECT": ("max_inflight_per_subject", lambda n, r: _int(n, r, 0)),
    "CATALOGUE_POLL_INTERVAL": ("catalogue_poll_interval", _float),
    "CACHE_TIMEOUT": ("cache_timeout", _float),
    "CONSISTENCY_TIMEOUT": ("consistency_timeout", _float),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", lambda n, r: _int(n, r, 0)),
    "TOOL_RATE_LIMIT_PER_MINUTE": ("tool_rate_limit_per_minute", lambda n, r: _int(n, r, 0)),
    "LEADER_TTL": ("leader_ttl", _float),
    "UPSTREAM_HEALTH_INTERVAL": ("upstream_health_interval", _float),
    "UPSTREAM_REFRESH_INTERVAL": ("upstream_refresh_interval", _float),
    "SESSION_TTL": ("session_ttl", _float),
    "PER_CLIENT_SESSIONS_MAX": ("per_client_sessions_max", lambda n, r: _int(n, r, 1)),
    "BRIDGED_CALLS_MAX": ("bridged_calls_max", lambda n, r: _int(n, r, 1)),
    "DETACHED_CALLS_MAX": ("detached_calls_max", lambda n, r: _int(n, r, 0)),
    "MCP_SESSIONS": ("mcp_sessions", lambda n, r: _choice(n, r, ("optional", "required"))),
    "LOG_LEVEL": ("log_level", lambda n, r: _choice(n, r, _LOG_LEVELS)),
    "LOG_FORMAT": ("log_format", lambda n, r: _choice(n, r, ("auto", "json", "console"))),
    "PLUGINS_BLOCKED": ("plugins_blocked", lambda n, r: _list(r)),
    "PLUGINS_TRACE": ("plugins_trace", _bool),
    "ALLOWED_ORIGINS": ("allowed_origins", lambda n, r: _list(r)),
    "UPSTREAM_ALLOW_CIDRS": ("upstream_allow_cidrs", lambda n, r: _cidrs(n, r)),
    "UPSTREAM_DENY_CIDRS": ("upstream_deny_cidrs", lambda n, r: _cidrs(n, r)),
    "ALLOWED_HOSTS": ("allowed_hosts", lambda n, r: _list(r)),
    "PUBLIC_URL": ("public_url", lambda n, r: _public_url(n, r)),
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


def _separator(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(not (c.isalnum() or c in "_-.") for c in value):
        raise SettingsError(f"{name}={raw!r} must be one or more of the characters _ - .")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | str | None = ".env",
    declared: Iterable[SettingSpec[Any]] | None = None,
) -> Settings:
    """Read settings from `.env` (if present) overlaid by the environment.

    `declared` are the plugins' own settings; by default, those that the plugins these
    settings load declare. Raises one `SettingsError` listing every bad value.
    """
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    problems: list[str] = []
    unset = object()

    def parse(variable: str, parser: Parser[Any]) -> Any:
        raw = values.get(variable)
        if raw is None or raw.strip() == "":
            return unset
        try:
            return parser(variable, raw)
        except SettingsError as exc:
            problems.extend(exc.problems)
            return unset

    parsed = {
        field_name: value
        for variable, (field_name, parser) in _PARSERS.items()
        if (value := parse(variable, parser)) is not unset
    }
    settings = Settings(**parsed)
    plugin_values: dict[str, Any] = {}
    for spec in _declared_by_plugins(settings, problems) if declared is None else declared:
        if spec.name in _PARSERS:
            problems.append(f"{spec.name} is a setting of the gateway itself; a plugin declares it")
            continue
        value = parse(spec.name, spec.parse)
        plugin_values[spec.name] = spec.default if value is unset else value
    if problems:
        raise SettingsError(*problems)
    return settings.replace(plugin_values=plugin_values)


def _declared_by_plugins(settings: Settings, problems: list[str]) -> list[SettingSpec[Any]]:
    # Imported here because the plugin manager needs `Settings` from this module.
    from gateway.plugins import Plugins, build_plugin_manager

    try:
        plugins = Plugins(build_plugin_manager(settings.plugins_blocked))
    except SettingsError as exc:
        problems.extend(exc.problems)
        return []
    return list(plugins.declared_settings.items.values())
