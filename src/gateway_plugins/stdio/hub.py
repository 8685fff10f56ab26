"""A worker's one connection to its instance's stdio host (`host.py`), shared by all its
stdio backends, and the start of that host when there is none.

The host's socket and lock file live in the runtime directory. A worker that cannot
connect takes the lock file with a non-blocking `flock`: the one that gets it starts the
host and hands it the locked file, the others wait for the socket. The host thus outlives
the worker that started it (it serves every worker) and the lock is free again the moment
it dies, whoever killed it.

One `Hub` per process and runtime directory, counted by the backends that use it: the
backend factory gets no application, and the connection must be shared by every backend
of the process (and outlive none of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.plugin import JSON, AskClient, BackendError, ClientRequestError, Notify
from gateway_plugins.stdio.channel import LOCK_NAME, MAX_LINE, SOCKET_NAME, dumps, read_message

log = structlog.get_logger(__name__)

HOST_START_TIMEOUT = 15.0
HOST_RESTART_SECONDS = 1.0
RECONNECT_MAX = 5.0
HELLO_TIMEOUT = 5.0
"""Seconds a host has to greet a new connection."""


class HubUser(Protocol):
    """A backend using the hub: what the host needs to open it and where its events go."""

    name: str

    def open_message(self) -> dict[str, Any]: ...

    @property
    def listener(self) -> Notify | None: ...

    @property
    def ask(self) -> AskClient | None: ...


@dataclass(eq=False)
class Pending:
    future: asyncio.Future[dict[str, Any]]
    on_notification: Notify | None = None
    on_request: AskClient | None = None
    asking: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class HostCommand:
    """The host's command line, from the worker's settings."""

    max_processes: int
    initialize_timeout: float
    tool_timeout: float

    def argv(self, directory: Path, lock_fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gateway_plugins.stdio.host",
            f"--runtime-dir={directory}",
            f"--lock-fd={lock_fd}",
            f"--max-processes={self.max_processes}",
            f"--initialize-timeout={self.initialize_timeout}",
            f"--tool-timeout={self.tool_timeout}",
        ]


class Hub:
    def __init__(self, directory: Path, command: HostCommand) -> None:
        self.directory = directory
        self.command = command
        self.users: dict[int, HubUser] = {}
        self.pending: dict[int, Pending] = {}
        self._refs = itertools.count(1)
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._host_started = -HOST_RESTART_SECONDS
        self.closed = False

    # --- backends ---

    def add(self, user: HubUser) -> int:
        ref = next(self._refs)
        self.users[ref] = user
        self.send_now({"op": "open", "ref": ref, **user.open_message()})
        return ref

    def remove(self, ref: int) -> None:
        if self.users.pop(ref, None) is not None:
            self.send_now({"op": "close", "ref": ref})

    def listen(self, ref: int) -> None:
        user = self.users.get(ref)
        if user is None:
            return
        self.send_now({"op": "listen", "ref": ref, "on": user.listener is not None})
        if user.listener is not None and self._writer is None:
            self._keep_connected()

    def next_id(self) -> int:
        return next(self._ids)

    async def send(self, message: dict[str, Any]) -> None:
        writer = await self._connected()
        writer.write(dumps(message))
        await writer.drain()

    def send_now(self, message: dict[str, Any]) -> None:
        """Send if connected; a new connection sends every open and listen anew."""
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(dumps(message))

    # --- the connection ---

    async def _connected(self) -> asyncio.StreamWriter:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            return writer
        async with self._lock:
            if self.closed:
                raise BackendError("the stdio backends of this worker are closed")
            writer = self._writer
            if writer is not None and not writer.is_closing():
                return writer
            reader, writer = await self._connect()
            for ref, user in self.users.items():
                writer.write(dumps({"op": "open", "ref": ref, **user.open_message()}))
                if user.listener is not None:
                    writer.write(dumps({"op": "listen", "ref": ref, "on": True}))
            self._writer = writer
            self._spawn(self._read(reader, writer))
            return writer

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        path = str(self.directory / SOCKET_NAME)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOST_START_TIMEOUT
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
                if await _greeted(reader, writer):
                    return reader, writer
            except (FileNotFoundError, ConnectionRefusedError):
                # A host that fails at once is not started again more than once a second.
                if loop.time() - self._host_started >= HOST_RESTART_SECONDS:
                    self._host_started = loop.time()
                    self._start_host()
            except OSError as exc:  # a path too long for a socket, a directory not ours...
                raise BackendError(f"the stdio host's socket {path}: {exc}") from None
            if loop.time() > deadline:
                raise BackendError(
                    f"the stdio host did not start within {HOST_START_TIMEOUT:g}s "
                    f"(runtime directory {self.directory})"
                )
            await asyncio.sleep(0.05)

    def _start_host(self) -> None:
        """Start the host if no process holds the lock; a process that does is the host,
        or is starting it."""
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            os.set_inheritable(fd, True)
            # posix_spawn, not fork: a worker has threads; setsid: the host is no part of
            # the worker's process group, so signals for the worker do not reach it.
            pid = os.posix_spawn(
                sys.executable,
                self.command.argv(self.directory, fd),
                dict(os.environ),
                setsid=True,
            )
            log.info("stdio host starting", pid=pid)
            # The host is our child: reap it when it exits, whenever that is.
            threading.Thread(target=_reap, args=(pid,), daemon=True).start()
        finally:
            os.close(fd)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (message := await read_message(reader)) is not None:
                await self._on_message(message)
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
            self._lost()

    def _lost(self) -> None:
        for pending in list(self.pending.values()):
            for task in pending.asking:
                task.cancel()
            if not pending.future.done():
                pending.future.set_exception(
                    BackendError("the stdio host went away before answering")
                )
        if not self.closed and any(u.listener is not None for u in self.users.values()):
            self._keep_connected()

    def _keep_connected(self) -> None:
        """Reconnect in the background while a listener waits for events (which also has the
        host start the processes again after a host died)."""
        if self._reconnecting is not None and not self._reconnecting.done():
            return
        self._reconnecting = self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closed and self._writer is None:
            try:
                await self._connected()
                return
            except BackendError as exc:
                log.info("stdio host unreachable", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _on_message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op in {"result", "error", "failure"}:
            pending = self.pending.get(message.get("id"))  # type: ignore[arg-type]
            if pending is not None and not pending.future.done():
                pending.future.set_result(message)
        elif op == "note":
            pending = self.pending.get(message.get("id"))  # type: ignore[arg-type]
            if pending is not None and pending.on_notification is not None:
                try:
                    await pending.on_notification(str(message.get("method")), _params(message))
                except Exception as exc:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
        elif op == "event":
            user = self.users.get(message.get("ref"))  # type: ignore[arg-type]
            listener = user.listener if user is not None else None
            if listener is not None:
                try:
                    await listener(str(message.get("method")), _params(message))
                except Exception:
                    log.exception("stdio upstream notification listener failed")
        elif op == "ask":
            self._on_ask(message)

    def _on_ask(self, message: dict[str, Any]) -> None:
        ask: AskClient | None = None
        pending = None
        if "id" in message:
            pending = self.pending.get(message["id"])
            ask = pending.on_request if pending is not None else None
        else:
            user = self.users.get(message.get("ref"))  # type: ignore[arg-type]
            ask = user.ask if user is not None else None
        task = self._spawn(self._answer(message, ask))
        if pending is not None:
            pending.asking.add(task)
            task.add_done_callback(pending.asking.discard)

    async def _answer(self, message: dict[str, Any], ask: AskClient | None) -> None:
        method = str(message.get("method"))
        answer: dict[str, Any] = {"op": "answer", "ask": message.get("ask")}
        try:
            if ask is None:
                if method != "ping":
                    raise ClientRequestError(-32601, f"no client can be asked for {method}")
                answer["result"] = {}
            else:
                answer["result"] = await ask(method, _params(message))
        except ClientRequestError as exc:
            answer["error"] = {"code": exc.code, "message": exc.message, "data": exc.data}
        except Exception:
            log.exception("answering a stdio upstream's request failed", method=method)
            answer["error"] = {"code": -32603, "message": f"{method}: the client failed"}
        self.send_now(answer)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        self.closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        tasks = [*self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if writer is not None:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _greeted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the host greeted a new connection; one it closes first (the listening socket
    of a host that is dying still takes connections) is closed here, and the caller tries
    again."""
    try:
        async with asyncio.timeout(HELLO_TIMEOUT):
            hello = await read_message(reader)
    except TimeoutError:
        hello = None
    if hello is not None and hello.get("op") == "hello":
        return True
    writer.close()
    return False


def _params(message: dict[str, Any]) -> JSON:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class Hubs:
    """The hubs of this process by runtime directory, each closed with its last backend."""

    def __init__(self) -> None:
        self._hubs: dict[tuple[int, Path], tuple[Hub, int]] = {}

    def acquire(self, directory: Path, command: Callable[[], HostCommand]) -> Hub:
        # A forked child must not share its parent's connection.
        key = (os.getpid(), directory)
        hub, count = self._hubs.get(key, (None, 0))
        if hub is None:
            hub = Hub(directory, command())
        self._hubs[key] = (hub, count + 1)
        return hub

    async def release(self, hub: Hub) -> None:
        key = (os.getpid(), hub.directory)
        held, count = self._hubs.get(key, (None, 0))
        if held is not hub:
            return
        if count > 1:
            self._hubs[key] = (hub, count - 1)
            return
        del self._hubs[key]
        await hub.close()


HUBS = Hubs()
