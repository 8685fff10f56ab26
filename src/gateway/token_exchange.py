"""OAuth 2.0 Token Exchange (RFC 8693) for upstreams registered with
`"oauth": {"grant": "token_exchange", ...}`: a call made on a user's behalf reaches the
upstream with a token the authorization server issued for that user and that upstream,
never with the user's own token.

`ExchangedTokens` keeps one upstream's exchanged tokens on this worker, keyed by a hash of
the subject token (the caller's), until shortly before they expire, least recently used
out first past `EXCHANGED_MAX`; one exchange at a time per subject token, however many
calls wait. `OnBehalf` is what a per-client upstream session's backend sends: the exchanged
token of the caller whose request is being served (`gateway.caller_token`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway import caller_token
from gateway.contracts import BackendError

if TYPE_CHECKING:
    from gateway.upstream_oauth import Grant

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGED_MAX = 1024
"""The most exchanged tokens one upstream keeps on one worker."""

Exchange = Callable[[str], Awaitable[tuple[str, float]]]
"""Exchanges a subject token: the issued token and its lifetime in seconds."""
RenewAfter = Callable[[float], float]


def exchange_form(subject_token: str) -> dict[str, str]:
    """The token-exchange fields of a token request (RFC 8693 section 2.1)."""
    return {
        "grant_type": GRANT_TYPE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
    }


class ExchangedTokens:
    """One upstream's exchanged tokens on this worker, by subject token."""

    def __init__(
        self, exchange: Exchange, renew_after: RenewAfter, limit: int = EXCHANGED_MAX
    ) -> None:
        self._exchange = exchange
        self._renew_after = renew_after
        self._limit = limit
        self._held: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        """Subject token hash: (`Bearer <issued token>`, when to exchange again)."""
        self._pending: dict[bytes, asyncio.Future[str]] = {}

    def __len__(self) -> int:
        return len(self._held)

    async def header(self, subject_token: str, refused: str | None = None) -> str:
        """`Bearer <token issued for the subject>`; a fresh one when `refused` (a header the
        upstream answered 401 to) is still the one held."""
        key = hashlib.sha256(subject_token.encode()).digest()
        held = self._held.get(key)
        if held is not None and time.monotonic() < held[1] and held[0] != refused:
            self._held.move_to_end(key)
            return held[0]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._exchanged(key, subject_token))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        # Shielded: a caller that gives up does not fail the others waiting on it.
        return await asyncio.shield(pending)

    async def _exchanged(self, key: bytes, subject_token: str) -> str:
        token, lifetime = await self._exchange(subject_token)
        header = f"Bearer {token}"
        self._held[key] = (header, time.monotonic() + self._renew_after(lifetime))
        self._held.move_to_end(key)
        while len(self._held) > self._limit:
            self._held.popitem(last=False)
        return header

    def _settled(self, key: bytes, done: asyncio.Future[str]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved here too, when every caller gave up


class OnBehalf:
    """The token a per-client session's backend sends: the calling user's, exchanged."""

    def __init__(self, upstream: str, grant: Grant, tokens: ExchangedTokens) -> None:
        self.upstream = upstream
        self.grant = grant
        self.tokens = tokens

    async def header(self, refused: str | None = None) -> str:
        subject = caller_token.current()
        if subject is None:
            raise BackendError(
                f"upstream {self.upstream!r} acts as the calling user (OAuth token exchange) "
                "and needs the caller's identity: call with an 'Authorization: Bearer' token"
            )
        return await self.tokens.header(subject, refused)
