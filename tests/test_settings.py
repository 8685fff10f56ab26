"""Settings: one reader of the environment and `.env`, with one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import ENVIRONMENT_VARIABLES, Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings({}, env_file=None)
    assert (settings.host, settings.port) == ("0.0.0.0", 4444)
    assert settings.database_url == "sqlite:///./gateway.db"
    assert settings.cache_type == "database"
    assert settings.auth_required is True
    assert settings.auth_type == "jwt"
    assert settings.jwt_algorithm == "HS256"
    assert settings.gunicorn_workers >= 2


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


def test_empty_values_fall_back_to_defaults() -> None:
    assert load_settings({"PORT": "", "JWT_SECRET_KEY": ""}, env_file=None) == load_settings(
        {}, env_file=None
    )


def test_env_example_documents_every_setting() -> None:
    text = (REPO / ".env.example").read_text()
    documented = {line.lstrip("# ").split("=", 1)[0] for line in text.splitlines() if "=" in line}
    assert set(ENVIRONMENT_VARIABLES) <= documented


def test_readme_configuration_table_matches_env_example() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in readme]
    assert not missing


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
