"""GUARDRAILS_RULES: how it is read (JSON or a file; every mistake one line naming the
variable), and what the rules interceptor refuses."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from gateway.plugin import Call, Principal, Refuse, SettingsError

from gateway_guardrails.rules import RulesInterceptor, parse_rules

RULES = {
    "db__*": {"deny": [r"(?i)\bdrop\s+table\b"], "max_argument_bytes": 200},
    "*": {"max_result_bytes": 300},
}


def call(name: str, arguments: dict[str, object]) -> Call:
    return Call(Principal("tester"), None, "tool", name, arguments, "db")


@pytest.fixture
def rules() -> RulesInterceptor:
    return RulesInterceptor(parse_rules("GUARDRAILS_RULES", orjson.dumps(RULES).decode()))


async def test_a_denied_pattern_anywhere_in_the_arguments_is_refused(
    rules: RulesInterceptor,
) -> None:
    outcome = await rules.before(call("db__query", {"q": {"parts": ["select 1; DROP  TABLE x"]}}))
    assert outcome == Refuse("arguments.q.parts[0] is denied by rule 'db__*'")


async def test_arguments_over_the_size_limit_are_refused(rules: RulesInterceptor) -> None:
    outcome = await rules.before(call("db__query", {"q": "x" * 300}))
    assert isinstance(outcome, Refuse)
    assert "rule 'db__*' allows 200" in outcome.message


async def test_tools_no_rule_names_pass(rules: RulesInterceptor) -> None:
    assert await rules.before(call("docs__search", {"q": "drop table " * 50})) is None


async def test_results_over_the_cap_are_refused_and_smaller_ones_pass(
    rules: RulesInterceptor,
) -> None:
    small = {"content": [{"type": "text", "text": "ok"}]}
    large = {"content": [{"type": "text", "text": "x" * 400}]}
    assert await rules.after(call("docs__search", {}), small) is None
    refused = await rules.after(call("docs__search", {}), large)
    assert isinstance(refused, Refuse) and "rule '*' allows 300" in refused.message


def test_rules_are_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps(RULES))
    assert [rule.glob for rule in parse_rules("GUARDRAILS_RULES", str(path)).rules] == [
        "db__*",
        "*",
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "neither a JSON object nor a file"),
        ('{"*": 3}', "must be an object"),
        ('{"*": {"deny": ["("]}}', "is not valid"),
        ('{"*": {"deny": "x"}}', "list of regular expressions"),
        ('{"*": {"max_result_bytes": 0}}', "positive integer"),
        ('{"*": {"max_result_bytes": true}}', "positive integer"),
        ('{"*": {"colour": "red"}}', "unknown field(s) colour"),
        ("/no/such/rules.json", "neither a JSON object nor a file"),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_rules("GUARDRAILS_RULES", raw)
    problem = str(caught.value)
    assert problem.startswith("GUARDRAILS_RULES")
    assert message in problem
    assert "\n" not in problem
