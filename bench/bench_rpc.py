"""Requests/s of tools/call through the gateway's /rpc, as a share of the upstream's direct.

Run by hand from a checkout with the gateway installed:

    python bench/bench_rpc.py [--requests N] [--concurrency C] [--workers W]

One run starts our test MCP server (a single aiohttp process) and the gateway under gunicorn
with JWT auth, SQLite and the database cache, all on loopback. It registers the upstream,
checks one `echo` call each way, warms both up, then runs `hey` against the upstream's /mcp
(on an established MCP session) and the gateway's /rpc, interleaved for two rounds so that
drift on a shared machine hits both targets alike. It prints one row per run, the median per
target, and the ratio of the gateway's requests/s to the direct upstream's.

The exit status is 0 when every request of every run answered 200 and reached the upstream,
1 when a run fell short, 2 when the set-up failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, NoReturn

import orjson

REPO = Path(__file__).resolve().parent.parent
# The upstream helpers live with the tests; they are plain functions, made to be shared.
sys.path.insert(0, str(REPO))

from tests.upstreams.processes import (  # noqa: E402
    RunningUpstream,
    UpstreamStartError,
    free_port,
    start_own,
    stop_upstream,
)

from gateway.settings import ENVIRONMENT_VARIABLES  # noqa: E402
from gateway_plugins.auth_jwt import create_token  # noqa: E402

HOST = "127.0.0.1"
UPSTREAM_NAME = "bench"
TOOL = "echo"
GATEWAY_TOOL = f"{UPSTREAM_NAME}__{TOOL}"
PROTOCOL_VERSION = "2025-06-18"
MCP_ACCEPT = "application/json, text/event-stream"
POLL_INTERVAL = 1.0
"""CATALOGUE_POLL_INTERVAL given to the gateway: the longest a worker may lag a change."""
GRACEFUL_TIMEOUT = 5
TOKEN_MINUTES = 240
ROUNDS = 2

# urllib honours *_proxy variables; loopback traffic must never leave through a proxy.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """The benchmark cannot go on; the message says why in a line or a few."""


# --- HTTP helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


def http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> Reply:
    """One request on a fresh connection (urllib never reuses one), so that gunicorn may
    hand each of them to any worker."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _HTTP.open(request, timeout=10) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())
    except OSError as exc:
        raise BenchError(f"{method} {url} failed: {exc}") from None


def status_of(url: str) -> int | None:
    """The status of GET `url`, or None while nothing listens there."""
    try:
        return http("GET", url).status
    except BenchError:
        return None


def tools_call(name: str, text: str, request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"text": text}},
    }


def echoed(reply: Reply, text: str) -> str | None:
    """None when `reply` is a successful echo of `text`, else what is wrong with it."""
    if reply.status != 200:
        return f"HTTP {reply.status}: {reply.body[:300]!r}"
    message = reply.json()
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        return f"no result in {reply.body[:300]!r}"
    content = result.get("content")
    if result.get("isError") or content != [{"type": "text", "text": text}]:
        return f"not an echo of {text!r}: {reply.body[:300]!r}"
    return None


# --- the upstream --------------------------------------------------------------------------


@dataclass(frozen=True)
class McpSession:
    """An initialised session on the upstream: the headers every later request carries."""

    session_id: str
    protocol_version: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Accept": MCP_ACCEPT,
            "Mcp-Session-Id": self.session_id,
            "MCP-Protocol-Version": self.protocol_version,
        }


def open_session(url: str) -> McpSession:
    """initialize, then notifications/initialized, as any MCP client must."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench-rpc", "version": "1"},
        },
    }
    reply = http("POST", url, initialize, {"Accept": MCP_ACCEPT})
    session_id = reply.headers.get("Mcp-Session-Id") if reply.status == 200 else None
    message = reply.json()
    result = message.get("result") if isinstance(message, dict) else None
    if not session_id or not isinstance(result, dict):
        raise BenchError(f"upstream initialize failed: HTTP {reply.status} {reply.body[:300]!r}")
    session = McpSession(session_id, str(result.get("protocolVersion")))
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    reply = http("POST", url, initialized, session.headers)
    if reply.status != 202:
        raise BenchError(f"upstream refused notifications/initialized: HTTP {reply.status}")
    return session


def upstream_calls(upstream: RunningUpstream) -> int:
    """How many tools/call the upstream has answered: proof that a run's requests got there."""
    stats = http("GET", f"{upstream.base_url}/admin/stats").json()
    return int(stats["tools_call"])


# --- the gateway ---------------------------------------------------------------------------


@dataclass
class Gateway:
    """The gateway under gunicorn, configured only by its environment, as operators run it."""

    workdir: Path
    workers: int
    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gunicorn.log"

    def environment(self) -> dict[str, str]:
        # Variables of the caller's shell (or of a .env) must not change what is measured,
        # so every gateway variable (and the shared-metrics directory, which moves every
        # worker's counters into files) is dropped and the ones that matter are set here.
        dropped = {*ENVIRONMENT_VARIABLES, "PROMETHEUS_MULTIPROC_DIR"}
        inherited = {k: v for k, v in os.environ.items() if k not in dropped}
        return {
            **inherited,
            "HOST": HOST,
            "PORT": str(self.port),
            "GUNICORN_WORKERS": str(self.workers),
            "DATABASE_URL": f"sqlite:///{self.workdir / 'gateway.db'}",
            "CACHE_TYPE": "database",
            "AUTH_REQUIRED": "true",
            "AUTH_TYPE": "jwt",
            "JWT_SECRET_KEY": self.secret,
            "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(32),
            "CATALOGUE_POLL_INTERVAL": str(POLL_INTERVAL),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "GUNICORN_ACCESS_LOG": "false",
            # A worker recycled mid-run would measure a restart, not the gateway.
            "GUNICORN_MAX_REQUESTS": "0",
            "GUNICORN_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
        }

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            # The working directory is the temporary one, so no .env of the checkout is read.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
                cwd=self.workdir,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: self._exited() or status_of(f"{self.url}/health") == 200,
            timeout,
            "the gateway to answer /health",
        )
        if self.process.poll() is not None:
            # running_gateway shows the log's tail.
            raise BenchError(f"gunicorn exited with status {self.process.returncode}")

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def token(self, subject: str, *scopes: str) -> str:
        return str(create_token(self.secret, subject, scopes, expires_minutes=TOKEN_MINUTES))

    def worker_pids(self) -> list[int]:
        """The workers' pids, for a profiler; empty where /proc does not list children."""
        if self.process is None:
            return []
        pid = self.process.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        workers = self.worker_pids()
        process.terminate()
        try:
            process.wait(GRACEFUL_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            # A killed master cannot stop its workers; these pids are children of ours.
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def register(gateway: Gateway, upstream: RunningUpstream) -> None:
    body = {"name": UPSTREAM_NAME, "url": upstream.url, "transport": "streamable-http"}
    admin = {"Authorization": f"Bearer {gateway.token('bench-admin', 'admin')}"}
    reply = http("POST", f"{gateway.url}/upstreams", body, admin)
    if reply.status != 201:
        raise BenchError(f"registering the upstream failed: HTTP {reply.status} {reply.body!r}")


def wait_until_callable(gateway: Gateway, headers: Mapping[str, str], timeout: float) -> None:
    """Return once every worker serves the tool.

    The worker that registered it serves it at once; the others pick the change up within
    CATALOGUE_POLL_INTERVAL. Calls on fresh connections, past that interval, all succeeding
    is as close as one gets to asking each worker.
    """
    url = f"{gateway.url}/rpc"

    def callable_now() -> bool:
        return (
            echoed(http("POST", url, tools_call(GATEWAY_TOOL, "ready?"), headers), "ready?") is None
        )

    wait_until(callable_now, timeout, f"{GATEWAY_TOOL} to be callable through the gateway")
    time.sleep(POLL_INTERVAL * 1.5)
    for _ in range(8 * gateway.workers):
        if not callable_now():
            raise BenchError(f"{GATEWAY_TOOL} is not callable on every gateway worker")


# --- hey -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: dict[str, str]
    payload: Path


@dataclass(frozen=True)
class HeyResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int
    """Requests that got no HTTP answer at all (refused, reset, timed out)."""

    @property
    def non_200(self) -> int:
        return self.errors + sum(n for status, n in self.statuses.items() if status != 200)


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_STATUS = re.compile(r"\[(\d+)\]\s+(\d+) responses")
_ERROR = re.compile(r"^\s*\[(\d+)\]\s", re.MULTILINE)


def _percentile_ms(output: str, percent: int) -> float:
    match = re.search(rf"^\s*{percent}%+ in ([0-9.]+) secs", output, re.MULTILINE)
    # hey leaves the line out when no request succeeded.
    return float(match.group(1)) * 1000 if match else float("nan")


def parse_hey(output: str) -> HeyResult:
    rps = _RPS.search(output)
    if rps is None:
        raise BenchError(f"hey printed no Requests/sec:\n{output[-2000:]}")
    summary, _, errors = output.partition("Error distribution:")
    return HeyResult(
        requests_per_second=float(rps.group(1)),
        p50_ms=_percentile_ms(summary, 50),
        p99_ms=_percentile_ms(summary, 99),
        statuses={int(code): int(n) for code, n in _STATUS.findall(summary)},
        errors=sum(int(n) for n in _ERROR.findall(errors)),
    )


def hey(target: Target, requests: int, concurrency: int) -> HeyResult:
    command = ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST"]
    command += ["-T", "application/json", "-D", str(target.payload)]
    for name, value in target.headers.items():
        command += ["-H", f"{name}: {value}"]
    completed = subprocess.run([*command, target.url], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise BenchError(f"hey failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_hey(completed.stdout)


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    target: str
    label: str
    result: HeyResult
    upstream_calls: int


_ROW = "{:<8} {:>6} {:>11} {:>8} {:>8} {:>8}"


def row(target: str, label: str, rps: float, p50: float, p99: float, non_200: int | str) -> str:
    return _ROW.format(target, label, f"{rps:.1f}", f"{p50:.2f}", f"{p99:.2f}", non_200)


def report(runs: list[Run], requests: int) -> bool:
    """Print the table and the ratio; True when every request succeeded and arrived."""
    print(_ROW.format("target", "round", "requests/s", "p50 ms", "p99 ms", "non-200"))
    for run in runs:
        r = run.result
        print(row(run.target, run.label, r.requests_per_second, r.p50_ms, r.p99_ms, r.non_200))
    medians: dict[str, float] = {}
    for target in ("direct", "gateway"):
        mine = [run.result for run in runs if run.target == target]
        medians[target] = statistics.median(r.requests_per_second for r in mine)
        print(
            row(
                target,
                "median",
                medians[target],
                statistics.median(r.p50_ms for r in mine),
                statistics.median(r.p99_ms for r in mine),
                sum(r.non_200 for r in mine),
            )
        )
    ratio = medians["gateway"] / medians["direct"]
    verdict = "met" if ratio >= 0.25 else "NOT met"
    goal = "met" if ratio >= 0.50 else "not yet"
    print(
        f"\ngateway/direct requests/s: {ratio:.3f} ({ratio:.1%}); "
        f"issue target >= 25%: {verdict}; project goal >= 50%: {goal}"
    )
    short = [run for run in runs if run.upstream_calls != requests or run.result.non_200]
    for run in short:
        print(
            f"WARNING: {run.target} round {run.label}: {run.result.non_200} non-200, "
            f"upstream answered {run.upstream_calls} of {requests} tools/call"
        )
    if not short:
        print(f"every run: {requests} x HTTP 200, and the upstream answered {requests} tools/call")
    return not short


# --- orchestration -------------------------------------------------------------------------


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what}")


@contextmanager
def running_upstream() -> Iterator[RunningUpstream]:
    try:
        upstream = start_own()
    except UpstreamStartError as exc:
        raise BenchError(str(exc)) from None
    try:
        yield upstream
    finally:
        stop_upstream(upstream)


@contextmanager
def running_gateway(workdir: Path, workers: int) -> Iterator[Gateway]:
    gateway = Gateway(workdir, workers)
    try:
        gateway.start()
        yield gateway
    except BenchError:
        if log := gateway.log():
            print(f"gateway log (tail):\n{log}", file=sys.stderr)
        raise
    finally:
        gateway.stop()


def check_samples(direct: Target, gateway: Target) -> None:
    """One echo each way before measuring: a fast wrong answer is not a result."""
    for target, name in ((direct, TOOL), (gateway, GATEWAY_TOOL)):
        text = f"sample-{secrets.token_hex(4)}"
        problem = echoed(http("POST", target.url, tools_call(name, text), target.headers), text)
        if problem is not None:
            raise BenchError(f"{target.name} sample call failed: {problem}")
    print("sample check: echo returns its text, directly and through the gateway")


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    with running_upstream() as upstream, running_gateway(workdir, options.workers) as gateway:
        register(gateway, upstream)
        user = {"Authorization": f"Bearer {gateway.token('bench')}"}
        wait_until_callable(gateway, user, timeout=30)
        session = open_session(upstream.url)
        direct_payload = workdir / "direct.json"
        gateway_payload = workdir / "gateway.json"
        direct_payload.write_bytes(orjson.dumps(tools_call(TOOL, "hello")))
        gateway_payload.write_bytes(orjson.dumps(tools_call(GATEWAY_TOOL, "hello")))
        direct = Target("direct", upstream.url, session.headers, direct_payload)
        through = Target("gateway", f"{gateway.url}/rpc", user, gateway_payload)

        pids = " ".join(map(str, gateway.worker_pids())) or "unknown"
        print(
            f"upstream: {upstream.url} (our test MCP server: a single process, pid "
            f"{upstream.process.pid}; the comparison is relative)"
        )
        print(f"gateway:  {through.url} (gunicorn, {options.workers} workers, pids {pids})")
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, "
            f"tools/call {TOOL}, {ROUNDS} interleaved rounds"
        )
        check_samples(direct, through)

        warmup = max(options.concurrency, options.requests // 10)
        for target in (direct, through):
            hey(target, warmup, options.concurrency)
        print(f"warm-up:  {warmup} requests each\n")

        runs: list[Run] = []
        for round_number in range(1, ROUNDS + 1):
            for target in (direct, through):
                before = upstream_calls(upstream)
                result = hey(target, options.requests, options.concurrency)
                calls = upstream_calls(upstream) - before
                runs.append(Run(target.name, str(round_number), result, calls))
        return report(runs, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per run (default 10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="hey -c (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    options = parser.parse_args(argv)
    if options.concurrency < 1 or options.workers < 1:
        parser.error("--concurrency and --workers must be at least 1")
    if options.requests < options.concurrency:
        parser.error("--requests must be at least --concurrency (hey refuses fewer)")
    return options


def _interrupted(signum: int, frame: object) -> NoReturn:
    # SIGTERM unwinds like Ctrl-C, so the finally blocks still stop the servers. SIGINT gets
    # the same handler because a shell starts background jobs with SIGINT ignored, and a
    # benchmark that cannot be interrupted would keep its servers running.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    if shutil.which("hey") is None:
        print("bench_rpc: hey is not on PATH (apt-get install hey)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    try:
        return 0 if benchmark(options, workdir) else 1
    except BenchError as exc:
        print(f"bench_rpc: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench_rpc: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
