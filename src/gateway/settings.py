"""The only reader of the environment and `.env`: builds one frozen `Settings`.

The environment wins over `.env` in the working directory. Plugins declare their own
settings (`SettingSpec`, through `gateway_register_settings`); they are read here too, in
the same pass. Every bad value is reported, one line each naming the variable and what it
accepts, in one `SettingsError`. Which variables the gateway reads, and how each one's
text is checked, is the table in `gateway.setting_parsers`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast

from dotenv import dotenv_values

from gateway.roles import Role
from gateway.setting_parsers import PARSERS, Parser, SettingsError

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "SettingSpec",
    "Settings",
    "SettingsError",
    "load_settings",
]

T = TypeVar("T")


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
    max_streams: int = 10_000
    max_inflight_per_session: int = 64
    max_inflight_per_subject: int = 256
    max_inflight: int = 1024
    max_upstream_response_bytes: int = 16_777_216
    max_sse_line_bytes: int = 16_777_216
    catalogue_poll_interval: float = 1.0
    cache_timeout: float = 1.0
    consistency_timeout: float = 5.0
    rate_limit_per_minute: int = 0
    tool_rate_limit_per_minute: int = 0
    leader_ttl: float = 15.0
    upstream_health_interval: float = 30.0
    upstream_refresh_interval: float = 300.0
    session_ttl: float = 3600.0
    admin_ui: bool = True
    admin_ui_session_ttl: float = 1800.0
    per_client_sessions_max: int = 1000
    bridged_calls_max: int = 1000
    detached_calls_max: int = 1000
    mcp_sessions: str = "optional"
    log_level: str = "info"
    log_format: str = "auto"
    access_log: str = "off"
    plugins_blocked: tuple[str, ...] = ()
    plugins_trace: bool = False
    interceptors: tuple[str, ...] = ()
    interceptor_timeout: float = 5.0
    interceptors_fail_open: bool = False
    allowed_origins: tuple[str, ...] = ()
    upstream_allow_cidrs: tuple[str, ...] = ()
    upstream_deny_cidrs: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    public_url: str = ""
    config_file: str = ""
    roles: tuple[Role, ...] = ()
    """The roles of ROLES (`gateway.roles`)."""
    roles_from_file: tuple[Role, ...] = ()
    """The roles of ROLES_FILE."""
    roles_group_claim: str = "groups"
    event_loop: str = "auto"
    gc_threshold: int = 10_000
    """Young-generation threshold of Python's garbage collector (`gateway.heap`)."""
    gunicorn_workers: int = field(default_factory=_cpu_workers)
    gunicorn_timeout: int = 60
    gunicorn_graceful_timeout: int = 30
    gunicorn_keepalive: int = 5
    gunicorn_max_requests: int = 100_000
    gunicorn_max_requests_jitter: int = 10_000
    gunicorn_preload_app: bool = False
    gunicorn_backlog: int = 2048
    gunicorn_access_log: bool = False
    otel_enabled: bool | None = None
    """None: tracing is on when an OTLP endpoint is set (`gateway.tracing.wanted`)."""
    otel_sdk_disabled: bool = False
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_exporter_otlp_headers: tuple[tuple[str, str], ...] = ()
    otel_service_name: str = "aio-mcp-gateway"
    otel_resource_attributes: tuple[tuple[str, str], ...] = ()
    otel_traces_sampler: str = "parentbased_always_on"
    otel_traces_sampler_arg: float = 1.0
    otel_bsp_schedule_delay: int = 5000
    """Milliseconds between two exports of finished spans."""
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


ENVIRONMENT_VARIABLES = tuple(PARSERS)


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
        for variable, (field_name, parser) in PARSERS.items()
        if (value := parse(variable, parser)) is not unset
    }
    settings = Settings(**parsed)
    plugin_values: dict[str, Any] = {}
    for spec in _declared_by_plugins(settings, problems) if declared is None else declared:
        if spec.name in PARSERS:
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
