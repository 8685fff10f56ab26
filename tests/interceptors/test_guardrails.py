"""The guardrails package's interceptors in a gateway, through `/rpc` and `/mcp` against a
real upstream: `pii` redacts what the upstream gets and what the caller gets, `rules`
refuses what its rules deny."""

from __future__ import annotations

import orjson
import pytest

from tests.plugins.intercepting import Intercepting, text_of

from .conftest import Send, Start, echo, require_guardrails


@pytest.fixture(autouse=True)
def guardrails_installed() -> None:
    require_guardrails()


PERSONAL = (
    "mail ann.lee@example.com or +1 415 555 2671, card 4111 1111 1111 1111, "
    "token Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln, key sk-proj-Ab3dEf6hIj9kLm2nOp5q"
)
REDACTED = (
    "mail [REDACTED:email] or [REDACTED:phone], card [REDACTED:card], "
    "token Bearer [REDACTED:secret], key [REDACTED:secret]"
)


async def test_pii_redacts_the_arguments_before_the_upstream_sees_them(
    start: Start, send: Send, intercepting: Intercepting
) -> None:
    client = await start(interceptors=("pii", "upper"))
    response = await send(client, "tools/call", echo(PERSONAL))
    # `upper` runs inside `pii`: it sees, and passes upstream, what `pii` left.
    assert intercepting["upper"].seen[-1].arguments == {"text": REDACTED}
    assert text_of(response["result"]) == REDACTED.upper()


async def test_pii_redacts_text_and_structured_content_of_results(start: Start, send: Send) -> None:
    client = await start(interceptors=("pii",))
    result = (await send(client, "tools/call", echo(PERSONAL)))["result"]
    assert text_of(result) == REDACTED
    assert result["structuredContent"] == {"text": REDACTED}
    assert "ann.lee" not in orjson.dumps(result).decode()


async def test_pii_redacts_a_result_no_upstream_made(start: Start, send: Send) -> None:
    client = await start(interceptors=("pii", "leak"))
    result = (await send(client, "tools/call", echo("hello")))["result"]
    assert text_of(result) == "reach [REDACTED:email], card [REDACTED:card], key [REDACTED:secret]"
    assert result["structuredContent"] == {"people": [{"contact": {"email": "[REDACTED:email]"}}]}


async def test_digit_strings_that_are_no_card_or_phone_survive(start: Start, send: Send) -> None:
    client = await start(interceptors=("pii",))
    text = "order 4111111111111112 on 2024-01-15 from 10.0.0.1, v1.2.3"
    assert text_of((await send(client, "tools/call", echo(text)))["result"]) == text


async def test_pii_redacts_prompts(start: Start, send: Send) -> None:
    client = await start(interceptors=("pii",))
    params = {"name": "own__greeting", "arguments": {"name": "ann@example.com"}}
    messages = orjson.dumps((await send(client, "prompts/get", params))["result"]).decode()
    assert "[REDACTED:email]" in messages and "ann@example.com" not in messages


RULES = {
    "own__echo": {"deny": [r"(?i)\bdrop\s+table\b"], "max_argument_bytes": 200},
    "own__big": {"max_result_bytes": 500},
}


@pytest.fixture
def with_rules() -> dict[str, object]:
    from gateway_guardrails.rules import parse_rules

    rules = parse_rules("GUARDRAILS_RULES", orjson.dumps(RULES).decode())
    return {"interceptors": ("rules", "pii"), "plugin_values": {"GUARDRAILS_RULES": rules}}


async def test_rules_refuse_denied_arguments_naming_the_interceptor(
    start: Start, send: Send, with_rules: dict[str, object]
) -> None:
    client = await start(**with_rules)
    result = (await send(client, "tools/call", echo("please DROP TABLE users")))["result"]
    assert result["isError"] is True
    assert text_of(result) == (
        "Refused by interceptor 'rules': arguments.text is denied by rule 'own__echo'"
    )
    assert text_of((await send(client, "tools/call", echo("select 1")))["result"]) == "select 1"


async def test_rules_refuse_large_arguments_and_large_results(
    start: Start, send: Send, with_rules: dict[str, object]
) -> None:
    client = await start(**with_rules)
    large = (await send(client, "tools/call", echo("x" * 300)))["result"]
    assert large["isError"] is True and "allows 200" in text_of(large)
    big = {"name": "own__big", "arguments": {"n": 2000}}
    capped = (await send(client, "tools/call", big))["result"]
    assert capped["isError"] is True and "rule 'own__big' allows 500" in text_of(capped)
    small = {"name": "own__big", "arguments": {"n": 10}}
    assert (await send(client, "tools/call", small))["result"]["isError"] is False
