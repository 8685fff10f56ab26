"""What the benchmark scripts share: starting the test upstream and the gateway, plain HTTP
on fresh connections, MCP sessions, running `hey` and printing its figures.

Every server runs on loopback and is stopped again on the way out, even on Ctrl-C. Nothing
here measures anything by itself; each `bench_*.py` script decides what to compare.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
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
from typing import Any, NamedTuple, NoReturn, Protocol
from urllib.parse import urlsplit

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
from gateway_plugins.jwt_tokens import create_token  # noqa: E402

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
ONE_SESSION_UNBOUNDED = {"MAX_INFLIGHT_PER_SESSION": "0", "MAX_INFLIGHT_PER_SUBJECT": "0"}
"""For runs that send all of hey's concurrent requests in one MCP session of one caller:
the per-session and per-caller bounds on requests in flight (64 and 256 per worker) would
refuse what past them stands for many clients. A gateway that does not know them ignores
them."""

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
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request on a fresh connection (urllib never reuses one), so that gunicorn may
    hand each of them to any worker."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _HTTP.open(request, timeout=timeout) as response:
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


def echo_problem(message: Any, text: str) -> str | None:
    """None when the JSON-RPC `message` is a successful echo of `text`, else what is wrong."""
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        return f"no result in {str(message)[:300]}"
    if result.get("isError") or result.get("content") != [{"type": "text", "text": text}]:
        return f"not an echo of {text!r}: {str(message)[:300]}"
    return None


def echoed(reply: Reply, text: str) -> str | None:
    """None when `reply` is a successful echo of `text`, else what is wrong with it."""
    if reply.status != 200:
        return f"HTTP {reply.status}: {reply.body[:300]!r}"
    return echo_problem(reply.json(), text)


# --- MCP sessions --------------------------------------------------------------------------


@dataclass(frozen=True)
class McpSession:
    """An initialised Streamable HTTP session: the headers every later request carries."""

    session_id: str
    protocol_version: str
    auth: Mapping[str, str] = field(default_factory=dict)
    """Headers the endpoint wants besides MCP's own, such as the gateway's bearer token."""

    @property
    def headers(self) -> dict[str, str]:
        return {
            **self.auth,
            "Accept": MCP_ACCEPT,
            "Mcp-Session-Id": self.session_id,
            "MCP-Protocol-Version": self.protocol_version,
        }


def initialize_message(
    client: str, request_id: int = 0, version: str = PROTOCOL_VERSION
) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def open_session(
    url: str,
    auth: Mapping[str, str] | None = None,
    client: str = "bench",
    version: str = PROTOCOL_VERSION,
) -> McpSession:
    """initialize, then notifications/initialized, as any MCP client must."""
    auth = dict(auth or {})
    message = initialize_message(client, version=version)
    reply = http("POST", url, message, {**auth, "Accept": MCP_ACCEPT})
    session_id = reply.headers.get("Mcp-Session-Id") if reply.status == 200 else None
    message = reply.json()
    result = message.get("result") if isinstance(message, dict) else None
    if not session_id or not isinstance(result, dict):
        raise BenchError(f"initialize at {url} failed: HTTP {reply.status} {reply.body[:300]!r}")
    session = McpSession(session_id, str(result.get("protocolVersion")), auth)
    reply = http("POST", url, INITIALIZED, session.headers)
    if reply.status != 202:
        raise BenchError(f"{url} refused notifications/initialized: HTTP {reply.status}")
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
    cache: str = "database"
    settings: Mapping[str, str] = field(default_factory=dict)
    """Further gateway variables, applied last (REDIS_URL, MEMORY_CACHE_MAX_ITEMS, ...)."""
    conf: Path = REPO / "gunicorn.conf.py"
    """The gunicorn configuration; another checkout's runs that checkout's gateway."""
    pythonpath: tuple[Path, ...] = ()
    """Put before the installed gateway on the import path, so another checkout's code runs."""
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
        if self.pythonpath:
            paths = [*map(str, self.pythonpath), *filter(None, [inherited.get("PYTHONPATH")])]
            inherited["PYTHONPATH"] = os.pathsep.join(paths)
        return {
            **inherited,
            "HOST": HOST,
            "PORT": str(self.port),
            "GUNICORN_WORKERS": str(self.workers),
            "DATABASE_URL": f"sqlite:///{self.workdir / 'gateway.db'}",
            "CACHE_TYPE": self.cache,
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
            **self.settings,
        }

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            # The working directory is the temporary one, so no .env of the checkout is read.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(self.conf)],
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

    def bearer(self, subject: str, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, *scopes)}"}

    def worker_pids(self) -> list[int]:
        """The workers' pids, for a profiler; empty where /proc does not list children."""
        return [] if self.process is None else children(self.process.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_master(self.process)


def children(pid: int) -> list[int]:
    """A process's children, from /proc; empty where /proc does not list them."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stop_master(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a gunicorn master, gracefully if it will, killing it and its workers if not."""
    if process is None or process.poll() is not None:
        return
    workers = children(process.pid)
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


def add_upstream(
    gateway: Gateway,
    body: Mapping[str, Any],
    admin: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """POST /upstreams as an admin: by default with a token of the gateway's own secret."""
    headers = gateway.bearer("bench-admin", "admin") if admin is None else admin
    reply = http("POST", f"{gateway.url}/upstreams", body, headers, timeout)
    if reply.status != 201:
        raise BenchError(
            f"registering upstream {body.get('name')!r} failed: HTTP {reply.status} "
            f"{reply.body[:500]!r}"
        )


def register(
    gateway: Gateway, upstream: RunningUpstream, admin: Mapping[str, str] | None = None
) -> None:
    """Register the test upstream, as `bench`."""
    body = {"name": UPSTREAM_NAME, "url": upstream.url, "transport": "streamable-http"}
    add_upstream(gateway, body, admin)


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


def serve_echo(
    gateway: Gateway,
    upstream: RunningUpstream,
    bearer: Mapping[str, str] | None = None,
    admin: Mapping[str, str] | None = None,
) -> None:
    """Register the test upstream on `gateway` and return once every worker serves its echo
    to `bearer` (by default a user token of the gateway's own secret)."""
    register(gateway, upstream, admin)
    wait_until_callable(gateway, gateway.bearer("bench") if bearer is None else bearer, 30)


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
    total_bytes: int = 0
    """Response body bytes of the whole run, as hey reports them ("Total data")."""

    @property
    def non_200(self) -> int:
        return self.errors + sum(n for status, n in self.statuses.items() if status != 200)


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_TOTAL = re.compile(r"Total data:\s+(\d+) bytes")
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
        total_bytes=int(total.group(1)) if (total := _TOTAL.search(summary)) else 0,
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


def check_echo(target: Target, tool: str) -> None:
    """One echo before measuring: a fast wrong answer is not a result."""
    text = f"sample-{secrets.token_hex(4)}"
    problem = echoed(http("POST", target.url, tools_call(tool, text), target.headers), text)
    if problem is not None:
        raise BenchError(f"{target.name} sample call failed: {problem}")


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


def print_runs(runs: list[Run], targets: tuple[str, ...]) -> dict[str, float]:
    """Print one row per run and the median per target; return the median requests/s."""
    print(_ROW.format("target", "round", "requests/s", "p50 ms", "p99 ms", "non-200"))
    for run in runs:
        r = run.result
        print(row(run.target, run.label, r.requests_per_second, r.p50_ms, r.p99_ms, r.non_200))
    medians: dict[str, float] = {}
    for target in targets:
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
    return medians


def _breakdown(result: HeyResult) -> str:
    """What the non-200 answers were, e.g. " (HTTP 503: 40, no answer: 2)"."""
    parts = [
        f"HTTP {status}: {n}" for status, n in sorted(result.statuses.items()) if status != 200
    ]
    if result.errors:
        parts.append(f"no answer: {result.errors}")
    return f" ({', '.join(parts)})" if parts else ""


def print_completeness(runs: list[Run], requests: int) -> bool:
    """Warn about every run that fell short; True when each request answered 200 and each
    one reached the upstream."""
    short = [run for run in runs if run.upstream_calls != requests or run.result.non_200]
    for run in short:
        print(
            f"WARNING: {run.target} round {run.label}: {run.result.non_200} non-200"
            f"{_breakdown(run.result)}, upstream answered {run.upstream_calls} of {requests} "
            "tools/call"
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
def running_gateway(
    workdir: Path,
    workers: int,
    cache: str = "database",
    settings: Mapping[str, str] | None = None,
    checkout: Path = REPO,
    pythonpath: tuple[Path, ...] = (),
) -> Iterator[Gateway]:
    """The gateway of `checkout` (this one by default) under gunicorn, stopped on the way out."""
    conf = checkout / "gunicorn.conf.py"
    gateway = Gateway(workdir, workers, cache, dict(settings or {}), conf, pythonpath)
    try:
        gateway.start()
        yield gateway
    except BenchError:
        if log := gateway.log():
            print(f"gateway log (tail):\n{log}", file=sys.stderr)
        raise
    finally:
        gateway.stop()


def _interrupted(signum: int, frame: object) -> NoReturn:
    # SIGTERM unwinds like Ctrl-C, so the finally blocks still stop the servers. SIGINT gets
    # the same handler because a shell starts background jobs with SIGINT ignored, and a
    # benchmark that cannot be interrupted would keep its servers running.
    raise KeyboardInterrupt


def run_benchmark(prog: str, body: Callable[[Path], bool], needs_hey: bool = True) -> int:
    """Run `body` in a temporary directory removed afterwards; return the exit status:
    0 when it reports success, 1 when a run fell short, 2 when the set-up failed, 130 when
    interrupted."""
    if needs_hey and shutil.which("hey") is None:
        print(f"{prog}: hey is not on PATH (apt-get install hey)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix=f"{prog.replace('_', '-')}-"))
    try:
        return 0 if body(workdir) else 1
    except BenchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- Redis and CPU helpers shared by the benchmarks ---

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers(url: str) -> bool:
    """A PING on a raw socket: enough to tell a listening Redis from nothing at all, without
    making the benchmark depend on a client library."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as s:
            s.sendall(b"PING\r\n")
            # A password-protected server answers -NOAUTH, which still proves it is Redis;
            # the gateway then authenticates with what the URL carries.
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def forget_keys(url: str, prefix: str) -> None:
    """Delete the keys this run left (sessions live an hour otherwise)."""
    import redis  # the gateway's own dependency for CACHE_TYPE=redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    except redis.RedisError as exc:
        print(f"bench: could not delete keys {prefix}:* ({exc})", file=sys.stderr)
    finally:
        client.close()


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        # The command name in parentheses may hold spaces; the counters follow its ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuPerCall:
    """Milliseconds of CPU per call in one run, taken from /proc around it."""

    gateway_ms: float
    upstream_ms: float


NOT_READ = CpuPerCall(float("nan"), float("nan"))


@dataclass(frozen=True)
class Watched:
    """One hey run and what it caused behind the target."""

    result: HeyResult
    upstream_calls: int
    """The tools/call the upstream answered meanwhile."""
    cpu: CpuPerCall
    """Per call: the `workers`' CPU and the upstream's (NOT_READ when not asked for)."""


def watched_hey(
    target: Target,
    requests: int,
    concurrency: int,
    upstream: RunningUpstream,
    workers: list[int] | None = None,
) -> Watched:
    """`hey` against `target`, reading around it the upstream's tools/call counter and, given
    `workers`, their CPU time and the upstream's from /proc (not read otherwise, so a
    benchmark that reports no CPU runs where /proc does not exist)."""
    calls = upstream_calls(upstream)
    pids = None if workers is None else (workers, [upstream.process.pid])
    before = None if pids is None else [cpu_seconds(p) for p in pids]
    result = hey(target, requests, concurrency)
    after = None if pids is None else [cpu_seconds(p) for p in pids]
    calls = upstream_calls(upstream) - calls
    if before is None or after is None:
        return Watched(result, calls, NOT_READ)
    per_call = 1000 / requests
    cpu = CpuPerCall((after[0] - before[0]) * per_call, (after[1] - before[1]) * per_call)
    return Watched(result, calls, cpu)


# --- interleaved rounds --------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    target: str
    round: int
    result: HeyResult
    upstream_calls: int
    proxy_cpu_ms: float
    """CPU per call of the workers in front of the upstream (a relay's or a gateway's; 0 for
    direct)."""
    upstream_cpu_ms: float


def warm_up(targets: tuple[Target, ...], requests: int, concurrency: int) -> None:
    warmup = max(concurrency, requests // 10)
    for target in targets:
        hey(target, warmup, concurrency)
    print(f"warm-up:  {warmup} requests each\n")


def measure_rounds(
    targets: tuple[Target, ...],
    workers: Mapping[str, list[int]],
    upstream: RunningUpstream,
    requests: int,
    concurrency: int,
    rounds: int,
) -> list[Measured]:
    """`requests` calls to each target per round, the targets taking turns so that a drift
    of the machine meets them all; each run with the upstream calls it made and the CPU per
    call of the target's `workers` and of the upstream."""
    runs: list[Measured] = []
    for round_number in range(1, rounds + 1):
        for target in targets:
            run = watched_hey(target, requests, concurrency, upstream, workers[target.name])
            runs.append(
                Measured(
                    target.name,
                    round_number,
                    run.result,
                    run.upstream_calls,
                    run.cpu.gateway_ms,
                    run.cpu.upstream_ms,
                )
            )
    return runs


@dataclass(frozen=True)
class EchoPair:
    """The test upstream and one gateway serving its echo, ready to be compared."""

    upstream: RunningUpstream
    gateway: Gateway
    user: dict[str, str]
    """The bearer header of the gateway's user."""
    payloads: EchoPayloads
    direct: Target
    """The upstream's /mcp itself, on a session of its own."""

    @property
    def gateway_pids(self) -> str:
        return " ".join(map(str, self.gateway.worker_pids())) or "unknown"


@contextmanager
def echo_pair(
    workdir: Path,
    workers: int,
    client: str,
    cache: str = "database",
    settings: Mapping[str, str] | None = None,
) -> Iterator[EchoPair]:
    """The test upstream and a gateway of `workers` serving its echo, with hey's payloads and
    the direct target (its session opened as `client`); says which upstream it is."""
    with (
        running_upstream() as upstream,
        running_gateway(workdir, workers, cache, settings) as gateway,
    ):
        user = gateway.bearer("bench")
        serve_echo(gateway, upstream, user)
        payloads = echo_payloads(workdir, "hello")
        direct = direct_target(upstream, payloads.direct, client)
        print(
            f"upstream: {upstream.url} (our test MCP server: a single process, pid "
            f"{upstream.process.pid}; the comparison is relative)"
        )
        yield EchoPair(upstream, gateway, user, payloads, direct)


def direct_against_gateway(
    direct: Target,
    through: Target,
    upstream: RunningUpstream,
    options: argparse.Namespace,
    rounds: int,
    where: str,
    workers: list[int] | None = None,
) -> tuple[list[Run], list[CpuPerCall]]:
    """The upstream's echo checked on both targets (through the gateway at `where`), a
    warm-up, then `rounds` interleaved rounds of `options.requests` calls each: the runs,
    and their CPU per call, read only given the gateway's `workers`."""
    check_echo(direct, TOOL)
    check_echo(through, GATEWAY_TOOL)
    print(f"sample check: echo returns its text, directly and through {where}")
    warm_up((direct, through), options.requests, options.concurrency)
    runs: list[Run] = []
    cpu: list[CpuPerCall] = []
    for round_number in range(1, rounds + 1):
        for target in (direct, through):
            run = watched_hey(target, options.requests, options.concurrency, upstream, workers)
            runs.append(Run(target.name, str(round_number), run.result, run.upstream_calls))
            cpu.append(run.cpu)
    return runs, cpu


# --- comparing echo targets ----------------------------------------------------------------
# What the benchmarks that pit the upstream called directly against one or more gateways (or
# a relay) share: their options, the event-loop check, the payloads, the rounds, the table.


def number_option(parser: argparse.ArgumentParser, flag: str, default: float, what: str) -> None:
    """An option taking one number of `default`'s type, its default shown after `what`."""
    parser.add_argument(
        flag, type=type(default), default=default, help=f"{what} (default {default:g})"
    )


def redis_url_option(parser: argparse.ArgumentParser, when: str = "") -> None:
    """--redis-url, by default $REDIS_URL or else a local Redis; `when` says when it counts."""
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help=f"{when}(default $REDIS_URL, else {DEFAULT_REDIS_URL})",
    )


def comparison_parser(
    description: str,
    concurrency: int = 200,
    workers_help: str = "workers per gateway",
    requests: int = 10_000,
    rounds: str | None = "interleaved rounds",
) -> argparse.ArgumentParser:
    """--requests, --concurrency, --rounds (unless `rounds` is None; else its help) and
    --workers; the caller adds its own."""
    parser = argparse.ArgumentParser(description=description)
    number_option(parser, "--requests", requests, "per run")
    number_option(parser, "--concurrency", concurrency, "hey -c")
    if rounds is not None:
        number_option(parser, "--rounds", 3, rounds)
    number_option(parser, "--workers", 2, workers_help)
    return parser


def comparison_options(
    parser: argparse.ArgumentParser, argv: list[str] | None, *positive: str
) -> argparse.Namespace:
    """The parsed options, refused unless the counts (and the `positive` ones) are >= 1 and
    there are at least as many requests as concurrent ones (hey refuses fewer)."""
    options = parser.parse_args(argv)
    rounds = ("rounds",) if hasattr(options, "rounds") else ()
    counts = ("concurrency", "workers", *rounds, *positive)
    if min(getattr(options, name) for name in counts) < 1:
        names = [f"--{name.replace('_', '-')}" for name in counts]
        parser.error(f"{', '.join(names[:-1])} and {names[-1]} must be at least 1")
    if options.requests < options.concurrency:
        parser.error("--requests must be at least --concurrency (hey refuses fewer)")
    return options


def worker_loops(url: str, workers: int) -> dict[int, str]:
    """Each worker's event loop, asking on fresh connections until `workers` pids answered:
    gunicorn answers as soon as its first worker is up, and the others follow."""
    loops: dict[int, str] = {}

    def all_answered() -> bool:
        body = http("GET", url).json()
        loops[int(body["worker"])] = str(body["event_loop"])
        return len(loops) >= workers

    wait_until(all_answered, 30, f"{workers} workers to answer {url}")
    return loops


def one_loop(what: str, loops: dict[int, str]) -> str:
    kinds = set(loops.values())
    if len(kinds) != 1:
        raise BenchError(f"{what} workers run on different loops: {loops}")
    return kinds.pop()


def gateways_loop(gateways: Mapping[str, Gateway], workers: int) -> str:
    """The event loop that every worker of every gateway runs on; a comparison of gateways
    on different loops would measure the loops."""
    loops = {
        name: one_loop(name, worker_loops(f"{gateway.url}/version", workers))
        for name, gateway in gateways.items()
    }
    if len(set(loops.values())) != 1:
        raise BenchError(f"the gateways run on different event loops: {loops}")
    return next(iter(loops.values()))


class EchoPayloads(NamedTuple):
    """hey's request bodies: the tools/call of echo as the upstream names the tool, and as a
    gateway does."""

    direct: Path
    gateway: Path


def echo_payloads(workdir: Path, text: str) -> EchoPayloads:
    payloads = EchoPayloads(workdir / "direct.json", workdir / "gateway.json")
    payloads.direct.write_bytes(orjson.dumps(tools_call(TOOL, text)))
    payloads.gateway.write_bytes(orjson.dumps(tools_call(GATEWAY_TOOL, text)))
    return payloads


def direct_target(upstream: RunningUpstream, payload: Path, client: str) -> Target:
    """The upstream's /mcp itself, on an MCP session of its own."""
    session = open_session(upstream.url, client=client)
    return Target("direct", upstream.url, session.headers, payload)


def tool_of(target: Target) -> str:
    """`direct` is the upstream itself; every other target is a gateway."""
    return TOOL if target.name == "direct" else GATEWAY_TOOL


class HasWorkers(Protocol):
    def worker_pids(self) -> list[int]: ...


def worker_pids(servers: Mapping[str, HasWorkers], workers: int) -> dict[str, list[int]]:
    """Each target's worker pids, none for `direct` (its upstream is counted apart)."""
    pids: dict[str, list[int]] = {"direct": []}
    pids.update((name, server.worker_pids()) for name, server in servers.items())
    if any(len(pids[name]) != workers for name in servers):
        raise BenchError(f"cannot read every worker's CPU time: worker pids {pids}")
    return pids


def echo_rounds(
    targets: tuple[Target, ...],
    workers: Mapping[str, list[int]],
    upstream: RunningUpstream,
    options: argparse.Namespace,
    text: str,
    tool: Callable[[Target], str] = tool_of,
) -> tuple[list[Measured], dict[str, int]]:
    """A full echo checked on every target, a warm-up, then the interleaved rounds, then the
    full echo checked again: the runs, and each target's size of a correct echo.

    That size is the body of a correct echo of `text` with the payload's id: a run whose
    every request answered 200 with bodies totalling N times it answered N correct echoes,
    as neither an error nor another text has this size."""
    for target in targets:
        check_echo(target, tool(target))
    sizes = {
        target.name: len(
            http("POST", target.url, tools_call(tool(target), text), target.headers).body
        )
        for target in targets
    }
    print(f"sample check: echo returns its text from {', '.join(t.name for t in targets)}")
    warm_up(targets, options.requests, options.concurrency)
    runs = measure_rounds(
        targets, workers, upstream, options.requests, options.concurrency, options.rounds
    )
    for target in targets:
        check_echo(target, tool(target))
    return runs, sizes


def compare_echo(
    options: argparse.Namespace,
    workdir: Path,
    upstream: RunningUpstream,
    servers: Mapping[str, HasWorkers],
    text: str,
    client: str,
    target_of: Callable[[str, EchoPayloads], Target],
    describe: Callable[[tuple[Target, ...], dict[str, list[int]]], None],
    tool: Callable[[Target], str] = tool_of,
) -> tuple[list[Measured], dict[str, int]]:
    """The upstream called directly (a session opened as `client`) against each of `servers`
    (`target_of` its name and the payloads), in `echo_rounds`. `describe` prints the set-up
    first, given the targets and each one's worker pids."""
    payloads = echo_payloads(workdir, text)
    targets = (
        direct_target(upstream, payloads.direct, client),
        *(target_of(name, payloads) for name in servers),
    )
    workers = worker_pids(servers, options.workers)
    describe(targets, workers)
    return echo_rounds(targets, workers, upstream, options, text, tool)


_TABLE_ROW = "{:<8} {:>6} {:>11} {:>8} {:>8} {:>8} {:>13} {:>12}"
_TABLE_HEAD = (
    "target",
    "round",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "non-200",
    "proxy CPU ms",
    "upstream CPU",
)


def _table_row(
    target: str, label: str, rps: float, p50: float, p99: float, bad: int, proxy: float, up: float
) -> str:
    proxy_text = "-" if target == "direct" else f"{proxy:.3f}"
    return _TABLE_ROW.format(
        target, label, f"{rps:.1f}", f"{p50:.2f}", f"{p99:.2f}", bad, proxy_text, f"{up:.3f}"
    )


@dataclass(frozen=True)
class Medians:
    rps: float
    p50: float
    p99: float
    proxy_cpu_ms: float
    upstream_cpu_ms: float


def print_table(runs: list[Measured], targets: tuple[str, ...]) -> dict[str, Medians]:
    """One row per run and the medians per target, with CPU per call; return the medians."""
    print(_TABLE_ROW.format(*_TABLE_HEAD))
    for m in runs:
        r = m.result
        print(
            _table_row(
                m.target,
                str(m.round),
                r.requests_per_second,
                r.p50_ms,
                r.p99_ms,
                r.non_200,
                m.proxy_cpu_ms,
                m.upstream_cpu_ms,
            )
        )
    medians: dict[str, Medians] = {}
    for target in targets:
        mine = [m for m in runs if m.target == target]
        medians[target] = x = Medians(
            statistics.median(m.result.requests_per_second for m in mine),
            statistics.median(m.result.p50_ms for m in mine),
            statistics.median(m.result.p99_ms for m in mine),
            statistics.median(m.proxy_cpu_ms for m in mine),
            statistics.median(m.upstream_cpu_ms for m in mine),
        )
        bad = sum(m.result.non_200 for m in mine)
        print(
            _table_row(
                target, "median", x.rps, x.p50, x.p99, bad, x.proxy_cpu_ms, x.upstream_cpu_ms
            )
        )
    return medians


def completeness(runs: list[Measured], sizes: dict[str, int], requests: int) -> bool:
    """Warn about every run that fell short; True when each request answered 200 with a
    body the size of a correct echo and each one reached the upstream."""
    short = [
        m
        for m in runs
        if m.result.non_200
        or m.upstream_calls != requests
        or m.result.total_bytes != requests * sizes[m.target]
    ]
    for m in short:
        r = m.result
        print(
            f"WARNING: {m.target} round {m.round}: {r.non_200} non-200 {r.statuses}, "
            f"{r.errors} without answer; {r.total_bytes} body bytes, a correct run has "
            f"{requests * sizes[m.target]}; upstream answered {m.upstream_calls} of {requests}"
        )
    if not short:
        print(
            f"every run: {requests} x HTTP 200 with bodies the size of a correct echo, and "
            f"the upstream answered {requests} tools/call"
        )
    return not short
