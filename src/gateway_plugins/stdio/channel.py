"""The channel between a worker and the stdio host: JSON objects, one a line, both ways,
over a Unix socket in a directory only the gateway's user can enter.

The host's first message on a connection is `hello` {pid}: a worker counts a connection
as made only once it has read it, so one that a dying host's listening socket still
queued is dropped before any request is written to it.

A worker sends (`ref` names one upstream it opened, `id` one of its requests):
`open` {ref, config}, `close` {ref}, `listen` {ref, on}, `request` {ref, id, method,
params, timeout, notify, ask}, `cancel` {id}, `notify` {ref, id, method, params},
`connect` {ref, id}, `status` {ref, id}, and `answer` {ask, result | error} to the host's
`ask`. The host sends `result` {id, result}, `error` {id, code, message, data} (the
upstream's JSON-RPC error), `failure` {id, message} (a `BackendError`), `note` {id, method,
params} (a notification about request `id`), `event` {ref, method, params} (the
upstream's own notification) and `ask` {ask, id | ref, method, params} (a request of the
upstream to its client, about request `id` or about none).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

import orjson

MAX_LINE = 32 * 1024 * 1024
"""The longest message either side reads; a stdio message is at most half of this."""
SOCKET_NAME = "host.sock"
LOCK_NAME = "host.lock"


def runtime_dir(configured: str, instance: str) -> Path:
    """The directory of one instance's host: `configured`, else one per user and instance
    (`instance` is the database URL, which is what makes workers one gateway) in the
    temporary directory, short enough for a Unix socket's path."""
    if configured:
        path = Path(configured)
    else:
        digest = hashlib.sha256(instance.encode("utf-8")).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"aio-mcp-gateway-{os.getuid()}-{digest}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory owned by this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)
    return path


def dumps(message: dict[str, Any]) -> bytes:
    # orjson escapes control characters inside strings, so a message is one line.
    return orjson.dumps(message) + b"\n"


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream; a bad line ends it too."""
    try:
        line = await reader.readline()
    except (ValueError, ConnectionError):
        return None
    if not line:
        return None
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def same_user(sock: socket.socket | None) -> bool:
    """Whether the peer of a Unix socket runs as this process's user (SO_PEERCRED)."""
    if sock is None:
        return False
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())
