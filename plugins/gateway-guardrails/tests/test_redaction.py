"""What the redactor finds and what it leaves: each kind of personal data and secret, the
digit strings that only look like them, JSON values recursively, and redacting twice."""

from __future__ import annotations

import copy

import pytest

from gateway_guardrails.redaction import Redactor, luhn_valid

REDACT = Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail ann.lee@example.co.uk today", "mail [REDACTED:email] today"),
        ("a+tag@sub.example.org", "[REDACTED:email]"),
        ("call +1 415 555 2671", "call [REDACTED:phone]"),
        ("call (415) 555-2671", "call [REDACTED:phone]"),
        ("call 415-555-2671.", "call [REDACTED:phone]."),
        ("ring +442079460958 now", "ring [REDACTED:phone] now"),
        ("card 4111 1111 1111 1111 ok", "card [REDACTED:card] ok"),
        ("card 4111-1111-1111-1111", "card [REDACTED:card]"),
        ("amex 378282246310005", "amex [REDACTED:card]"),
        ("key sk-proj-Ab3dEf6hIj9kLm2nOp5q", "key [REDACTED:secret]"),
        ("sk-abcdefghijklmnopqrstuvwxyz012345", "[REDACTED:secret]"),
        ("ghp_" + "a1B2c3D4e5" * 4, "[REDACTED:secret]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:secret]"),
        ("slack xoxb-1234567890-abcdefghij", "slack [REDACTED:secret]"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1g",
            "jwt [REDACTED:secret]",
        ),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [REDACTED:secret]"),
        ("authorization: bearer 0123456789abcdef", "authorization: bearer [REDACTED:secret]"),
    ],
)
def test_each_kind_is_redacted(text: str, expected: str) -> None:
    assert REDACT.text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112",  # fails the Luhn check
        "id 1234567890123456",
        "ts 20240115123456",
        "on 2024-01-15 at 12:30:45",
        "from 192.168.1.10",
        "version 1.2.3 build 4567",
        "pi 3.14159265358979",
        "count 1234567",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "sketchy sk-short",
        "no-at-sign.example.com",
    ],
)
def test_look_alikes_survive(text: str) -> None:
    assert REDACT.text(text) == text


def test_luhn_check() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_values_are_redacted_recursively_and_the_input_is_left_alone() -> None:
    value = {
        "a": ["x", {"b": "ann@example.com", "n": 3, "t": True, "z": None}],
        "c": "call +1 415 555 2671",
    }
    kept = copy.deepcopy(value)
    assert REDACT.value(value) == {
        "a": ["x", {"b": "[REDACTED:email]", "n": 3, "t": True, "z": None}],
        "c": "call [REDACTED:phone]",
    }
    assert value == kept


def test_a_value_with_nothing_to_redact_is_returned_as_it_is() -> None:
    value = {"a": ["x", {"b": 1}]}
    assert REDACT.value(value) is value


def test_skipped_keys_keep_their_values() -> None:
    value = {"uri": "mailto:ann@example.com", "text": "ann@example.com"}
    assert REDACT.value(value, skip={"uri"}) == {
        "uri": "mailto:ann@example.com",
        "text": "[REDACTED:email]",
    }


def test_redacting_twice_changes_nothing_more() -> None:
    text = "ann@example.com, +1 415 555 2671, 4111 1111 1111 1111, Bearer abcdefgh12345678"
    once = REDACT.text(text)
    assert REDACT.text(once) == once


def test_only_the_chosen_kinds_are_redacted() -> None:
    emails = Redactor(["email"])
    assert emails.text("ann@example.com +1 415 555 2671") == "[REDACTED:email] +1 415 555 2671"
    assert Redactor([]).text("ann@example.com") == "ann@example.com"
    with pytest.raises(ValueError, match="unknown kind"):
        Redactor(["passport"])
