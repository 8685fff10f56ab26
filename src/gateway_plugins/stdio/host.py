"""The stdio host: one process per gateway instance that runs every stdio upstream once and
serves all the workers over a Unix socket (`channel.py`).

Run as `python -m gateway_plugins.stdio.host`, started by the first worker that needs it
(`hub.py`), which hands it the locked lock file: the lock lives exactly as long as this
process, so at most one host runs per runtime directory and a new one can start the moment
it dies. It runs each upstream's process (`StdioClient`) while some worker has it open, and
`LINGER_SECONDS` more (a registration's discovery hands over to the workers' backends);
at most `--max-processes` of them. Requests from many workers are multiplexed onto the one
session with ids of its own; notifications and the upstream's requests to its client go
back to the worker whose request they are about, or, when about none, to every worker
listening (notifications) or to one of them (requests).

It exits once no worker has been connected for `--idle-exit` seconds, stopping every
process, so stopping or killing the whole gateway leaves nothing running. Its processes are
SIGKILLed by the kernel if it dies itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import itertools
import os
import signal
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from gateway.plugin import (
    JSON,
    BackendError,
    ClientRequestError,
    Settings,
    UpstreamConfig,
    UpstreamError,
)
from gateway_plugins.stdio.channel import (
    MAX_LINE,
    SOCKET_NAME,
    dumps,
    read_message,
    same_user,
)
from gateway_plugins.stdio.process import Command, StdioClient

log = structlog.get_logger(__name__)

LINGER_SECONDS = 10.0
IDLE_CHECK_SECONDS = 0.25


@dataclass(eq=False)
class _Upstream:
    client: StdioClient
    refs: set[tuple[_Peer, int]] = field(default_factory=set)
    listeners: set[tuple[_Peer, int]] = field(default_factory=set)
    stopping: asyncio.Task[None] | None = None


class _Peer:
    """One worker's connection."""

    def __init__(self, host: Host, writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.writer = writer
        self.refs: dict[int, _Upstream] = {}
        self.refused: dict[int, str] = {}
        self.calls: dict[Any, asyncio.Task[None]] = {}
        self.asks: dict[int, asyncio.Future[Any]] = {}

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(dumps(message))

    async def ask(self, head: dict[str, Any], method: str, params: JSON) -> JSON:
        """Forward a request of the upstream to this worker and return its answer."""
        ask_id = next(self.host.ask_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.asks[ask_id] = future
        try:
            self.send({"op": "ask", "ask": ask_id, **head, "method": method, "params": params})
            answer = await future
        finally:
            self.asks.pop(ask_id, None)
        error = answer.get("error")
        if isinstance(error, dict):
            raise ClientRequestError(
                int(error.get("code", -32603)), str(error.get("message", "")), error.get("data")
            )
        result = answer.get("result")
        return result if isinstance(result, dict) else {}


class Host:
    def __init__(self, max_processes: int, initialize_timeout: float, tool_timeout: float):
        self.max_processes = max_processes
        self.initialize_timeout = initialize_timeout
        self.tool_timeout = tool_timeout
        self.settings = Settings(tool_timeout=tool_timeout)
        self.upstreams: dict[str, _Upstream] = {}
        self.peers: set[_Peer] = set()
        self.ask_ids = itertools.count(1)

    # --- connections ---

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not same_user(writer.get_extra_info("socket")):
            writer.close()
            return
        peer = _Peer(self, writer)
        self.peers.add(peer)
        # The first line says this host accepted the connection (see `Hub._connect`).
        peer.send({"op": "hello", "pid": os.getpid()})
        try:
            while (message := await read_message(reader)) is not None:
                await self._on_message(peer, message)
        finally:
            self.peers.discard(peer)
            for task in peer.calls.values():
                task.cancel()
            for future in peer.asks.values():
                if not future.done():
                    # The upstream still gets an answer to what it asked.
                    future.set_exception(
                        ClientRequestError(-32603, "the gateway worker asked went away")
                    )
            for ref in list(peer.refs):
                self._close_ref(peer, ref)
            writer.close()

    async def _on_message(self, peer: _Peer, message: dict[str, Any]) -> None:
        op = message.get("op")
        ref = message.get("ref")
        if op == "open" and isinstance(ref, int):
            await self._open(peer, ref, message.get("config"))
        elif op == "close" and isinstance(ref, int):
            self._close_ref(peer, ref)
        elif op == "listen" and isinstance(ref, int):
            upstream = peer.refs.get(ref)
            if upstream is not None:
                if message.get("on"):
                    upstream.listeners.add((peer, ref))
                else:
                    upstream.listeners.discard((peer, ref))
        elif op == "answer":
            future = peer.asks.get(message.get("ask"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(message)
        elif op == "cancel":
            task = peer.calls.get(message.get("id"))
            if task is not None:
                task.cancel()
        elif op in {"request", "notify", "connect", "status"} and isinstance(ref, int):
            call_id = message.get("id")
            task = asyncio.create_task(self._call(peer, ref, op, message))
            peer.calls[call_id] = task
            task.add_done_callback(lambda _: peer.calls.pop(call_id, None))

    async def _open(self, peer: _Peer, ref: int, raw: Any) -> None:
        config = _config(raw)
        if config is None:
            peer.refused[ref] = "the stdio host got a malformed upstream"
            return
        key = _key(config)
        upstream = self.upstreams.get(key)
        if upstream is None:
            if len(self.upstreams) >= self.max_processes:
                self._make_room()
            if len(self.upstreams) >= self.max_processes:
                peer.refused[ref] = (
                    f"upstream {config.name!r}: STDIO_MAX_PROCESSES ({self.max_processes}) "
                    "stdio processes are already running on this instance"
                )
                return
            client = StdioClient(config, self.settings, self.initialize_timeout)
            upstream = _Upstream(client)
            self.upstreams[key] = upstream
            await client.start()
            client.set_listener(partial(self._event, upstream), partial(self._ask_any, upstream))
        if upstream.stopping is not None:
            upstream.stopping.cancel()
            upstream.stopping = None
        upstream.refs.add((peer, ref))
        peer.refs[ref] = upstream

    def _close_ref(self, peer: _Peer, ref: int) -> None:
        peer.refused.pop(ref, None)
        upstream = peer.refs.pop(ref, None)
        if upstream is None:
            return
        upstream.refs.discard((peer, ref))
        upstream.listeners.discard((peer, ref))
        if not upstream.refs and upstream.stopping is None:
            upstream.stopping = asyncio.create_task(self._stop_later(upstream))

    async def _stop_later(self, upstream: _Upstream) -> None:
        await asyncio.sleep(LINGER_SECONDS)
        self._forget(upstream)
        await upstream.client.close()

    def _make_room(self) -> None:
        """Stop at once one process that no worker holds, kept only for the linger."""
        for upstream in list(self.upstreams.values()):
            if not upstream.refs and upstream.stopping is not None:
                upstream.stopping.cancel()
                self._forget(upstream)
                upstream.stopping = asyncio.create_task(upstream.client.close())
                return

    def _forget(self, upstream: _Upstream) -> None:
        for key, held in list(self.upstreams.items()):
            if held is upstream:
                del self.upstreams[key]

    # --- what the workers ask ---

    async def _call(self, peer: _Peer, ref: int, op: str, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        upstream = peer.refs.get(ref)
        try:
            if upstream is None:
                raise BackendError(peer.refused.get(ref, "the upstream is not open on the host"))
            result = await self._run(peer, upstream.client, op, message)
        except UpstreamError as exc:
            peer.send(
                {
                    "op": "error",
                    "id": call_id,
                    "code": exc.code,
                    "message": exc.upstream_message,
                    "data": exc.data,
                }
            )
        except BackendError as exc:
            peer.send({"op": "failure", "id": call_id, "message": str(exc)})
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.exception("stdio host request failed", op=op)
            peer.send({"op": "failure", "id": call_id, "message": f"stdio host: {exc!r}"})
        else:
            peer.send({"op": "result", "id": call_id, "result": result})

    async def _run(
        self, peer: _Peer, client: StdioClient, op: str, message: dict[str, Any]
    ) -> JSON:
        params = message.get("params")
        params = params if isinstance(params, dict) else None
        if op == "status":
            return {**(await client.status()), "host_pid": os.getpid(), "workers": len(self.peers)}
        if op == "connect":
            await client.connect()
            return {"capabilities": client.capabilities}
        method = str(message.get("method", ""))
        if op == "notify":
            await client.notify(method, params)
            return {}
        call_id = message.get("id")
        timeout = message.get("timeout")
        on_notification = on_request = None
        if message.get("notify"):

            async def on_notification(m: str, p: JSON) -> None:
                peer.send({"op": "note", "id": call_id, "method": m, "params": p})

        if message.get("ask"):

            async def on_request(m: str, p: JSON) -> JSON:
                return await peer.ask({"id": call_id}, m, p)

        return await client.request(
            method,
            params,
            float(timeout) if isinstance(timeout, int | float) else self.tool_timeout,
            on_notification,
            on_request,
        )

    # --- what the upstreams send on their own ---

    async def _event(self, upstream: _Upstream, method: str, params: JSON) -> None:
        for peer, ref in list(upstream.listeners):
            peer.send({"op": "event", "ref": ref, "method": method, "params": params})

    async def _ask_any(self, upstream: _Upstream, method: str, params: JSON) -> JSON:
        for peer, ref in list(upstream.listeners):
            return await peer.ask({"ref": ref}, method, params)
        raise ClientRequestError(-32601, f"no client can be asked for {method}")

    async def close(self) -> None:
        upstreams = list(self.upstreams.values())
        self.upstreams.clear()
        for upstream in upstreams:
            if upstream.stopping is not None:
                upstream.stopping.cancel()
        await asyncio.gather(*(u.client.close() for u in upstreams), return_exceptions=True)


def _config(raw: Any) -> UpstreamConfig | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None
    options = raw.get("options")
    env = raw.get("env")
    if not isinstance(options, dict) or not isinstance(env, dict):
        return None
    return UpstreamConfig(
        name=raw["name"],
        transport="stdio",
        headers={str(k): str(v) for k, v in env.items()},
        options=options,
    )


def _key(config: UpstreamConfig) -> str:
    return f"{config.name}\0{Command.of(config)!r}"


async def main(args: argparse.Namespace) -> None:
    host = Host(args.max_processes, args.initialize_timeout, args.tool_timeout)
    path = Path(args.runtime_dir) / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(host.serve, path=str(path), limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("stdio host started", pid=os.getpid())
    try:
        await _until_idle(host, args.idle_exit, stop)
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await host.close()
        log.info("stdio host stopped", pid=os.getpid())


async def _until_idle(host: Host, idle_exit: float, stop: asyncio.Event) -> None:
    """Return on SIGTERM, or once no worker has been connected for `idle_exit` seconds
    (counted from the start too: the worker that started the host connects at once)."""
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_CHECK_SECONDS):
                await stop.wait()
        if host.peers:
            idle_since = loop.time()
        elif loop.time() - idle_since >= idle_exit:
            return


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway_plugins.stdio.host")
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("--max-processes", type=int, required=True)
    parser.add_argument("--initialize-timeout", type=float, required=True)
    parser.add_argument("--tool-timeout", type=float, required=True)
    parser.add_argument("--idle-exit", type=float, default=3.0)
    return parser.parse_args()


def run() -> None:
    args = _arguments()
    # The lock came locked from the worker that started us; holding it is what makes us
    # the instance's host.
    fcntl.flock(args.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _configure_logging()
    asyncio.run(main(args))


def _configure_logging() -> None:
    from gateway.logconfig import configure_logging
    from gateway.settings import SettingsError, load_settings

    try:
        configure_logging(load_settings())
    except SettingsError:
        pass


if __name__ == "__main__":
    run()
