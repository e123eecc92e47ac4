"""Canned responses. The frequent ones are built once; error bodies are small JSON objects."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import h11
import orjson

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_S = 5

_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


@dataclass(frozen=True, slots=True)
class Canned:
    """A complete response as h11 events, reusable across requests."""

    response: h11.Response
    data: h11.Data
    status: int
    closes: bool


def canned(
    status: int,
    body: bytes,
    *,
    close: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Canned:
    all_headers = [_JSON, (b"content-length", str(len(body)).encode()), *headers]
    if close:
        all_headers.append(_CLOSE)
    response = h11.Response(
        status_code=status, headers=all_headers, reason=HTTPStatus(status).phrase.encode()
    )
    return Canned(response, h11.Data(body), status, close)


def error(
    status: int,
    message: str,
    *,
    close: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Canned:
    return canned(status, orjson.dumps({"error": message}) + b"\n", close=close, headers=headers)


def unavailable(reason: str, *, close: bool = False) -> Canned:
    retry = ((b"retry-after", str(RETRY_AFTER_S).encode()),)
    return error(503, f"not durable, retry later: {reason}", close=close, headers=retry)


ACCEPTED = canned(200, b'{"ok":true}\n')
#: A redelivery of an id already published: acknowledged, not published again.
DUPLICATE = canned(200, b'{"ok":true,"duplicate":true}\n')
CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
NOT_FOUND = error(404, "no route for this path", close=True)
METHOD_NOT_ALLOWED = error(405, "method not allowed", close=True, headers=((b"allow", b"POST"),))
BODY_TOO_LARGE = error(413, "body too large", close=True)
URI_TOO_LONG = error(414, "request target too long", close=True)
HEADERS_TOO_LARGE = error(431, "request headers too large", close=True)
REQUEST_TIMEOUT = error(408, "request not received in time", close=True)
SHUTTING_DOWN = unavailable("shutting down", close=True)
OVERLOADED = unavailable("too many requests in flight")
OVER_CAPACITY = unavailable("too many connections", close=True)
INTERNAL_ERROR = "internal error, request id {}"

#: Sent without h11 when the connection is refused before any parsing.
OVER_CAPACITY_BYTES = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: %d\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
) % (RETRY_AFTER_S, len(OVER_CAPACITY.data.data), OVER_CAPACITY.data.data)
