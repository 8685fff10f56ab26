"""Run the gateway in a real process of its own, as an operator does, and wait until it serves.

`GatewayProcess` starts a command with its output in a log file in the test's folder and is
ready once `/health` answers 200; `ServeGateway` is `python -m gateway serve`, and
`tests.support.gunicorn_process.GunicornGateway` is the same start for gunicorn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import orjson

from tests.conftest import free_port
from tests.upstreams.processes import end_process

# urllib honours *_proxy variables; loopback requests must not go through one.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def versions_by_worker(url: str, workers: int = 1, asks: int = 400) -> dict[int, Any]:
    """`/version` of each worker, by pid, asked until `workers` of them have answered (or
    `asks` times): urllib opens a fresh connection per request, so gunicorn may hand each
    one to any worker."""
    found: dict[int, Any] = {}
    for _ in range(asks):
        with _HTTP.open(f"{url}/version", timeout=5) as response:
            body = orjson.loads(response.read())
        found[int(body["worker"])] = body
        if len(found) >= workers:
            break
    return found


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class GatewayProcess:
    """A gateway command on `port`, run in `workdir` with `env` over this process's own
    environment (JSON logs unless `env` says otherwise)."""

    name = "gateway"

    def __init__(self, env: Mapping[str, str], port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}-{port}.log"
        self.env = {**os.environ, "LOG_FORMAT": "json", **env}
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            if status_of(f"{self.url}/health") == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            end_process(self.process, 20, sig)


class ServeGateway(GatewayProcess):
    """`python -m gateway serve` on loopback: one process, no gunicorn."""

    name = "serve"

    def command(self) -> list[str]:
        host = ["--host", "127.0.0.1", "--port", str(self.port)]
        return [sys.executable, "-m", "gateway", "serve", *host]

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Ctrl-C, as an operator stops `serve` in a terminal."""
        super().stop(sig)


@contextmanager
def serving(env: Mapping[str, str], workdir: Path) -> Iterator[ServeGateway]:
    """`serve` started in `workdir` on a free port, answering `/health`; stopped when the
    block ends, so its log is whole after it."""
    gateway = ServeGateway(env, free_port(), workdir).start()
    try:
        yield gateway
    finally:
        gateway.stop()
