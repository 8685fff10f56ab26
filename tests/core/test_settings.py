"""Settings: one reader of the environment and `.env`, with one clear line per bad value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.plugins import Registrar, build_plugin_manager
from gateway.setting_parsers import integer
from gateway.settings import (
    ENVIRONMENT_VARIABLES,
    Settings,
    SettingsError,
    SettingSpec,
    load_settings,
)
from gateway_plugins import cache_memory, cache_redis, jwt_tokens

REPO = Path(__file__).resolve().parents[2]


def declared_by_plugin() -> dict[str, list[SettingSpec[Any]]]:
    """Each installed plugin's own settings, by the plugin's entry-point name."""
    declared: dict[str, list[SettingSpec[Any]]] = {}
    for name, plugin in build_plugin_manager().list_name_plugin():
        hook = getattr(plugin, "gateway_register_settings", None)
        if hook is not None:
            register: Registrar[SettingSpec[Any]] = Registrar("setting")
            hook(register)
            declared[name] = list(register.items.values())
    return declared


PLUGIN_SETTINGS = [spec for specs in declared_by_plugin().values() for spec in specs]
EVERY_SETTING = [*ENVIRONMENT_VARIABLES, *(spec.name for spec in PLUGIN_SETTINGS)]


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings({}, env_file=None)
    assert (settings.host, settings.port) == ("0.0.0.0", 4444)
    assert settings.database_url == "sqlite:///./gateway.db"
    assert settings.cache_type == "database"
    assert settings.auth_required is True
    assert settings.auth_type == "jwt"
    assert settings.gunicorn_workers >= 2


def test_plugin_settings_default_to_what_their_plugins_declare() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.plugin_value(jwt_tokens.ALGORITHM) == "HS256"
    assert settings.plugin_value(cache_memory.MAX_ITEMS) == 100_000
    assert settings.plugin_value(cache_redis.REDIS_URL) == "redis://127.0.0.1:6379/0"
    assert Settings().plugin_value(cache_memory.MAX_ITEMS) == 100_000


def test_plugin_settings_are_read_from_the_environment_and_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URL=redis://cache.internal:6380/2\nMEMORY_CACHE_MAX_ITEMS=5\n")
    settings = load_settings({"JWT_ALGORITHM": "hs512", "MEMORY_CACHE_MAX_ITEMS": "7"}, env_file)
    assert settings.plugin_value(jwt_tokens.ALGORITHM) == "HS512"
    assert settings.plugin_value(cache_memory.MAX_ITEMS) == 7
    assert settings.plugin_value(cache_redis.REDIS_URL) == "redis://cache.internal:6380/2"


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=5555\nCACHE_TYPE=memory\n")
    settings = load_settings({"PORT": "6666"}, env_file=env_file)
    assert settings.port == 6666
    assert settings.cache_type == "memory"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "http", "PORT='http' is not an integer"),
        ("AUTH_REQUIRED", "maybe", "AUTH_REQUIRED='maybe' is not a boolean"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' is not one of: auto, json, console"),
        ("JWT_ALGORITHM", "none", "JWT_ALGORITHM='none' is not one of: HS256, HS384, HS512"),
        ("MEMORY_CACHE_MAX_ITEMS", "0", "MEMORY_CACHE_MAX_ITEMS='0' must be at least 1"),
        ("MEMORY_CACHE_MAX_ITEMS", "lots", "MEMORY_CACHE_MAX_ITEMS='lots' is not an integer"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL='mysql://x' is not supported"),
        ("TOOL_TIMEOUT", "-1", "TOOL_TIMEOUT='-1' must be greater than 0"),
    ],
)
def test_bad_value_names_the_variable_and_what_it_accepts(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value}, env_file=None)
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value)


def test_every_bad_value_is_reported_one_line_each() -> None:
    environ = {"PORT": "http", "JWT_ALGORITHM": "none", "MEMORY_CACHE_MAX_ITEMS": "0"}
    with pytest.raises(SettingsError) as raised:
        load_settings(environ, env_file=None)
    assert sorted(problem.split("=")[0] for problem in raised.value.problems) == [
        "JWT_ALGORITHM",
        "MEMORY_CACHE_MAX_ITEMS",
        "PORT",
    ]
    assert str(raised.value).splitlines() == list(raised.value.problems)


def run_python(
    tmp_path: Path, environ: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the gateway's Python in an empty directory (no `.env`) with these settings."""
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **environ},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MEMORY_CACHE_MAX_ITEMS", "0", "MEMORY_CACHE_MAX_ITEMS='0' must be at least 1"),
        ("JWT_ALGORITHM", "none", "JWT_ALGORITHM='none' is not one of: HS256, HS384, HS512"),
    ],
)
def test_a_bad_plugin_setting_stops_the_app_factory_with_one_line_and_status_3(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    start = "import asyncio; from gateway.app import create_app; asyncio.run(create_app())"
    completed = run_python(tmp_path, {variable: value}, "-c", start)
    assert completed.returncode == 3
    assert completed.stderr.splitlines() == [f"aio-mcp-gateway: configuration error: {problem}"]


def test_check_command_reports_the_installed_plugins(tmp_path: Path) -> None:
    completed = run_python(tmp_path, {}, "-m", "gateway", "check")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(
        "settings ok; caches: database, memory, redis; auth: jwt, none, oauth; backends: "
    )


def test_check_command_reports_every_bad_setting_one_line_each(tmp_path: Path) -> None:
    environ = {"JWT_ALGORITHM": "none", "MEMORY_CACHE_MAX_ITEMS": "lots", "LOG_LEVEL": "loud"}
    completed = run_python(tmp_path, environ, "-m", "gateway", "check")
    assert completed.returncode == 2
    assert sorted(completed.stderr.splitlines()) == [
        "aio-mcp-gateway: configuration error: JWT_ALGORITHM='none' is not one of: "
        "HS256, HS384, HS512",
        "aio-mcp-gateway: configuration error: LOG_LEVEL='loud' is not one of: "
        "debug, info, warning, error, critical",
        "aio-mcp-gateway: configuration error: MEMORY_CACHE_MAX_ITEMS='lots' is not an integer",
    ]


def test_version_and_help_answer_even_when_a_setting_is_bad(tmp_path: Path) -> None:
    completed = run_python(tmp_path, {"PORT": "http"}, "-m", "gateway", "--version")
    assert (completed.returncode, completed.stdout.split()[0]) == (0, "aio-mcp-gateway")
    completed = run_python(tmp_path, {"PORT": "http"}, "-m", "gateway", "--help")
    assert completed.returncode == 0 and "check" in completed.stdout


def test_settings_of_a_blocked_plugin_are_not_read() -> None:
    environ = {"PLUGINS_BLOCKED": "cache_memory", "MEMORY_CACHE_MAX_ITEMS": "0"}
    settings = load_settings(environ, env_file=None)
    assert "MEMORY_CACHE_MAX_ITEMS" not in settings.plugin_values


def test_a_plugin_may_not_declare_a_setting_of_the_gateway_itself() -> None:
    port = SettingSpec("PORT", 1, integer(minimum=1), "a port")
    with pytest.raises(SettingsError, match=r"^PORT is a setting of the gateway itself"):
        load_settings({}, env_file=None, declared=[port])


def test_declared_settings_can_be_given_instead_of_the_installed_plugins() -> None:
    size = SettingSpec("TINY_CACHE_SIZE", 10, integer(minimum=1), "entries")
    settings = load_settings({"TINY_CACHE_SIZE": "3"}, env_file=None, declared=[size])
    assert settings.plugin_value(size) == 3
    assert dict(settings.plugin_values) == {"TINY_CACHE_SIZE": 3}


def test_empty_values_fall_back_to_defaults() -> None:
    assert load_settings({"PORT": "", "JWT_SECRET_KEY": ""}, env_file=None) == load_settings(
        {}, env_file=None
    )


def test_env_example_documents_every_setting() -> None:
    text = (REPO / ".env.example").read_text()
    documented = {line.lstrip("# ").split("=", 1)[0] for line in text.splitlines() if "=" in line}
    assert set(EVERY_SETTING) <= documented


@pytest.mark.parametrize(
    ("plugin", "spec"),
    [(plugin, spec) for plugin, specs in declared_by_plugin().items() for spec in specs],
    ids=lambda value: getattr(value, "name", value),
)
def test_env_example_documents_plugin_settings_under_their_plugin_with_their_help(
    plugin: str, spec: SettingSpec[Any]
) -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{spec.name}="))
    section = next(line for line in reversed(lines[:at]) if line.startswith("# --- "))
    assert re.match(rf"# --- plugin {plugin}\b", section)
    assert lines[at - 1] == f"# {spec.help}"


def test_readme_configuration_table_matches_env_example() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [name for name in EVERY_SETTING if f"`{name}`" not in readme]
    assert not missing


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
