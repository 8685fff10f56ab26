"""The package as the gateway sees it: found through its entry point, its settings read and
checked with the gateway's, its interceptors registered with their priorities."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from gateway.plugin import InterceptorSpec, Registrar, SettingsError
from gateway.settings import load_settings

import gateway_guardrails
from gateway_guardrails import PII_KINDS, RULES, gateway_register_interceptors


def test_the_entry_point_names_the_package() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="aio_mcp_gateway")}
    assert found.get("guardrails") == "gateway_guardrails"


def test_rules_runs_outside_pii() -> None:
    register: Registrar[InterceptorSpec] = Registrar("interceptor")
    gateway_register_interceptors(register)
    assert {name: spec.priority for name, spec in register.items.items()} == {
        "pii": 20,
        "rules": 10,
    }


def test_settings_are_read_with_the_gateways() -> None:
    settings = load_settings(
        {"GUARDRAILS_PII": "email, card", "GUARDRAILS_RULES": '{"*": {"max_result_bytes": 9}}'},
        env_file=None,
        declared=[PII_KINDS, RULES],
    )
    assert settings.plugin_value(PII_KINDS) == ("email", "card")
    assert settings.plugin_value(RULES).rules[0].max_result_bytes == 9
    pii = gateway_guardrails.create_pii(settings)
    assert pii.redactor.kinds == ("email", "card")


def test_an_unknown_pii_kind_stops_start_up_naming_it() -> None:
    with pytest.raises(SettingsError, match=r"GUARDRAILS_PII='email,passport'.*passport"):
        load_settings({"GUARDRAILS_PII": "email,passport"}, env_file=None, declared=[PII_KINDS])
