"""The Kafka record built from a verified request: exact body, key by rule, ``hookd-*`` headers."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from hookd.verify import Request, Verified

RecordHeaders = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message. ``value`` is the request body byte for byte."""

    topic: str
    key: bytes | None
    value: bytes
    headers: RecordHeaders
    timestamp_ms: int


class KeyRule:
    """How a route derives the record key: ``header:NAME``, ``json:/pointer``, ``none`` or the
    scheme's delivery id (the default)."""

    __slots__ = ("_header", "_none", "_pointer")

    def __init__(self, rule: str | None) -> None:
        self._header: bytes | None = None
        self._pointer: tuple[str, ...] | None = None
        self._none = rule == "none"
        if rule and not self._none:
            kind, _, arg = rule.partition(":")
            if kind == "header":
                self._header = arg.lower().encode("ascii")
            else:
                self._pointer = tuple(
                    part.replace("~1", "/").replace("~0", "~") for part in arg[1:].split("/")
                )

    def key(self, request: Request, verified: Verified) -> bytes | None:
        if self._none:
            return None
        if self._header is not None:
            return request.headers.first(self._header)
        if self._pointer is not None:
            return json_pointer(request.body, self._pointer)
        return verified.delivery_id


def json_pointer(body: bytes, pointer: tuple[str, ...]) -> bytes | None:
    """Resolve an RFC 6901 pointer in a JSON body; scalars become their text, else ``None``."""
    try:
        node = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    for part in pointer:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, str):
        return node.encode()
    if isinstance(node, bool) or node is None or isinstance(node, dict | list):
        return None
    return str(node).encode()


def build_record(
    *,
    topic: str,
    route_path: str,
    scheme: str,
    key_rule: KeyRule,
    request: Request,
    verified: Verified,
    received_at_ms: int,
    source_ip: str,
) -> Record:
    """The record for a verified request, as the Kafka record contract describes."""
    headers: list[tuple[str, bytes]] = [
        ("hookd-route", route_path.encode()),
        ("hookd-verify", scheme.encode()),
        ("hookd-received-at", str(received_at_ms).encode()),
        ("hookd-source-ip", source_ip.encode()),
    ]
    if verified.delivery_id is not None:
        headers.append(("hookd-webhook-id", verified.delivery_id))
    if verified.event_type is not None:
        headers.append(("hookd-event-type", verified.event_type))
    content_type = request.headers.first(b"content-type")
    if content_type is not None:
        headers.append(("content-type", content_type))
    return Record(
        topic=topic,
        key=key_rule.key(request, verified),
        value=request.body,
        headers=tuple(headers),
        timestamp_ms=received_at_ms,
    )
