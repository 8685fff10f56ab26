"""The README's examples work as written, against a real gateway under gunicorn.

The commands are read out of README.md, so the README cannot drift from the gateway: the
"Using it" walkthrough runs as one shell script against the demo upstream, started with the
README's own command, and the Python SDK example runs as a program. Only addresses change
(free ports instead of 4444 and 9000) and `.venv/bin/` becomes this interpreter's bin dir.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import free_port
from tests.support.gunicorn_process import REPO, GunicornGateway
from tests.upstreams.processes import accepts_connections

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent
CLI = BIN / "aio-mcp-gateway"
SERVER_ID = "support"


def section(title: str) -> str:
    """The text of the README's `## title` section, its subsections included."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


@dataclass
class Deployment:
    """A gateway run as the README's first command runs it, in a directory of its own."""

    gateway: GunicornGateway
    workdir: Path
    env: dict[str, str]

    def localise(self, text: str, demo_port: int = 0) -> str:
        """The README's text with this test's addresses and executables."""
        text = text.replace(".venv/bin/", f"{BIN}/")
        text = text.replace(":4444", f":{self.gateway.port}")
        return text.replace("127.0.0.1:9000", f"127.0.0.1:{demo_port}").replace(
            "--port 9000", f"--port {demo_port}"
        )

    def token(self, *args: str) -> str:
        created = subprocess.run(
            [str(CLI), "token", "create", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        )
        return created.stdout.strip()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("readme")
    # The README's run command sets nothing: the JWT secret is made into a key file beside
    # the database, which `token create` then reads from the same working directory.
    env = {**os.environ, "DATABASE_URL": "sqlite:///./gateway.db", "LOG_FORMAT": "json"}
    for name in ("JWT_SECRET_KEY", "AUTH_REQUIRED", "AUTH_TYPE", "CACHE_TYPE"):
        env.pop(name, None)
    # One worker: with more, a command pasted right after a registration may reach a worker
    # that has not reloaded yet (the README promises every worker within about a second).
    gateway = GunicornGateway(env, free_port(), workdir, workers=1).start()
    try:
        yield Deployment(gateway, workdir, env)
    finally:
        gateway.stop()


@pytest.fixture
def demo_upstream(deployment: Deployment) -> Iterator[int]:
    """The demo upstream, started with the README's command; yields its port."""
    (command,) = [
        block.strip()
        for block in code_blocks(section("Using it"), "bash")
        if "demo-upstream" in block
    ]
    port = free_port()
    process = subprocess.Popen(
        ["bash", "-c", f"exec {deployment.localise(command, port)}"],
        cwd=deployment.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not accepts_connections(port):
            assert process.poll() is None, f"the demo upstream exited with {process.returncode}"
            assert time.monotonic() < deadline, "the demo upstream did not listen within 20s"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the curl walkthrough ------------------------------------------------------------------

# Every curl of the script records its answer: body, status, method and URL.
RECORDING_CURL = """set -euo pipefail
answers=0
curl() {
  answers=$((answers + 1))
  command curl -o "$ANSWERS/$answers.body" -w '%{http_code} %{method} %{url_effective}' \\
    "$@" > "$ANSWERS/$answers.status"
}
"""


@dataclass(frozen=True)
class Answer:
    status: int
    method: str
    path: str
    body: Any

    def result(self) -> dict[str, Any]:
        """The JSON-RPC result, failing on an error."""
        assert "error" not in self.body, self.body
        result: dict[str, Any] = self.body["result"]
        return result


def search_found_docs(answer: Answer) -> bool:
    result = answer.result()
    uris = [hit["uri"] for hit in result["structuredContent"]["results"]]
    return not result.get("isError") and "docs://gateway" in uris


def tool_named(answer: Answer, name: str) -> dict[str, Any]:
    tools = answer.body["tools"] if isinstance(answer.body, dict) else answer.body
    return next(tool for tool in tools if tool["name"] == name)


# One line per command of the walkthrough, in order: what it sends and what must come back.
WALKTHROUGH: list[tuple[str, str, int, Callable[[Answer], bool]]] = [
    ("POST", "/upstreams", 201, lambda a: a.body["name"] == "docs"),
    ("GET", "/tools", 200, lambda a: tool_named(a, "docs__search")["enabled"] is True),
    ("POST", "/rpc", 200, search_found_docs),
    ("POST", "/rpc", 200, search_found_docs),
    (
        "POST",
        "/rpc",
        200,
        lambda a: "GET /tools" in a.result()["contents"][0]["text"],
    ),
    (
        "POST",
        "/rpc",
        200,
        lambda a: "Why is my tool missing?" in a.result()["messages"][0]["content"]["text"],
    ),
    ("PATCH", "/tools/docs__search", 200, lambda a: a.body["enabled"] is False),
    ("PATCH", "/tools/docs__search", 200, lambda a: a.body["enabled"] is True),
    ("POST", "/upstreams/docs/refresh", 200, lambda a: True),
    # Virtual servers
    ("POST", "/servers", 201, lambda a: a.body["id"] == SERVER_ID),
    # Curating tools
    ("PATCH", "/tools/docs__search", 200, lambda a: a.body["listed"]["name"] == "find_docs"),
    ("POST", "/rpc", 200, search_found_docs),
    # Search mode
    ("POST", "/servers", 201, lambda a: a.body["tool_mode"] == "search"),
    ("DELETE", "/servers/finder", 204, lambda a: True),
    ("DELETE", f"/servers/{SERVER_ID}", 204, lambda a: True),
    ("DELETE", "/upstreams/docs", 204, lambda a: True),
]


def walkthrough_script(deployment: Deployment, demo_port: int) -> str:
    blocks = [
        block for block in code_blocks(section("Using it"), "bash") if "demo-upstream" not in block
    ]
    return RECORDING_CURL + deployment.localise("\n".join(blocks), demo_port)


def read_answers(folder: Path) -> list[Answer]:
    answers = []
    for number in range(1, len(list(folder.glob("*.status"))) + 1):
        status, method, url = (folder / f"{number}.status").read_text().split(" ", 2)
        body = folder / f"{number}.body"  # curl writes none for an empty answer
        raw = body.read_bytes() if body.exists() else b""
        path = "/" + url.split("/", 3)[3]
        answers.append(Answer(int(status), method, path, orjson.loads(raw) if raw else None))
    return answers


def test_the_curl_walkthrough_works_as_written(
    deployment: Deployment, demo_upstream: int, tmp_path: Path
) -> None:
    script = walkthrough_script(deployment, demo_upstream)
    ran = subprocess.run(
        ["bash", "-c", script],
        env={**deployment.env, "ANSWERS": str(tmp_path)},
        cwd=deployment.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    answers = read_answers(tmp_path)
    sent = [(a.method, a.path) for a in answers]
    assert sent == [(method, path) for method, path, _, _ in WALKTHROUGH], (
        "the README's walkthrough changed: give each of its commands a line in WALKTHROUGH"
    )
    for answer, (method, path, status, holds) in zip(answers, WALKTHROUGH, strict=True):
        assert answer.status == status, (method, path, answer)
        assert holds(answer), (method, path, answer)


# --- the Python SDK example ----------------------------------------------------------------


def test_the_python_sdk_example_works_as_written(deployment: Deployment, tmp_path: Path) -> None:
    (example,) = code_blocks(section("Using it"), "python")
    token = deployment.token("--sub", "my-agent")
    program = deployment.localise(example).replace('TOKEN = "..."', f"TOKEN = {token!r}")
    assert token in program, 'the example no longer sets TOKEN = "..."'
    (tmp_path / "example.py").write_text(program)
    ran = subprocess.run(
        [sys.executable, str(tmp_path / "example.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    tool_names, structured = ran.stdout.strip().splitlines()
    assert "convert_time" in tool_names
    assert "Europe/Dublin" in structured
