"""Real servers for the tracing tests (a pytest plugin the top-level conftest loads), each
on loopback in a thread of its own, so a test that blocks its event loop (starting gunicorn)
still has them answering:

- `OtlpReceiver`: an OTLP/HTTP endpoint taking `POST /v1/traces` and decoding each body
  with `opentelemetry-proto`'s `ExportTraceServiceRequest`;
- `RecordingUpstream`: a small MCP Streamable HTTP server (JSON replies) with one `echo`
  tool, recording each request's method, `traceparent`/`tracestate` headers and `_meta`.
"""

from __future__ import annotations

import gzip
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
except ImportError:  # the test extra brings it
    ExportTraceServiceRequest = ExportTraceServiceResponse = None

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    """0 unset, 1 ok, 2 error."""
    service: str
    instance: str
    """The `service.instance.id` of the process that made it."""


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


PROTOBUF = {"Content-Type": "application/x-protobuf"}


class _Handler(BaseHTTPRequestHandler):
    """Answers with a whole body and logs nothing."""

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(_Handler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self._answer(404, b"", PROTOBUF)
                    return
                receiver.take(body)
                self._answer(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

        self.server = _serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            service=str(resource.get("service.name")),
                            instance=str(resource.get("service.instance.id")),
                        )
                    )
        with self._lock:
            self.posts += 1
            self.spans.extend(spans)

    def wait_for(self, found: Callable[[list[Span]], bool], timeout: float = 20.0) -> list[Span]:
        """The spans received once `found` is true of them (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise AssertionError(f"spans never arrived; received: {names}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Seen:
    method: str
    traceparent: str | None
    tracestate: str | None
    meta: dict[str, Any] = field(default_factory=dict)


ECHO = {
    "name": "echo",
    "description": "Answers with its text.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


class RecordingUpstream:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.closed = False
        upstream = self

        class Handler(_Handler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if upstream.closed:
                    # A kept-alive connection outlives the listening socket: hang up on it.
                    self.close_connection = True
                    return
                message = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                params = message.get("params") or {}
                upstream.seen.append(
                    Seen(
                        message.get("method", ""),
                        self.headers.get("traceparent"),
                        self.headers.get("tracestate"),
                        dict(params.get("_meta") or {}),
                    )
                )
                if "id" not in message:
                    self._answer(202, b"", {})
                    return
                result = upstream.result(message["method"], params)
                body = orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})
                headers = {"Content-Type": "application/json"}
                if message["method"] == "initialize":
                    headers["Mcp-Session-Id"] = uuid.uuid4().hex
                self._answer(200, body, headers)

            def do_DELETE(self) -> None:
                self._answer(204, b"", {})

            def do_GET(self) -> None:
                self._answer(405, b"", {"Allow": "POST, DELETE"})

        self.server = _serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"

    @staticmethod
    def result(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            return {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recording", "version": "1"},
            }
        if method == "tools/list":
            return {"tools": [ECHO]}
        if method == "tools/call":
            text = str((params.get("arguments") or {}).get("text", ""))
            return {"content": [{"type": "text", "text": text}], "isError": False}
        return {}

    def calls(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == "tools/call"]

    def close(self) -> None:
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    if ExportTraceServiceRequest is None:
        from tests.conftest import unavailable

        unavailable("opentelemetry-proto", "not installed (pip install -e '.[test]')")
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def recording_upstream() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    yield upstream
    upstream.close()
