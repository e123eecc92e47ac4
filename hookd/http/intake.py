"""What a complete request gets: verify, answer a handshake, spot a redelivery, build the record.

A pure step: no sockets, no counters, no clocks of its own (the caller passes the times). It
returns a :class:`Reply` to send at once, or a :class:`Publish` to make durable first; the
connection does the rest (admission, the outbox, the answer, the metrics). An exception out of
a verifier is the caller's to answer as a 500.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookd.http import responses
from hookd.http.responses import Canned
from hookd.record import Record, build_record
from hookd.routing import Route
from hookd.verify import Rejected, Request


@dataclass(slots=True, frozen=True)
class Reply:
    """Answer now, publish nothing. ``verify_failed``: the reason a signature was refused;
    ``duplicate``: a redelivery inside the route's window."""

    answer: Canned
    verify_failed: str | None = None
    duplicate: bool = False
    #: More on a refused signature for the operator (``Rejected.detail``: the rejects topic).
    detail: str | None = None


@dataclass(slots=True)
class Publish:
    """Make ``record`` durable, then answer 200. ``delivery_id`` and ``fingerprint`` enter the
    route's redelivery window once it is (``fingerprint`` is 0 for a route without one)."""

    record: Record
    delivery_id: bytes | None
    fingerprint: int


def intake(
    route: Route, request: Request, source_ip: str, wall_ns: int, monotonic_s: float
) -> Reply | Publish:
    """Decide what ``request`` gets on ``route``: verify → handshake → redelivery → record."""
    try:
        verified = route.verifier.verify(request, wall_ns / 1e9)
    except Rejected as exc:
        reason = str(exc)
        return Reply(responses.error(401, reason), verify_failed=reason, detail=exc.detail)
    if verified.reply is not None:
        return Reply(responses.canned(200, verified.reply))
    delivery_id = verified.delivery_id
    fingerprint = 0
    if route.dedup is not None and delivery_id is not None:
        fingerprint = hash(request.body)
        if route.dedup.seen(delivery_id, fingerprint, monotonic_s):
            return Reply(responses.DUPLICATE, duplicate=True)
    record = build_record(
        topic=route.topic,
        route_path=route.path,
        scheme=route.scheme,
        key_rule=route.key_rule,
        request=request,
        verified=verified,
        received_at_ms=wall_ns // 1_000_000,
        source_ip=source_ip,
    )
    return Publish(record, delivery_id, fingerprint)
