"""Canned responses, serialized once: the hot path writes prebuilt bytes.

Every answer exists in two forms, one that keeps the connection alive and one that announces
``connection: close``; the protocol picks by the request and the situation. Error bodies are
small JSON objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from http import HTTPStatus

import orjson

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_S = 5

Header = tuple[bytes, bytes]
#: The header every 503 carries.
_RETRY = ((b"retry-after", str(RETRY_AFTER_S).encode()),)


@dataclass(frozen=True, slots=True)
class Canned:
    """A complete response, serialized both ways. ``ends_connection``: the connection ends
    after it whatever the request."""

    status: int
    keeping_bytes: bytes  # the connection stays open
    closing_bytes: bytes  # announces ``connection: close``
    ends_connection: bool
    #: What the log says about a refusal; never a value from the request.
    reason: str = ""


def canned(
    status: int,
    body: bytes,
    *,
    close: bool = False,
    headers: tuple[Header, ...] = (),
    reason: str = "",
) -> Canned:
    head = b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
    head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    keep_alive = head + b"\r\n" + body
    closing = head + b"connection: close\r\n\r\n" + body
    return Canned(status, keep_alive, closing, close, reason)


def error(
    status: int, message: str, *, close: bool = False, headers: tuple[Header, ...] = ()
) -> Canned:
    body = orjson.dumps({"error": message}) + b"\n"
    return canned(status, body, close=close, headers=headers, reason=message)


def malformed(reason: str) -> Canned:
    """400 and close: after a framing error nothing later on the connection can be trusted."""
    return error(400, f"malformed request: {reason}", close=True)


def refusal(status: int, reason: str) -> Canned:
    """The answer to a request the framing refused (``hookd.http.framing.Malformed``)."""
    return _FRAMING_REFUSALS.get(status) or malformed(reason)


def unavailable(reason: str, *, close: bool = False) -> Canned:
    return error(503, f"not durable, retry later: {reason}", close=close, headers=_RETRY)


def publish_failed(reason: str) -> Canned:
    """503 for a record that could not be made durable (broker down, queue or spool full…). The
    body says only that: ``reason`` (librdkafka's words, a topic name) goes to the log."""
    return dataclasses.replace(PUBLISH_FAILED, reason=f"not durable: {reason}")


ACCEPTED = canned(200, b'{"ok":true}\n')
#: A redelivery of an id already published: acknowledged, not published again.
DUPLICATE = canned(200, b'{"ok":true,"duplicate":true}\n')
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NOT_FOUND = error(404, "no route for this path", close=True)
#: The client's address is outside the route's allow_from (decided at the head: close).
FORBIDDEN = error(403, "source address not allowed", close=True)
METHOD_NOT_ALLOWED = error(405, "method not allowed", close=True, headers=((b"allow", b"POST"),))
BODY_TOO_LARGE = error(413, "body too large", close=True)
URI_TOO_LONG = error(414, "request target too long", close=True)
HEADERS_TOO_LARGE = error(431, "request headers too large", close=True)
NOT_IMPLEMENTED = error(501, "transfer coding not implemented", close=True)
VERSION_NOT_SUPPORTED = error(505, "HTTP version not supported", close=True)
REQUEST_TIMEOUT = error(408, "request not received in time", close=True)
SHUTTING_DOWN = unavailable("shutting down", close=True)
OVER_CAPACITY = unavailable("too many connections", close=True)
OVERLOADED = unavailable("too many requests in flight")
OVERLOADED_CLOSE = unavailable("too many requests in flight", close=True)
NOT_DURABLE = unavailable("no acknowledgement in time", close=True)
PUBLISH_FAILED = error(503, "not durable, retry later", headers=_RETRY)
_FRAMING_REFUSALS = {
    414: URI_TOO_LONG,
    431: HEADERS_TOO_LARGE,
    501: NOT_IMPLEMENTED,
    505: VERSION_NOT_SUPPORTED,
}
