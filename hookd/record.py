"""The Kafka record built from a verified request: exact body, key by rule, ``hookd-*`` headers."""

from __future__ import annotations

from dataclasses import dataclass

from hookd.target import split_target
from hookd.verify import Request, Verified
from hookd.verify.base import NOT_JSON, parse_json

RecordHeaders = tuple[tuple[str, bytes], ...]

#: Record header of a forwarded request header: ``hookd-header-<lower-case name>``.
FORWARDED_HEADER_PREFIX = "hookd-header-"
#: Record header of the raw query string (``forward_query``).
QUERY_HEADER = "hookd-query"
#: Names of what was not forwarded because it did not fit ``FORWARD_MAX_BYTES``.
OMITTED_HEADER = "hookd-forward-omitted"
#: At most this many bytes (names and values) of forwarded headers and query per record, so
#: that a record stays within the room Kafka's size check keeps for key and headers.
FORWARD_MAX_BYTES = 4096


@dataclass(slots=True)
class Record:
    """One Kafka message. ``value`` is the request body byte for byte. Not changed once built;
    not ``frozen`` only because that costs an ``object.__setattr__`` per field, per request."""

    topic: str
    key: bytes | None
    value: bytes
    headers: RecordHeaders
    timestamp_ms: int


class KeyRule:
    """How a route derives the record key: ``header:NAME``, ``json:/pointer``, ``none`` or the
    scheme's delivery id (the default); and which request headers (``forward_headers``) and
    whether the query string (``forward_query``) it copies into the record, the other part of
    a record that is the route's own (the route hands both to ``build_record`` as one)."""

    __slots__ = ("_forward", "_forward_query", "_header", "_none", "_pointer")

    def __init__(
        self,
        rule: str | None,
        forward_headers: tuple[str, ...] = (),
        forward_query: bool = False,
    ) -> None:
        self._forward = tuple(
            (FORWARDED_HEADER_PREFIX + name.lower(), name.lower().encode("ascii"))
            for name in forward_headers
        )
        self._forward_query = forward_query
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

    def forwarded(self, request: Request) -> list[tuple[str, bytes]]:
        """``hookd-header-<name>`` for each forwarded header present (its first value), then
        ``hookd-query``; what would pass ``FORWARD_MAX_BYTES`` is left out and named in
        ``hookd-forward-omitted``. All of it unsigned (except a query the scheme signs)."""
        out: list[tuple[str, bytes]] = []
        if not self._forward and not self._forward_query:
            return out
        room = FORWARD_MAX_BYTES
        omitted: list[str] = []
        for record_name, name in self._forward:
            value = request.headers.first(name)
            if value is None:
                continue
            size = len(record_name) + len(value)
            if size > room:
                omitted.append(name.decode())
                continue
            room -= size
            out.append((record_name, value))
        if self._forward_query:
            query = split_target(request.target)[1]
            if query:
                if len(QUERY_HEADER) + len(query) > room:
                    omitted.append("query")
                else:
                    out.append((QUERY_HEADER, query))
        if omitted:
            out.append((OMITTED_HEADER, ",".join(omitted).encode()))
        return out


def json_pointer(body: bytes, pointer: tuple[str, ...]) -> bytes | None:
    """Resolve an RFC 6901 pointer in a JSON body; scalars become their text, else ``None``."""
    node = parse_json(body)
    if node is NOT_JSON:
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
        ("hookd-received-at", b"%d" % received_at_ms),
        ("hookd-source-ip", source_ip.encode()),
    ]
    if verified.delivery_id is not None:
        headers.append(("hookd-webhook-id", verified.delivery_id))
    if verified.event_type is not None:
        headers.append(("hookd-event-type", verified.event_type))
    content_type = request.headers.first(b"content-type")
    if content_type is not None:
        headers.append(("content-type", content_type))
    headers += key_rule.forwarded(request)
    key = key_rule.key(request, verified)
    return Record(topic, key, request.body, tuple(headers), received_at_ms)
