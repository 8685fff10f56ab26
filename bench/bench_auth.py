"""What the `oauth` authenticator costs per request against the `jwt` one, in one run: the
same gateway build, the same upstream, the same `tools/call`, only `AUTH_TYPE` differs.

Run by hand from a checkout with the gateway installed (editable), node and npm on PATH:

    python bench/bench_auth.py [--requests N] [--concurrency C] [--rounds R] [--workers W]
                               [--verifications V]

It starts on loopback our test MCP server, a real authorization server (the npm
`oidc-provider`, as the tests run it; installed into the pytest cache when missing) and two
gateways of the working tree under gunicorn (W workers each, the database cache): one with
`AUTH_TYPE=jwt`, one with `AUTH_TYPE=oauth` trusting the authorization server. The oauth
gateway's token comes from the authorization server (client credentials, RS256). The same
`tools/call` of `echo` goes to each with `hey -n N -c C`, interleaved round by round, and
CPU per call is read from /proc around each run. A client reuses its token, so this is the
cost of a request whose token a worker has seen; the cost of checking a token never seen
before (its signature) is measured apart, in this process, V times per algorithm.

The exit status is 0 when every run was complete, 1 when a run fell short, 2 when the set-up
failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import jwt
from common import (
    REPO,
    TOOL,
    BenchError,
    Gateway,
    Measured,
    Target,
    compare_echo,
    comparison_options,
    comparison_parser,
    completeness,
    gateways_loop,
    print_table,
    run_benchmark,
    running_gateway,
    running_upstream,
    serve_echo,
)

# Importable because common (imported first) puts the repository on the path.
from tests.support.oidc import OIDC_PROVIDER, AuthorizationServer, SigningKey
from tests.upstreams.processes import RunningUpstream

from gateway_plugins.oauth.tokens import decode

TEXT = "a short sentence for the echo tool, the same for every request of every target"
AUDIENCE = "urn:aio-mcp-gateway:bench"
OIDC_CACHE = REPO / ".pytest_cache" / "d" / "npm-oidc-provider"


def oidc_provider_modules() -> Path:
    """oidc-provider where the tests install it, installed there when missing."""
    modules = OIDC_CACHE / "node_modules"
    if (modules / "oidc-provider" / "package.json").exists():
        return modules
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BenchError("node and npm must be on PATH to run the authorization server")
    OIDC_CACHE.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(OIDC_CACHE)]
    done = subprocess.run([*command, OIDC_PROVIDER], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"npm install of {OIDC_PROVIDER} failed: {done.stderr[-500:]}")
    return modules


@contextmanager
def running_authorization_server(workdir: Path) -> Iterator[AuthorizationServer]:
    modules = oidc_provider_modules()
    server = AuthorizationServer(modules, workdir, access_token_ttl=3600)
    try:
        server.start()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    try:
        yield server
    finally:
        server.stop()


def per_verification_us(check: Callable[[str], Any], tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        check(token)
    return (time.perf_counter() - started) / len(tokens) * 1e6


def signature_costs(count: int) -> dict[str, float]:
    """Microseconds to check one token never seen before: HS256 with a shared secret (the
    `jwt` authenticator's), and each asymmetric algorithm the `oauth` one takes."""
    now = int(time.time())
    claims = {"iss": "https://issuer.example", "sub": "s", "aud": AUDIENCE, "exp": now + 600}
    secret = "bench-secret-with-enough-entropy-0123456789abcdef"
    hs = [jwt.encode({**claims, "jti": str(i)}, secret, algorithm="HS256") for i in range(count)]
    costs = {
        "HS256 (jwt)": per_verification_us(
            lambda t: jwt.decode(t, secret, algorithms=["HS256"], audience=AUDIENCE), hs
        )
    }
    for alg in ("RS256", "ES256", "EdDSA"):
        key = SigningKey.new(alg)
        public = jwt.PyJWK(key.public_jwk())
        signed = [
            jwt.encode({**claims, "jti": str(i)}, key.private, alg, {"kid": key.kid})
            for i in range(count)
        ]
        costs[f"{alg} (oauth)"] = per_verification_us(
            lambda t, public=public, alg=alg: decode(t, public, alg, claims["iss"], 0), signed
        )
    return costs


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    with ExitStack() as stack:
        upstream = stack.enter_context(running_upstream())
        issuer = stack.enter_context(running_authorization_server(workdir))
        (workdir / "jwt").mkdir()
        (workdir / "oauth").mkdir()
        gateways = {
            "jwt": stack.enter_context(running_gateway(workdir / "jwt", options.workers)),
            "oauth": stack.enter_context(
                running_gateway(
                    workdir / "oauth",
                    options.workers,
                    settings={
                        "AUTH_TYPE": "oauth",
                        "OAUTH_ISSUER": issuer.issuer,
                        "OAUTH_AUDIENCE": AUDIENCE,
                        "OAUTH_REQUIRED_SCOPES": "mcp",
                    },
                )
            ),
        }
        admin, user = asyncio.run(tokens_of(issuer))
        bearers = {
            "jwt": gateways["jwt"].bearer("bench"),
            "oauth": {"Authorization": f"Bearer {user}"},
        }
        admins = {"oauth": {"Authorization": f"Bearer {admin}"}}
        for name, gateway in gateways.items():
            serve_echo(gateway, upstream, bearers[name], admins.get(name))
        return measure(options, workdir, upstream, gateways, bearers)


async def tokens_of(issuer: AuthorizationServer) -> tuple[str, str]:
    admin = await issuer.client_credentials(AUDIENCE, ["mcp", "admin"])
    return admin, await issuer.client_credentials(AUDIENCE, ["mcp"])


def measure(
    options: argparse.Namespace,
    workdir: Path,
    upstream: RunningUpstream,
    gateways: dict[str, Gateway],
    bearers: dict[str, dict[str, str]],
) -> bool:
    loop = gateways_loop(gateways, options.workers)

    def describe(targets: tuple[Target, ...], workers: dict[str, list[int]]) -> None:
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, tools/call "
            f"{TOOL} through /rpc, {options.workers} workers per gateway, loop "
            f"{loop}, {options.rounds} interleaved rounds"
        )

    runs, sizes = compare_echo(
        options,
        workdir,
        upstream,
        gateways,
        TEXT,
        "bench-auth",
        lambda name, payloads: Target(
            name, f"{gateways[name].url}/rpc", bearers[name], payloads.gateway
        ),
        describe,
    )
    return report(runs, sizes, options)


def report(runs: list[Measured], sizes: dict[str, int], options: argparse.Namespace) -> bool:
    medians = print_table(runs, ("direct", "jwt", "oauth"))
    jwt_m, oauth_m = medians["jwt"], medians["oauth"]
    print()
    print(f"oauth/jwt requests/s:   {oauth_m.rps / jwt_m.rps:.3f}")
    print(f"oauth/jwt p99:          {oauth_m.p99 / jwt_m.p99:.3f}")
    print(
        f"CPU per call (median, workers summed): jwt {jwt_m.proxy_cpu_ms:.3f} ms, "
        f"oauth {oauth_m.proxy_cpu_ms:.3f} ms (oauth/jwt "
        f"{oauth_m.proxy_cpu_ms / jwt_m.proxy_cpu_ms:.3f})"
    )
    costs = signature_costs(options.verifications)
    print(f"\nchecking a token never seen before ({options.verifications} each, one process):")
    for name, micros in costs.items():
        print(f"  {name:<14} {micros:8.1f} us")
    base = costs["HS256 (jwt)"]
    print(
        "  against HS256: "
        + ", ".join(
            f"{name.split()[0]} {micros / base:.1f}x"
            for name, micros in costs.items()
            if micros != base
        )
    )
    return completeness(runs, sizes, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = comparison_parser(__doc__.splitlines()[0], concurrency=100)
    parser.add_argument(
        "--verifications", type=int, default=2000, help="tokens per algorithm (default 2000)"
    )
    return comparison_options(parser, argv, "verifications")


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_auth", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
