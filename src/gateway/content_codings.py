"""Request bodies sent with a `Content-Encoding`: which codings the gateway takes, and what
to tell a client whose body cannot be decoded.

aiohttp's HTTP parser decodes `gzip` and `deflate` bodies (`br` and `zstd` too when their
libraries are installed; when not, the parser refuses such a request with a plain 400
before the app runs). It passes any other coding through as if the body were not encoded,
and it reports a body that is not valid data of its coding as a `RequestPayloadError`
raised by whatever reads the body, so that a handler would fail with a 500.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

DECODED = ("gzip", "deflate", *(["br"] if HAS_BROTLI else []), *(["zstd"] if HAS_ZSTD else []))
"""The codings aiohttp decodes here, which it recognises only as a header's one value."""
NONE = frozenset({"", "identity"})

ACCEPT_ENCODING = ", ".join(DECODED)
"""Sent with a 415, as RFC 9110 (15.5.16) asks: the codings the request could have used."""
UNSUPPORTED = (
    f"header Content-Encoding: only {', '.join(DECODED[:-1])} and {DECODED[-1]} are supported"
)


def unsupported(request: web.Request) -> bool:
    """Whether the request has a body in a coding aiohttp does not decode (unknown, or
    several stacked), which a handler would otherwise take for the body itself."""
    value = request.headers.get(hdrs.CONTENT_ENCODING)
    if value is None or not request.body_exists:
        return False
    values = request.headers.getall(hdrs.CONTENT_ENCODING)
    if len(values) == 1 and value.lower() in DECODED:
        return False
    return any(coding.strip().lower() not in NONE for v in values for coding in v.split(","))


def reason(exc: RequestPayloadError) -> str:
    """What aiohttp's parser found wrong with the body, in one line."""
    cause = exc.__cause__
    text = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
    lines = str(text).strip().splitlines()
    return lines[-1].strip() if lines else ""


def fault(request: web.Request, exc: RequestPayloadError) -> str:
    """The client's error, for a body whose reading raised `exc`: the coding it is not
    valid data of, or what the parser found wrong."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").lower()
    if isinstance(exc.__cause__, ContentEncodingError) and coding in DECODED:
        return f"request body is not valid {coding}"
    return f"request body is malformed: {reason(exc)}"
