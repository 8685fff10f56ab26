"""What a client must have declared for the gateway to relay an upstream's request to it."""

from __future__ import annotations

import pytest

from gateway.mcp.asks import undeclared

FORM_ONLY = {"elicitation": {}}
BOTH_MODES = {"elicitation": {"form": {}, "url": {}}}
URL_ASK = {"mode": "url", "url": "https://example.com/auth", "message": "m", "elicitationId": "e"}


@pytest.mark.parametrize(
    ("method", "params", "capabilities", "missing"),
    [
        ("sampling/createMessage", {}, {"sampling": {}}, None),
        ("sampling/createMessage", {}, {"roots": {}}, "the 'sampling' capability"),
        ("roots/list", {}, {}, "the 'roots' capability"),
        ("ping", {}, {}, None),
        ("elicitation/create", {"message": "m"}, FORM_ONLY, None),
        ("elicitation/create", {"mode": "form", "message": "m"}, BOTH_MODES, None),
        ("elicitation/create", URL_ASK, BOTH_MODES, None),
        ("elicitation/create", URL_ASK, FORM_ONLY, "URL elicitation ('elicitation.url')"),
        (
            "elicitation/create",
            URL_ASK,
            {"elicitation": {"form": {}}},
            "URL elicitation ('elicitation.url')",
        ),
        ("elicitation/create", URL_ASK, {}, "the 'elicitation' capability"),
    ],
)
def test_a_url_elicitation_needs_the_url_mode_declared_the_rest_their_capability(
    method: str, params: dict[str, object], capabilities: dict[str, object], missing: str | None
) -> None:
    assert undeclared(method, params, capabilities) == missing
