"""Requests sent as raw bytes, for what an HTTP client library would refuse to send (header
values that are not UTF-8, malformed lines)."""

from __future__ import annotations

import asyncio


async def raw_answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send `request` as it is to the loopback `port`; the answer's head and body (the
    request should say `Connection: close`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


NOT_UTF8_AUTHORIZATION = (
    b"GET /tools HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xe9\xff\r\n"
    b"Connection: close\r\n\r\n"
)
"""A request whose bearer token is bytes that are not UTF-8."""


async def continued_answer(port: int, head: bytes, body: bytes) -> tuple[bytes, bytes, bytes]:
    """Send `head` (an `Expect: 100-continue` request's line and headers, ending with a blank
    line, saying `Connection: close`) to the loopback `port`, wait for the interim answer
    before sending `body`, as a client that asks for one does; the interim answer, then the
    final answer's head and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        writer.write(body)
        answer = await reader.read()
    finally:
        writer.close()
    final_head, _, final_body = answer.partition(b"\r\n\r\n")
    return interim, final_head, final_body
