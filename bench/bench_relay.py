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
    EchoPayloads,
    Gateway,
    McpSession,
    Measured,
    Target,
    children,
    compare_echo,
    comparison_options,
    comparison_parser,
    completeness,
    one_loop,
    open_session,
    print_table,
    run_benchmark,
    running_gateway,
    running_upstream,
    serve_echo,
    status_of,
    stop_master,
    wait_until,
    worker_loops,
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


def target_tool(target: Target) -> str:
    return GATEWAY_TOOL if target.name == "gateway" else TOOL


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
        serve_echo(gateway, upstream)
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

    def target_of(name: str, payloads: EchoPayloads) -> Target:
        if name == "relay":
            # The relay adds the upstream session's headers itself, as a gateway would.
            return Target(name, f"{relay.url}/", {}, payloads.direct)
        return Target(name, f"{gateway.url}/rpc", gateway.bearer("bench"), payloads.gateway)

    def describe_all(_targets: tuple[Target, ...], _workers: dict[str, list[int]]) -> None:
        describe(gateway, relay, upstream.process.pid, loop)
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, tools/call "
            f"{TOOL} ({GATEWAY_TOOL} through the gateway), {options.rounds} interleaved rounds"
        )

    runs, sizes = compare_echo(
        options,
        workdir,
        upstream,
        {"relay": relay, "gateway": gateway},
        TEXT,
        "bench-relay-direct",
        target_of,
        describe_all,
        target_tool,
    )
    return report(runs, sizes, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = comparison_parser(__doc__.splitlines()[0], workers_help="relay and gateway workers")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        help="the gateway's EVENT_LOOP (default: its own default); the relay follows it",
    )
    return comparison_options(parser, argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_relay", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
