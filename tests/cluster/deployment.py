"""Several gunicorn gateways run as one deployment, and the client side of talking to them.

Every request goes out on a fresh connection, so the kernel may hand it to any worker of
the instance: that is how a test reaches all of them without knowing which answered.
The `/proc` helpers find a gateway's worker processes and their TCP connections, so a test
can kill a whole "machine" or cut exactly its database connections and nobody else's.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.conftest import free_port, fresh_schema
from tests.support.gunicorn_process import ADMIN, USER, GunicornGateway, gunicorn_env
from tests.support.proc import alive as alive

T = TypeVar("T")

METHOD_NOT_FOUND = -32601
RATE_LIMITED = -32029


def gateway_env(database_url: str, cache_type: str, **extra: str) -> dict[str, str]:
    """The settings every gateway of a test shares; `extra` adds or overrides."""
    defaults = {"CACHE_TYPE": cache_type, "TOOL_TIMEOUT": "5", "LOG_LEVEL": "info"}
    return gunicorn_env(database_url, **{**defaults, **extra})


def redis_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Settings for instances sharing Redis under a key prefix of their own, polling the
    store only once a minute: only the change barrier and Redis's messages can then explain
    how soon the other workers follow a change."""
    return gateway_env(
        database_url,
        "redis",
        **{
            "REDIS_URL": redis_url,
            "CACHE_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
            "CATALOGUE_POLL_INTERVAL": "60",
            **extra,
        },
    )


# --- the client side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """A tool call that succeeded end to end."""
        result = self.body.get("result")
        return self.status == 200 and isinstance(result, dict) and result.get("isError") is False

    @property
    def error_code(self) -> int | None:
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None

    @property
    def cache_outcome(self) -> str | None:
        result = self.body.get("result") or {}
        return (result.get("_meta") or {}).get("aio-mcp-gateway/cache")


async def fetch(
    method: str,
    url: str,
    payload: object = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP exchange on a connection of its own."""
    connector = aiohttp.TCPConnector(force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        data = None if payload is None else orjson.dumps(payload)
        sent = {"Content-Type": "application/json", **(headers or {})}
        async with session.request(method, url, data=data, headers=sent) as response:
            raw = await response.read()
            body = orjson.loads(raw) if raw else {}
            if not isinstance(body, dict):
                body = {"value": body}
            return Reply(response.status, body, dict(response.headers))


async def call_tool(
    base_url: str, name: str, arguments: dict[str, Any], headers: Mapping[str, str] = USER
) -> Reply:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    return await fetch("POST", f"{base_url}/rpc", message, headers)


async def register(base_url: str, upstream_url: str, name: str = "own") -> Reply:
    reply = await fetch(
        "POST",
        f"{base_url}/upstreams",
        {"name": name, "url": upstream_url, "transport": "streamable-http"},
        ADMIN,
    )
    assert reply.status == 201, reply
    return reply


async def patch_tool(base_url: str, name: str, **changes: object) -> Reply:
    reply = await fetch("PATCH", f"{base_url}/tools/{name}", changes, ADMIN)
    assert reply.status == 200, reply
    return reply


async def upstream_tool_calls(upstream_base_url: str) -> int:
    """How many `tools/call` requests the upstream has answered so far."""
    reply = await fetch("GET", f"{upstream_base_url}/admin/stats")
    return int(reply.body["tools_call"])


async def burst(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run the calls side by side; each opens its own connection."""
    return list(await asyncio.gather(*calls))


async def list_everywhere(
    deployment: Deployment, headers: Mapping[str, str], spread: int = 8
) -> list[Reply]:
    """tools/list `spread` times on each instance, side by side, each on a connection of its
    own: every worker of an instance gets some."""
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    return await burst(
        fetch("POST", f"{instance.url}/rpc", message, dict(headers))
        for instance in deployment.instances
        for _ in range(spread)
    )


async def first_success(
    attempt: Callable[[], Awaitable[bool]], since: float, give_up_after: float, every: float = 0.01
) -> float:
    """Seconds from `since` (a `time.perf_counter()`) to the first `attempt()` that holds.

    Attempts start every `every` seconds (sooner if one takes longer). Gives up with an
    assertion after `give_up_after` seconds, so a slow path is measured, not hidden.
    """
    while True:
        started = time.perf_counter()
        if await attempt():
            return time.perf_counter() - since
        if time.perf_counter() - since > give_up_after:
            raise AssertionError(f"still not true {give_up_after:g}s later")
        await asyncio.sleep(max(0.0, every - (time.perf_counter() - started)))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.05
) -> float:
    """Seconds it took for `condition()` to hold; fails naming `what` after `within`."""
    since = time.perf_counter()
    try:
        return await first_success(condition, since, within, every)
    except AssertionError:
        raise AssertionError(f"{what}: not true within {within:g}s") from None


@asynccontextmanager
async def connection_per_worker(
    urls: Iterable[str],
    workers: int,
    serving: Callable[[aiohttp.ClientSession], Awaitable[bool]],
    what: str,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[list[aiohttp.ClientSession]]:
    """A client with one keep-alive connection to each of the `workers` workers of every
    instance at `urls` (its `base_url` that instance's, `headers` sent with every request),
    each one `serving` already (waited for, naming `what`). A new connection may reach any
    worker: clients are opened until every worker, known by the pid `/version` names, has
    one."""
    opened: list[aiohttp.ClientSession] = []
    pinned: dict[int, aiohttp.ClientSession] = {}
    try:
        async with asyncio.timeout(15.0):
            for url in urls:
                found = len(pinned)
                while len(pinned) < found + workers:
                    http = aiohttp.ClientSession(
                        base_url=url,
                        connector=aiohttp.TCPConnector(limit=1),
                        headers=dict(headers or {}),
                    )
                    opened.append(http)
                    async with http.get("/version") as response:
                        pinned.setdefault(int((await response.json())["worker"]), http)
        for http in pinned.values():
            await wait_until(functools.partial(serving, http), 10.0, what)
        yield list(pinned.values())
    finally:
        for http in opened:
            await http.close()


async def inside_one_rate_window(needed: float) -> None:
    """Return when at least `needed` seconds remain of the current one-minute window.

    The gateway counts rate limits in fixed minute windows; a test that crossed a window
    boundary would see its counter restart.
    """
    left = 60.0 - time.time() % 60.0
    if left < needed:
        await asyncio.sleep(left + 0.05)


# --- the gateway processes -------------------------------------------------------------------


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces or parentheses: fields follow the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    return sorted(
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid
    )


def local_ports_towards(pids: Iterable[int], remote_port: int) -> set[int]:
    """Local ports of the IPv4 TCP connections the processes `pids` hold to `remote_port`."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    ports: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = line.split()
        local, remote, inode = columns[1], columns[2], columns[9]
        if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


class Instance(GunicornGateway):
    """One gunicorn master and its workers: one machine of the deployment."""

    @property
    def master_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.master_pid)

    def kill_machine(self) -> list[int]:
        """SIGKILL the master, then the workers it leaves behind, as a power cut would."""
        workers = self.worker_pids()
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return workers


async def worker_views(
    base_url: str, workers: int, within: float = 10.0, exclude: Iterable[int] = ()
) -> dict[int, dict[str, Any]]:
    """Each worker's `/version`, asking on fresh connections until `workers` pids answered.

    For each pid the latest answer wins. Pids in `exclude` are ignored.
    """
    ignored = set(exclude)
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        replies = await burst(fetch("GET", f"{base_url}/version", timeout=2) for _ in range(8))
        for reply in replies:
            if reply.status == 200 and reply.body["worker"] not in ignored:
                seen[reply.body["worker"]] = reply.body
        if len(seen) >= workers:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} of {workers} answered at {base_url}")


@dataclass
class Deployment:
    """Instances sharing one store and one cache; `a` and `b` are the same with one."""

    instances: list[Instance]
    workers: int

    @property
    def a(self) -> Instance:
        return self.instances[0]

    @property
    def b(self) -> Instance:
        return self.instances[-1]

    async def views(self, exclude: Iterable[int] = ()) -> dict[int, dict[str, Any]]:
        """`/version` of every worker of every instance, keyed by pid."""
        views: dict[int, dict[str, Any]] = {}
        for instance in self.instances:
            views.update(await worker_views(instance.url, self.workers, exclude=exclude))
        return views

    async def catalogue_version(self, newer_than: int = -1, within: float = 10.0) -> int:
        """Wait until every worker serves one catalogue version newer than `newer_than`."""
        versions: set[int] = set()

        async def agreed() -> bool:
            nonlocal versions
            versions = {v["catalogue"]["version"] for v in (await self.views()).values()}
            return len(versions) == 1 and min(versions) > newer_than

        try:
            await wait_until(agreed, within, "workers agree on a catalogue version")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; they serve versions {sorted(versions)}") from None
        return versions.pop()


async def start_deployment(
    env: Mapping[str, str], workdir: Path, instances: int, workers: int
) -> Deployment:
    """Start the instances side by side and return once every worker of each answers."""
    started = [Instance(dict(env), free_port(), workdir, workers=workers) for _ in range(instances)]
    deployment = Deployment(started, workers)
    outcomes: list[Any] = await asyncio.gather(
        *(asyncio.to_thread(instance.start) for instance in started), return_exceptions=True
    )
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    try:
        if failures:
            raise failures[0]
        await deployment.views()
        await warm_up(deployment)
    except BaseException:
        stop_deployment(deployment)
        raise
    return deployment


async def warm_up(deployment: Deployment) -> None:
    """Take every worker once through authentication and dispatch, so that what a test
    measures later is the gateway's work, not a worker's first request."""
    for instance in deployment.instances:
        replies = await burst(
            call_tool(instance.url, "warm-up", {}) for _ in range(4 * deployment.workers)
        )
        assert all(reply.error_code == METHOD_NOT_FOUND for reply in replies), replies[:3]


@contextmanager
def deployed(
    env: Mapping[str, str], workdir: Path, instances: int, workers: int
) -> Iterator[Deployment]:
    """A deployment started (from synchronous code, such as a module fixture) and stopped
    on the way out."""
    running = asyncio.run(start_deployment(env, workdir, instances, workers))
    try:
        yield running
    finally:
        stop_deployment(running)


@contextmanager
def two_instances(
    request: pytest.FixtureRequest,
    postgres_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    tool_timeout: float,
) -> Iterator[Deployment]:
    """Two instances of two workers sharing a PostgreSQL schema of their own and the cache
    `request.param` names (`redis`, or the `database`'s) under a prefix of their own: a
    module's deployment, for a fixture parametrised over the caches."""
    cache = str(request.param)
    extra = {"CACHE_PREFIX": f"test-{uuid.uuid4().hex[:10]}", "TOOL_TIMEOUT": str(tool_timeout)}
    if cache == "redis":
        extra["REDIS_URL"] = str(request.getfixturevalue("redis_base_url"))
    workdir = tmp_path_factory.mktemp(cache)
    with fresh_schema(postgres_base_url) as database_url:
        env = gateway_env(database_url, cache, **extra)
        with deployed(env, workdir, instances=2, workers=2) as running:
            yield running


def stop_deployment(deployment: Deployment) -> None:
    """Stop every instance at once (each waits for its graceful shutdown)."""
    threads = [threading.Thread(target=instance.stop) for instance in deployment.instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- who listens for catalogue changes -------------------------------------------------------


def catalogue_listeners(cache_type: str, env: Mapping[str, str]) -> int | None:
    """How many workers are subscribed to the deployment's `catalogue` channel right now.

    Redis and PostgreSQL can tell; `None` where the cache cannot (SQLite's message table
    is polled, so a subscriber is listening as soon as it exists).
    """
    from gateway.registry import CATALOGUE_CHANNEL

    channel = f"{env.get('CACHE_PREFIX', 'mcpgw')}:{CATALOGUE_CHANNEL}"
    if cache_type == "redis":
        import redis

        client = redis.Redis.from_url(env["REDIS_URL"], socket_connect_timeout=2)
        try:
            return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
        finally:
            client.close()
    if cache_type == "database" and env["DATABASE_URL"].startswith("postgres"):
        import psycopg2

        from gateway.store.postgres import quote_ident
        from gateway_plugins.cache_database import notify_channel

        conn = psycopg2.connect(env["DATABASE_URL"], connect_timeout=3)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                    (f"LISTEN {quote_ident(notify_channel(channel))}",),
                )
                row = cursor.fetchone()
                return int(row[0]) if row else 0
        finally:
            conn.close()
    return None


async def wait_for_catalogue_listeners(
    cache_type: str, env: Mapping[str, str], expected: int, within: float = 10.0
) -> float:
    """Seconds until `expected` workers listen for catalogue changes (at once if unknown)."""

    async def listening() -> bool:
        count = await asyncio.to_thread(catalogue_listeners, cache_type, env)
        return count is None or count >= expected

    return await wait_until(listening, within, f"{expected} workers listen for catalogue changes")


def terminate_database_connections(database_url: str, pids: Iterable[int]) -> int:
    """End, on the PostgreSQL server, every connection the processes `pids` hold to it.

    Matching by client port touches nobody else's connections on a shared server, which a
    filter on the database or the time of connection could not promise. Returns how many
    were ended.
    """
    import psycopg2

    ports = sorted(local_ports_towards(pids, urlsplit(database_url).port or 5432))
    conn = psycopg2.connect(database_url, connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE client_addr = '127.0.0.1' AND client_port = ANY(%s) "
                "AND pid <> pg_backend_pid()",
                (ports,),
            )
            row = cursor.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()
