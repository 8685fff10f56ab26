"""Bounds on a JSON-RPC batch (2025-03-26 sessions on `/mcp`, lists on legacy `/message`):
how many messages it may hold (`MAX_BATCH`) and how many bytes of answers are computed for
it (`MAX_RESPONSE_BYTES`); past that, its remaining requests are answered without running."""

from __future__ import annotations

from typing import Any

import orjson

from gateway import jsonrpc
from gateway.jsonrpc import Id, RPCError


def check_length(items: list[Any], limit: int) -> None:
    """`RPCError` (HTTP 413, -32600) for a batch of more than `limit` messages."""
    if len(items) > limit:
        error = RPCError(
            jsonrpc.INVALID_REQUEST,
            f"Invalid Request: a batch of {len(items)} messages is longer than MAX_BATCH ({limit})",
        )
        error.status = 413
        raise error


class AnswerBudget:
    """The bytes of answers a batch may still produce. The answer that crosses the limit is
    still sent whole; every request after it gets a short error instead of running."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    @property
    def spent(self) -> bool:
        return self.left < 0

    def spend(self, answer: Any) -> None:
        self.left -= len(orjson.dumps(answer))

    def not_run(self, request_id: Id) -> dict[str, Any]:
        """The answer to a request the batch had no room left for."""
        error = RPCError(
            jsonrpc.INVALID_REQUEST,
            f"Not run: the batch's answers passed MAX_RESPONSE_BYTES ({self.limit} bytes)",
        )
        return jsonrpc.error_message(request_id, error)
