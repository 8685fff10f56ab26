"""The `requestState` of a bridged 2026-07-28 call: what the retry must prove, sealed.

A client echoes the state back unread, so anything in it could be forged: it is signed
with HMAC-SHA256 under a key every instance shares, and opening it checks the signature
before anything else is believed. What it says (the call, the caller, the tool, the asks
of the round, the round itself and when it stops being good) is not secret, only
trustworthy: it is base64url JSON, then a dot, then the base64url signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import jsonrpc
from gateway.jsonrpc import RPCError

KEY_PURPOSE = "request-state"
"""The signing key is the store's `derived_key` for this purpose: every instance sharing the
encryption key derives the same one, and it is kept nowhere."""


def refused(why: str) -> RPCError:
    return RPCError(jsonrpc.INVALID_PARAMS, f"Invalid params: requestState {why}")


@dataclass(frozen=True, slots=True)
class State:
    call: str
    """The bridged call, as the worker running it named it."""
    caller: str
    """The caller's key (token subject, or address when anonymous)."""
    tool: str
    asks: tuple[str, ...]
    """The ids of the asks this round listed in `inputRequests`."""
    round: str
    """Unique per `input_required` answer: a state is good for one retry."""
    expires: float
    """Unix time at which the call's `TOOL_TIMEOUT` runs out."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    def __init__(self, key: bytes) -> None:
        # A key of its own (derived for this purpose alone): a leaked requestState key must
        # not decrypt headers or sign tokens, nor the reverse.
        self._key = key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def seal(self, state: State) -> str:
        body = orjson.dumps(
            {
                "c": state.call,
                "s": state.caller,
                "t": state.tool,
                "a": list(state.asks),
                "r": state.round,
                "e": state.expires,
            }
        )
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def open(self, token: Any) -> State:
        """The state `token` carries, or `RPCError` (-32602) unless it is intact."""
        if not isinstance(token, str) or token.count(".") != 1:
            raise refused("is not one the gateway issued")
        body_text, signature_text = token.split(".")
        try:
            body, signature = _unb64(body_text), _unb64(signature_text)
        except (binascii.Error, ValueError):
            raise refused("is not one the gateway issued") from None
        if not hmac.compare_digest(signature, self._sign(body)):
            raise refused("has been tampered with (its signature does not match)")
        fields = orjson.loads(body)
        return State(
            fields["c"], fields["s"], fields["t"], tuple(fields["a"]), fields["r"], fields["e"]
        )
