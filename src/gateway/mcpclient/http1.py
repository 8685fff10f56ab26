"""What the upstream hop's HTTP/1.1 client sends and how an exchange fails: a request's
line and headers encoded once (`RequestHead`), and the `HttpClientError`s the pool raises.
The connections and the responses are `gateway.mcpclient.fasthttp`.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from gateway import __version__

DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


class HttpClientError(Exception):
    """The exchange itself failed (as opposed to an HTTP error status)."""


class InvalidUrl(HttpClientError):
    pass


class CannotConnect(HttpClientError):
    """No connection could be opened; the message is the operating system's reason."""


class Disconnected(HttpClientError):
    """The connection closed before the response's head had arrived."""


class TruncatedBody(HttpClientError):
    """The connection closed before the response's body was complete."""


class BadResponse(HttpClientError):
    """The bytes that came back are not an HTTP/1.1 response."""


Origin = tuple[str, str, int]


class RequestHead:
    """A request's line and headers, encoded once for `HttpPool.request`."""

    __slots__ = ("encoded", "headers", "origin", "url")

    def __init__(self, method: str, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.headers = dict(headers)
        """As given, so a caller can tell whether its headers changed since."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except (KeyError, ValueError):
            raise InvalidUrl(url) from None
        if not parts.hostname:
            raise InvalidUrl(url)
        self.origin: Origin = (scheme, parts.hostname, port)
        target = quote(parts.path or "/", safe=_SAFE_PATH)
        if parts.query:
            target += "?" + quote(parts.query, safe=_SAFE_QUERY)
        given = {name.lower() for name in headers}
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
        if "user-agent" not in given:
            lines.append(f"User-Agent: aio-mcp-gateway/{__version__}")
        if "accept" not in given:
            lines.append("Accept: */*")  # as aiohttp sent it
        if parts.username is not None and "authorization" not in given:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            lines.append(f"Authorization: Basic {b64encode(userinfo.encode()).decode()}")
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "transfer-encoding"):
                continue  # ours to set
            lines.append(f"{name}: {value}")
        if any(char in line for line in lines for char in "\r\n\0"):
            # It would end the head early and smuggle the rest in as headers or a request.
            raise HttpClientError(f"a header or the URL of {url!r} contains a line break")
        self.encoded = ("\r\n".join(lines) + "\r\n").encode()
