"""`StdioClient`: the MCP session with one local process over its stdin and stdout.

The process gets a few variables of the gateway's environment (`INHERITED`: PATH, HOME,
locale...) plus the upstream's `env`, runs in a process
group of its own (so that stopping it stops whatever it started, such as the server `npx`
runs) and is sent SIGKILL by the kernel if the process that started it dies
(`PR_SET_PDEATHSIG`), so a SIGKILLed parent leaves nothing behind.

One JSON-RPC message per line each way; many requests are in flight at once, matched by id
(`gateway.mcpclient`). What else the process writes is bounded: a stdout line that is not
JSON is logged (at most `NOISE_PER_SECOND` a second) and skipped; stderr is read as it
comes, line by line, and logged tagged with the upstream at the same bounded rate, so a
flood costs neither memory nor a blocked child. When the process exits, the requests
waiting on it fail with a `BackendError` naming its exit status (a tool call thus ends in an
`isError` result), and the next use starts it again after an exponential backoff: 0.5 s
doubling to 30 s, from the start again once a process has stayed up `HEALTHY_SECONDS`.
While a listener is set it is started again without waiting for a use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import orjson
import structlog

from gateway.mcpclient import Backoff, Call, Link, ListenOutcome, McpClient
from gateway.mcpclient.wire import one_line
from gateway.plugin import JSON, BackendError, UpstreamConfig

if TYPE_CHECKING:
    from gateway.mcpclient import SessionState
    from gateway.settings import Settings

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The longest stdout line (one JSON-RPC message) read; a longer one is skipped."""
STDERR_LINE_BYTES = 2048
"""A stderr line is logged up to this long."""
NOISE_PER_SECOND = 20
"""Lines of stderr (and non-JSON stdout) logged per second; the rest are counted."""
HEALTHY_SECONDS = 10.0
RESTART_MIN = 0.5
RESTART_MAX = 30.0
STOP_GRACE = 2.0
"""How long a process has to exit once its stdin is closed, then after SIGTERM; and once it
has closed its stdout."""
EXIT_POLL = 0.2
"""How often the exit of a process whose pipes outlive it is looked for."""

_PR_SET_PDEATHSIG = 1

INHERITED = frozenset({"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "TZ", "TMPDIR"})
"""What a server gets of the gateway's environment (with `LC_*`), as the MCP SDKs' stdio
clients do: not the gateway's secrets (`JWT_SECRET_KEY`, `DATABASE_URL`...), which are no
business of a third-party program. Anything else it needs comes from its `env`."""


def inherited_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name in INHERITED or name.startswith("LC_")
    }


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask the kernel to SIGKILL this child when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Command:
    """What to run: the executable (resolved on the gateway's PATH), its arguments, the
    environment added to the gateway's and the working directory."""

    executable: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    @classmethod
    def of(cls, upstream: UpstreamConfig) -> Command:
        options = upstream.options
        return cls(
            executable=str(options.get("command", "")),
            args=tuple(str(a) for a in options.get("args", ())),
            env=tuple(sorted(upstream.headers.items())),
            cwd=str(options["cwd"]) if options.get("cwd") else None,
        )


@dataclass(slots=True)
class Health:
    """What `GET /upstreams/{name}` shows of the process."""

    state: str = "stopped"
    """`starting`, `running`, `backoff` (waiting to start again) or `stopped`."""
    pid: int | None = None
    restarts: int = 0
    started_at: float | None = None
    last_exit: JSON | None = None
    last_stderr: str = ""

    def view(self) -> JSON:
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
            "last_stderr": self.last_stderr,
        }


class _Noise:
    """Logs lines of one kind at most `NOISE_PER_SECOND` a second, counting the rest."""

    def __init__(self, upstream: str, event: str) -> None:
        self.upstream, self.event = upstream, event
        self.window, self.logged, self.dropped = 0.0, 0, 0

    def line(self, text: str) -> None:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.dropped:
                log.warning(
                    f"{self.event} lines not logged", upstream=self.upstream, count=self.dropped
                )
            self.window, self.logged, self.dropped = now, 0, 0
        if self.logged >= NOISE_PER_SECOND:
            self.dropped += 1
            return
        self.logged += 1
        log.info(self.event, upstream=self.upstream, line=text)


class _ProcessLink(Link):
    """One running process: its MCP session lasts as long as it does."""

    def __init__(self, upstream: str, process: asyncio.subprocess.Process, number: int) -> None:
        super().__init__(upstream)
        self.process = process
        self.number = number
        """Which of its client's processes this is, counted from 1 as they start."""
        self.tasks: list[asyncio.Task[None]] = []


class StdioClient(McpClient[_ProcessLink]):
    """A `FullBackend` for one MCP server run as a local process speaking stdio."""

    # 2025-11-25, unlike Streamable HTTP upstreams: there is no reply stream to resume, and
    # the server may ask for URL elicitation.
    protocol_version = "2025-11-25"
    # Stdout carries every request's replies and notifications.
    shared_stream = True
    running: ClassVar[set[StdioClient]] = set()
    """The clients of this process with a process running or starting."""

    def __init__(
        self,
        upstream: UpstreamConfig,
        settings: Settings,
        initialize_timeout: float = 20.0,
        refusal: str | None = None,
        max_processes: int | None = None,
    ) -> None:
        super().__init__(upstream, settings)
        self.command = Command.of(upstream)
        self.initialize_timeout = initialize_timeout
        self.refusal = refusal
        """Why the command may not run (no longer allowed), if so."""
        self.max_processes = max_processes
        """Processes this process may run at once, across its clients, if it keeps count."""
        self.health = Health()
        self._restart = Backoff(delay=RESTART_MIN)
        self._not_before = 0.0
        self._starts = 0
        """Processes started or starting; the newest is the one numbered so. The health and
        the count are about it alone."""

    # --- the process ---

    async def _open(self) -> _ProcessLink:
        if self.refusal is not None:
            raise BackendError(self.refusal)
        if (
            self.max_processes is not None
            and self not in StdioClient.running
            and len(StdioClient.running) >= self.max_processes
        ):
            raise BackendError(
                f"upstream {self.name!r}: STDIO_MAX_PROCESSES ({self.max_processes}) stdio "
                "processes are already running in this worker"
            )
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if not self._running:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        # From here on the health and the count are the new process's, even before it is
        # spawned: an older one discarded but not yet seen to exit no longer changes them.
        self._starts += 1
        number = self._starts
        self.health.state, self.health.pid = "starting", None
        StdioClient.running.add(self)
        try:
            process = await self._spawn_process()
        except BaseException:
            StdioClient.running.discard(self)
            raise
        link = _ProcessLink(self.name, process, number)
        self.health.pid, self.health.started_at = process.pid, time.time()
        link.tasks = [
            self._spawn(self._read_stdout(link)),
            self._spawn(self._read_stderr(link)),
            self._spawn(self._watch(link)),
        ]
        return link

    async def _spawn_process(self) -> asyncio.subprocess.Process:
        command = self.command
        env = {**inherited_environment(), **dict(command.env)}
        # Found on the gateway's PATH: an `env` with a PATH of its own must not choose
        # another program than the allow-listed one.
        executable = shutil.which(command.executable) or command.executable
        try:
            return await asyncio.create_subprocess_exec(
                executable,
                *command.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=command.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                limit=MAX_MESSAGE_BYTES,
            )
        except OSError as exc:
            self.health.state = "stopped"
            self._after_exit(started=time.monotonic())
            raise BackendError(
                f"upstream {self.name!r}: cannot start {command.executable!r}: "
                f"{exc.strerror or exc}"
            ) from None

    async def _handshake(self, link: _ProcessLink) -> SessionState:
        try:
            async with asyncio.timeout(self.initialize_timeout):
                state = await super()._handshake(link)
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer initialize within "
                f"{self.initialize_timeout:g}s"
            ) from None
        self.health.state = "running"
        return state

    async def _read_stdout(self, link: _ProcessLink) -> None:
        stdout = link.process.stdout
        assert stdout is not None
        noise = _Noise(self.name, "upstream stdout is not JSON-RPC")
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line past MAX_MESSAGE_BYTES, dropped by the reader
                noise.line(f"a line longer than {MAX_MESSAGE_BYTES} bytes")
                continue
            if not line:
                break
            if not line.strip():
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                noise.line(one_line(line.decode("utf-8", "replace")))
                continue
            if isinstance(message, dict):
                await self._receive(link, message)
            else:
                noise.line(one_line(line.decode("utf-8", "replace")))
        # No reply can come any more: a process that lives on without its stdout is stopped
        # rather than left to time out every request.
        if not await _exited(link.process, STOP_GRACE) and link.lost is None:
            log.warning("upstream process closed its stdout", upstream=self.name)
            self._discard(link, "closed its stdout")

    async def _read_stderr(self, link: _ProcessLink) -> None:
        stderr = link.process.stderr
        assert stderr is not None
        noise = _Noise(self.name, "upstream stderr")
        pending = b""
        while chunk := await stderr.read(65536):
            lines = (pending + chunk).split(b"\n")
            # An unterminated tail waits for the rest, up to one line's worth.
            pending = lines.pop()[:STDERR_LINE_BYTES]
            for raw in lines:
                text = raw[:STDERR_LINE_BYTES].decode("utf-8", "replace").rstrip()
                if text:
                    self.health.last_stderr = one_line(text)
                    noise.line(text)

    async def _watch(self, link: _ProcessLink) -> None:
        started = time.monotonic()
        await _exited(link.process, None)
        status = link.process.returncode
        assert status is not None
        exit_view: JSON = {"status": status, "at": time.time()}
        if status < 0:
            exit_view["signal"] = signal.Signals(-status).name
        self.health.last_exit = exit_view
        if self._newest(link):
            # A process discarded before it exited may end after its successor started (or
            # while it is being started): the successor's state, pid, place in the count
            # and restart backoff are not its to change.
            self.health.pid = None
            StdioClient.running.discard(self)
            self._after_exit(started)
        described = (
            f"exited with status {status}"
            if status >= 0
            else f"was killed by {signal.Signals(-status).name}"
        )
        if self.health.last_stderr and link.lost is None:
            described += f" (stderr: {self.health.last_stderr[:200]})"
        if link.lost is None:
            log.warning("upstream process exited", upstream=self.name, status=status)
        link.end(described)
        # The process group may hold children of its own (npx runs node).
        _signal_group(link.process.pid, signal.SIGKILL)

    def _newest(self, link: _ProcessLink) -> bool:
        """Whether `link` is the newest process's, which the health and the count are about;
        still so once it has exited, until another starts."""
        return link.number == self._starts

    def _after_exit(self, started: float) -> None:
        if time.monotonic() - started >= HEALTHY_SECONDS:
            self._restart.reset()
        self._not_before = time.monotonic() + self._restart.next_delay()
        if self._running:
            self.health.restarts += 1
            self.health.state = "backoff"
        else:
            self.health.state = "stopped"

    # --- what McpSession asks of a transport ---

    async def _post(self, link: _ProcessLink, message: JSON, call: Call | None) -> None:
        stdin = link.process.stdin
        if link.lost is not None or stdin is None or stdin.is_closing():
            raise BackendError(f"upstream {self.name!r} {link.lost or 'closed its stdin'}")
        try:
            stdin.write(orjson.dumps(message) + b"\n")
            await stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise BackendError(
                f"upstream {self.name!r} closed its stdin ({type(exc).__name__})"
            ) from None

    async def _listen_on(self, link: _ProcessLink, backoff: Backoff) -> ListenOutcome:
        # Stdout is read all along; the listener only has the process started again.
        await link.ended.wait()
        return ListenOutcome.ENDED

    def _discard(self, link: _ProcessLink, reason: str) -> None:
        link.end(reason)
        if link.process.returncode is None:
            _signal_group(link.process.pid, signal.SIGKILL)

    async def _terminate(self, link: _ProcessLink) -> None:
        link.end("was stopped")
        process = link.process
        if process.stdin is not None:
            process.stdin.close()
        # A server exits when its stdin closes; one that does not gets SIGTERM, then SIGKILL.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if await _exited(process, STOP_GRACE):
                break
            _signal_group(process.pid, sig)
        await _exited(process, STOP_GRACE)
        _signal_group(process.pid, signal.SIGKILL)  # whatever it started and left behind
        if self._newest(link):
            self.health.state, self.health.pid = "stopped", None
            StdioClient.running.discard(self)

    async def status(self) -> JSON:
        return self.health.view()


async def _exited(process: asyncio.subprocess.Process, within: float | None) -> bool:
    """Whether the process exits within `within` seconds (None: wait for it). Not `wait()`
    alone, which also waits for its pipes to close: a child it forked may hold them open
    long after it exited."""
    loop = asyncio.get_running_loop()
    deadline = None if within is None else loop.time() + within
    waiting = asyncio.ensure_future(process.wait())
    try:
        while process.returncode is None:
            left = EXIT_POLL if deadline is None else min(EXIT_POLL, deadline - loop.time())
            if left <= 0:
                return False
            await asyncio.wait({waiting}, timeout=left)
    finally:
        waiting.cancel()
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
