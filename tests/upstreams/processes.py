"""Start the upstream servers of this package as real subprocesses on free loopback ports.

Plain functions, with no pytest in them, so benchmarks can use them too. Output goes to a
temporary file rather than a pipe: nobody reads a pipe while tests run, and a full pipe
would block the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).resolve().parent
OWN_SERVER = HERE / "mcp_server.py"
SDK_SERVER = HERE / "sdk_server.py"
HOST = "127.0.0.1"


@dataclass
class RunningUpstream:
    """A server process and where to reach it."""

    port: int
    process: subprocess.Popen[bytes]
    output: IO[bytes]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint (Streamable HTTP)."""
        return f"{self.base_url}/mcp"

    @property
    def sse_url(self) -> str:
        """The event stream of a server started with `--legacy-sse` (HTTP+SSE, 2024-11-05)."""
        return f"{self.base_url}/sse"

    async def admin(self, method: str, path: str) -> dict[str, Any]:
        """Call one of our server's admin endpoints, e.g. `("POST", "/admin/drop-streams")`,
        and return its JSON body."""
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.base_url}{path}") as resp,
        ):
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    async def stats(self) -> dict[str, Any]:
        """Our server's counters (`GET /admin/stats`)."""
        return await self.admin("GET", "/admin/stats")

    def read_output(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")


class UpstreamStartError(RuntimeError):
    """A server process exited or did not accept connections in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def start_upstream(
    script: Path, *args: str, timeout: float = 20.0, attempts: int = 3
) -> RunningUpstream:
    """Run `script --port P *args` and return once it accepts connections on P.

    A free port can be taken by someone else before the child binds it, so a child that
    exits straight away is retried on another port.
    """
    failure = ""
    for _ in range(attempts):
        port = free_port()
        output = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, str(script), "--port", str(port), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        upstream = RunningUpstream(port, process, output)
        failure = _wait_until_ready(upstream, timeout, script.name)
        if not failure:
            return upstream
        stop_upstream(upstream)
    raise UpstreamStartError(failure)


def _wait_until_ready(upstream: RunningUpstream, timeout: float, name: str) -> str:
    """Return "" once the server accepts connections, else why it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if upstream.process.poll() is not None:
            return (
                f"{name} exited with code {upstream.process.returncode} before listening on "
                f"port {upstream.port}; its output:\n{upstream.read_output()}"
            )
        if accepts_connections(upstream.port):
            return ""
        time.sleep(0.05)
    return (
        f"{name} did not accept connections on port {upstream.port} within {timeout:g}s; "
        f"its output:\n{upstream.read_output()}"
    )


def end_process(
    process: subprocess.Popen[Any], timeout: float = 5.0, sig: int = signal.SIGTERM
) -> None:
    """Send `sig` to a process still running and wait `timeout` seconds for it to end;
    kill it when it does not."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_upstream(upstream: RunningUpstream, timeout: float = 5.0) -> None:
    end_process(upstream.process, timeout)
    upstream.output.close()


def start_own(*args: str, timeout: float = 20.0) -> RunningUpstream:
    """Our aiohttp MCP server; `args` are its options, e.g. `"--sse"`, `"--tools", "25"`,
    `"--legacy-sse"`."""
    return start_upstream(OWN_SERVER, *args, timeout=timeout)


def start_sdk(*args: str, timeout: float = 30.0) -> RunningUpstream:
    """The server built with the official `mcp` SDK; `"--legacy-sse"` for HTTP+SSE."""
    return start_upstream(SDK_SERVER, *args, timeout=timeout)
