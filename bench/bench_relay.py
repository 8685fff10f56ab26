"""The gateway against a bare aiohttp relay: requests/s, p99 and CPU per tools/call.

Run by hand from a checkout with the gateway installed:

    python bench/bench_relay.py [--requests N] [--concurrency C] [--rounds R] [--workers W]
                                [--event-loop auto|uvloop|asyncio]

One run starts, on loopback: our test MCP server (one aiohttp process); a bare relay
(`relay_app.py` under gunicorn, W workers, forwarding each body unchanged to the upstream's
/mcp over one keep-alive client session per worker, no auth, no parsing); and the gateway
(`gunicorn -c gunicorn.conf.py`, W workers, JWT auth, SQLite, the database cache). The relay
runs on the gateway's event loop. The same `tools/call` of `echo` goes to all three with
`hey -n N -c C`, interleaved round by round: direct, relay, gateway. The relay is the floor
cost of any gateway on this stack; the issue's targets are the gateway's requests/s at least
1.1 times the relay's and its p99 at most 1.2 times the relay's.

Around each run it reads the CPU time of the relay's and the gateway's workers and of the
upstream from /proc, and the upstream's tools/call counter. A run is complete when every
request answered 200 with a body of the size of a correct echo (checked in full on samples)
and the upstream answered every call.

The exit status is 0 when every run was complete, 1 when a run fell short, 2 when the set-up
failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from common import (
    GATEWAY_TOOL,
    GRACEFUL_TIMEOUT,
    HOST,
    TOOL,
    BenchError,
    Gateway,
    McpSession,
    Measured,
    Target,
    check_echo,
    children,
    http,
    measure_rounds,
    open_session,
    register,
    run_benchmark,
    running_gateway,
    running_upstream,
    status_of,
    stop_master,
    tools_call,
    wait_until,
    wait_until_callable,
    warm_up,
)
from relay_app import POOL_LIMIT, POOL_LIMIT_PER_HOST

# Importable because common (imported first) puts the repository on the path.
from tests.upstreams.processes import RunningUpstream, free_port

HERE = Path(__file__).resolve().parent
TEXT = "hello"
WORKER_CLASSES = {
    "uvloop": "aiohttp.GunicornUVLoopWebWorker",
    "asyncio": "aiohttp.GunicornWebWorker",
}
RPS_TARGET = 1.1
P99_TARGET = 1.2


@dataclass
class Relay:
    """`relay_app.py` under gunicorn, in front of one upstream MCP session."""

    workdir: Path
    workers: int
    event_loop: str
    session: McpSession
    upstream_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "gunicorn", "relay_app:create_app"]
        command += ["--chdir", str(HERE), "--bind", f"{HOST}:{self.port}"]
        command += ["--workers", str(self.workers)]
        command += ["--worker-class", WORKER_CLASSES[self.event_loop]]
        # As the gateway runs in the benchmark: keep-alive 5 s, no worker recycling, no
        # access log (gunicorn's default), no control socket.
        command += ["--keep-alive", "5", "--graceful-timeout", str(GRACEFUL_TIMEOUT)]
        command += ["--no-control-socket", "--log-level", "warning"]
        environment = {
            **os.environ,
            "RELAY_UPSTREAM": self.upstream_url,
            "RELAY_HEADERS": orjson.dumps(self.session.headers).decode(),
        }
        with (self.workdir / "relay.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=self.workdir, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        self.process = process
        wait_until(
            lambda: process.poll() is not None or status_of(f"{self.url}/loop") == 200,
            timeout,
            "the relay to answer /loop",
        )
        if process.poll() is not None:
            log_tail = (self.workdir / "relay.log").read_text(errors="replace")[-3000:]
            raise BenchError(f"the relay exited with {process.returncode}:\n{log_tail}")

    def worker_pids(self) -> list[int]:
        return [] if self.process is None else children(self.process.pid)

    def stop(self) -> None:
        stop_master(self.process)


@contextmanager
def running_relay(relay: Relay) -> Iterator[Relay]:
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()


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


def correct_size(target: Target) -> int:
    """The body size of a correct echo of TEXT with the payload's id: a run whose every
    request answered 200 with bodies totalling N times this answered N correct echoes, as
    neither an error nor another text has this size."""
    reply = http("POST", target.url, tools_call(target_tool(target), TEXT), target.headers)
    return len(reply.body)


def target_tool(target: Target) -> str:
    return GATEWAY_TOOL if target.name == "gateway" else TOOL


_ROW = "{:<8} {:>6} {:>11} {:>8} {:>8} {:>8} {:>13} {:>12}"
_HEAD = (
    "target",
    "round",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "non-200",
    "proxy CPU ms",
    "upstream CPU",
)


def _row(
    target: str, label: str, rps: float, p50: float, p99: float, bad: int, proxy: float, up: float
) -> str:
    proxy_text = "-" if target == "direct" else f"{proxy:.3f}"
    return _ROW.format(
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
    print(_ROW.format(*_HEAD))
    for m in runs:
        r = m.result
        print(
            _row(
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
        medians[target] = Medians(
            statistics.median(m.result.requests_per_second for m in mine),
            statistics.median(m.result.p50_ms for m in mine),
            statistics.median(m.result.p99_ms for m in mine),
            statistics.median(m.proxy_cpu_ms for m in mine),
            statistics.median(m.upstream_cpu_ms for m in mine),
        )
        x = medians[target]
        bad = sum(m.result.non_200 for m in mine)
        print(_row(target, "median", x.rps, x.p50, x.p99, bad, x.proxy_cpu_ms, x.upstream_cpu_ms))
    return medians


def report(runs: list[Measured], sizes: dict[str, int], requests: int) -> bool:
    """Print the table, the ratios and the verdicts; True when every run was complete."""
    medians = print_table(runs, ("direct", "relay", "gateway"))
    direct, relay, gateway = medians["direct"], medians["relay"], medians["gateway"]
    rps_ratio = gateway.rps / relay.rps
    p99_ratio = gateway.p99 / relay.p99
    cpu_ratio = gateway.proxy_cpu_ms / relay.proxy_cpu_ms
    print()
    print(f"relay/direct requests/s:   {relay.rps / direct.rps:.3f}")
    print(f"gateway/direct requests/s: {gateway.rps / direct.rps:.3f}")
    print(
        f"gateway/relay requests/s:  {rps_ratio:.3f}  (target >= {RPS_TARGET}: "
        f"{'met' if rps_ratio >= RPS_TARGET else 'NOT met'})"
    )
    print(
        f"gateway/relay p99:         {p99_ratio:.3f}  (target <= {P99_TARGET}: "
        f"{'met' if p99_ratio <= P99_TARGET else 'NOT met'})"
    )
    print(
        f"CPU per call (median, workers summed): relay {relay.proxy_cpu_ms:.3f} ms, "
        f"gateway {gateway.proxy_cpu_ms:.3f} ms (gateway/relay {cpu_ratio:.2f})"
    )
    return completeness(runs, sizes, requests)


def completeness(runs: list[Measured], sizes: dict[str, int], requests: int) -> bool:
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


def describe(gateway: Gateway, relay: Relay, upstream_pid: int, loop: str) -> None:
    gateway_pids = " ".join(map(str, gateway.worker_pids()))
    relay_pids = " ".join(map(str, relay.worker_pids()))
    print(f"upstream: our test MCP server, one process (pid {upstream_pid}), asyncio loop")
    print(
        f"relay:    {relay.url}/ ({relay.workers} gunicorn workers, pids {relay_pids}, "
        f"{WORKER_CLASSES[relay.event_loop]}, loop {loop}; pool {relay_pool()})"
    )
    print(
        f"gateway:  {gateway.url}/rpc ({gateway.workers} gunicorn workers, pids {gateway_pids}, "
        f"JWT, loop {loop})"
    )


def relay_pool() -> str:
    return f"{POOL_LIMIT} connections, {POOL_LIMIT_PER_HOST} per host, keep-alive"


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    settings = {} if options.event_loop is None else {"EVENT_LOOP": options.event_loop}
    with (
        running_upstream() as upstream,
        running_gateway(workdir, options.workers, settings=settings) as gateway,
    ):
        register(gateway, upstream)
        user = gateway.bearer("bench")
        wait_until_callable(gateway, user, timeout=30)
        loop = one_loop("gateway", worker_loops(f"{gateway.url}/version", options.workers))
        relay_session = open_session(upstream.url, client="bench-relay")
        relay = Relay(workdir, options.workers, loop, relay_session, upstream.url)
        with running_relay(relay):
            relay_loop = one_loop("relay", worker_loops(f"{relay.url}/loop", options.workers))
            if relay_loop != loop:
                raise BenchError(f"the relay runs on {relay_loop}, the gateway on {loop}")
            return measure(options, workdir, upstream, gateway, relay, loop)


def measure(
    options: argparse.Namespace,
    workdir: Path,
    upstream: RunningUpstream,
    gateway: Gateway,
    relay: Relay,
    loop: str,
) -> bool:
    direct_session = open_session(upstream.url, client="bench-relay-direct")
    direct_payload = workdir / "direct.json"
    gateway_payload = workdir / "gateway.json"
    direct_payload.write_bytes(orjson.dumps(tools_call(TOOL, TEXT)))
    gateway_payload.write_bytes(orjson.dumps(tools_call(GATEWAY_TOOL, TEXT)))
    targets = (
        Target("direct", upstream.url, direct_session.headers, direct_payload),
        # The relay adds the upstream session's headers itself, as a gateway would.
        Target("relay", f"{relay.url}/", {}, direct_payload),
        Target("gateway", f"{gateway.url}/rpc", gateway.bearer("bench"), gateway_payload),
    )
    describe(gateway, relay, upstream.process.pid, loop)
    print(
        f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, tools/call "
        f"{TOOL} ({GATEWAY_TOOL} through the gateway), {options.rounds} interleaved rounds"
    )
    for target in targets:
        check_echo(target, target_tool(target))
    sizes = {target.name: correct_size(target) for target in targets}
    print("sample check: echo returns its text directly, through the relay and the gateway")

    warm_up(targets, options.requests, options.concurrency)

    workers: dict[str, list[int]] = {
        "direct": [],
        "relay": relay.worker_pids(),
        "gateway": gateway.worker_pids(),
    }
    if any(len(pids) != options.workers for pids in list(workers.values())[1:]):
        raise BenchError(f"cannot read every worker's CPU time: worker pids {workers}")
    runs = measure_rounds(
        targets, workers, upstream, options.requests, options.concurrency, options.rounds
    )
    for target in targets:
        check_echo(target, target_tool(target))
    return report(runs, sizes, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per run (default 10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="hey -c (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="relay and gateway workers (2)")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        help="the gateway's EVENT_LOOP (default: its own default); the relay follows it",
    )
    options = parser.parse_args(argv)
    if min(options.concurrency, options.workers, options.rounds) < 1:
        parser.error("--concurrency, --workers and --rounds must be at least 1")
    if options.requests < options.concurrency:
        parser.error("--requests must be at least --concurrency (hey refuses fewer)")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_relay", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
