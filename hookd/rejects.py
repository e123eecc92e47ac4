"""The rejects topic (``[kafka] rejects_topic``): one record per request refused on a known
route, saying why in the operator's terms, with nothing secret in it; rate-limited per route.

Pure apart from the two callables it is given: ``send`` (hand a record to the publisher and
forget it: see :func:`publish_and_forget`) and ``dropped`` (count a record the rate limit
dropped); clocks are injected. The connection calls :meth:`Rejects.refused` at each refusal
(401, 403, 413, and 400 once the request was routed) and :meth:`Rejects.accepted` for each
verified request (the content-type it came with). Nothing here can delay or change the
answer: a record is built only after its token is taken, handed over without waiting, and a
failure to build or publish it is logged, never raised.

Record (key: the route's path; value: JSON, schema in README "The rejects topic")::

    {"v": 1, "route": "/github", "status": 401, "scheme": "github",
     "reason": "signature mismatch; body arrived compressed (content-encoding: gzip)",
     "refusal": "signature mismatch", "hints": ["body arrived compressed (...)"],
     "source_ip": "203.0.113.9", "received_at": 1764540000123, "method": "POST",
     "headers": [["content-type", "application/json"], ["x-hub-signature-256", 71]],
     "content_length": 2, "body_size": 2, "body_complete": true, "body_sha256": "…"}

plus ``"body_prefix_b64"`` with the route's ``capture_rejected_body`` set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson

from hookd.config import CREDENTIAL_HEADER_WORDS
from hookd.record import Record
from hookd.verify import Headers

if TYPE_CHECKING:
    from hookd.http.framing import Head
    from hookd.publish.publisher import Publisher
    from hookd.routing import Route

log = logging.getLogger("hookd.rejects")

#: The rate limit, per route and per worker: a token bucket refilled at ``RATE_PER_S`` records
#: a second, holding at most ``BURST``. Why these: a misconfigured sender (a rotated secret,
#: a proxy re-encoding bodies) is diagnosed from its first few refusals, and the burst takes a
#: provider's retry storm or a redelivery of a backlog whole; beyond that, more records of the
#: same refusal tell nothing new. An attacker refused at any rate writes at most 10 records a
#: second per route and worker (about 25 MB an hour with a full 16 KiB head each), not one per
#: request: the rejects topic can never become a way to flood Kafka. What the limit drops is
#: counted in ``hookd_rejects_dropped_total{route}``.
RATE_PER_S = 10.0
BURST = 50
#: The largest ``capture_rejected_body``: a record stays far below Kafka's message.max.bytes.
MAX_CAPTURE_BYTES = 65_536
#: Longest content-type quoted in a reason.
_MAX_QUOTED = 100

#: Request headers that carry each scheme's signature or token: one of these on a route of
#: another scheme says the sender signs for that scheme (a delivery sent to the wrong route,
#: or the route given the wrong ``verify``). Every name here is also redacted in records.
SIGNATURE_HEADERS: dict[bytes, tuple[str, ...]] = {
    b"x-hub-signature-256": ("github",),
    b"x-hub-signature": ("github", "intercom", "bitbucket"),
    b"stripe-signature": ("stripe",),
    b"webhook-signature": ("standard-webhooks", "svix"),
    b"svix-signature": ("svix", "standard-webhooks"),
    b"x-shopify-hmac-sha256": ("shopify",),
    b"x-slack-signature": ("slack",),
    b"x-zm-signature": ("zoom",),
    b"x-twilio-signature": ("twilio",),
    b"x-gitlab-token": ("gitlab",),
    b"paddle-signature": ("paddle",),
    b"calendly-webhook-signature": ("calendly",),
    b"linear-signature": ("linear",),
    b"x-hubspot-signature-v3": ("hubspot",),
    b"x-square-hmacsha256-signature": ("square",),
    b"x-pagerduty-signature": ("pagerduty",),
    b"typeform-signature": ("typeform",),
    b"x-signature": ("segment",),
    b"x-twilio-email-event-webhook-signature": ("sendgrid",),
    b"x-signature-ed25519": ("discord",),
}
#: Words that make a header's value never recorded (its length is, instead): the config's
#: credential words (those ``forward_headers`` refuses) and a session id.
DENIED_WORDS = (*CREDENTIAL_HEADER_WORDS, "session")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; starts full. ``now``: monotonic."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def denied(name: bytes, own: frozenset[bytes] = frozenset()) -> bool:
    """Whether a header's value stays out of a record: a credential word in its name, a known
    signature header, or the route's own signature header (``own``)."""
    if name in own or name in SIGNATURE_HEADERS:
        return True
    text = name.decode("latin-1").lower()
    return any(word in text for word in DENIED_WORDS)


def own_headers(route: Route) -> frozenset[bytes]:
    """The route's own signature (or token) headers: its ``header`` option and its scheme's."""
    names = {name for name, schemes in SIGNATURE_HEADERS.items() if route.scheme in schemes}
    header = route.config.header
    if header:
        names.add(header.strip().lower().encode("latin-1"))
    elif route.scheme in ("token", "basic"):
        names.add(b"authorization")
    return frozenset(names)


def hints(
    route: Route,
    status: int,
    head: Head,
    last_content_type: bytes | None,
) -> list[str]:
    """What the operator needs beyond the refusal itself, where it is knowable: another
    scheme's signature (401), a body that arrived chunked or compressed, a content-type other
    than the route's last accepted one. Header names and non-secret values only."""
    found: list[str] = []
    if status == 401:
        own = own_headers(route)
        for name, _ in head.headers:
            schemes = SIGNATURE_HEADERS.get(name)
            if schemes is None or name in own or route.scheme in schemes:
                continue
            found.append(
                f"signature present for scheme {' or '.join(schemes)} ({name.decode()}) but "
                f"route expects {route.scheme}"
            )
            break
    if head.chunked:
        found.append("body arrived chunked")
    headers = Headers(head.headers)
    encoding = headers.first(b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        found.append(f"body arrived compressed (content-encoding: {_quote(encoding)})")
    content_type = headers.first(b"content-type")
    if last_content_type is not None and _media(content_type) != _media(last_content_type):
        now = _quote(content_type) if content_type is not None else "none"
        found.append(f"content-type changed: {now}, last accepted {_quote(last_content_type)}")
    return found


def reject_record(
    *,
    topic: str,
    route: Route,
    status: int,
    refusal: str,
    detail: str | None,
    head: Head,
    body: bytes,
    body_complete: bool,
    source_ip: str,
    received_at_ms: int,
    last_content_type: bytes | None = None,
) -> Record:
    """The record of one refused request (module docstring; README "The rejects topic")."""
    found = hints(route, status, head, last_content_type)
    primary = detail or refusal
    own = own_headers(route)
    headers: list[list[str | int]] = [
        [name.decode("latin-1"), len(value) if denied(name, own) else value.decode("latin-1")]
        for name, value in head.headers
    ]
    value: dict[str, object] = {
        "v": 1,
        "route": route.path,
        "status": status,
        "scheme": route.scheme,
        "reason": "; ".join([primary, *found]),
        "refusal": refusal,
        "hints": found,
        "source_ip": source_ip,
        "received_at": received_at_ms,
        "method": head.method.decode("latin-1"),
        "headers": headers,
        "content_length": None if head.chunked else head.content_length,
        "body_size": len(body),
        "body_complete": body_complete,
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    capture = min(route.config.capture_rejected_body, MAX_CAPTURE_BYTES)
    if capture:
        value["body_prefix_b64"] = base64.b64encode(body[:capture]).decode("ascii")
    return Record(
        topic=topic,
        key=route.path.encode(),
        value=orjson.dumps(value),
        headers=(
            ("hookd-route", route.path.encode()),
            ("hookd-status", str(status).encode()),
            ("content-type", b"application/json"),
        ),
        timestamp_ms=received_at_ms,
    )


class Rejects:
    """Per-worker state of the rejects topic: a token bucket and the last accepted
    content-type per route. ``clock``: monotonic seconds (the buckets). A refusal's
    ``received_at`` is the caller's reading of the wall clock, as an accepted record's is."""

    def __init__(
        self,
        topic: str,
        send: Callable[[Record], None],
        dropped: Callable[[str], None],
        *,
        rate: float = RATE_PER_S,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self._send = send
        self._dropped = dropped
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._content_types: dict[str, bytes] = {}

    def accepted(self, route: Route, head: Head) -> None:
        """A request on ``route`` verified: remember its content-type."""
        content_type = Headers(head.headers).first(b"content-type")
        if content_type is not None:
            self._content_types[route.path] = content_type

    def refused(
        self,
        route: Route,
        status: int,
        refusal: str,
        head: Head,
        parts: Sequence[bytes],
        source_ip: str,
        *,
        received_at_ms: int,
        complete: bool = False,
        detail: str | None = None,
    ) -> Record | None:
        """Write the record of a refused request unless the route's bucket is empty (then
        count it dropped); return the record sent, if any. Never raises."""
        try:
            now = self._clock()
            bucket = self._buckets.get(route.path)
            if bucket is None:
                bucket = self._buckets[route.path] = TokenBucket(self._rate, self._burst, now)
            if not bucket.take(now):
                self._dropped(route.path)
                return None
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            record = reject_record(
                topic=self.topic,
                route=route,
                status=status,
                refusal=refusal,
                detail=detail,
                head=head,
                body=body,
                body_complete=complete,
                source_ip=source_ip,
                received_at_ms=received_at_ms,
                last_content_type=self._content_types.get(route.path),
            )
            self._send(record)
            return record
        except Exception:
            log.exception("rejects record for %s not written", route.path)
            return None


def publish_and_forget(publisher: Publisher) -> Callable[[Record], None]:
    """``send`` for :class:`Rejects`: the publisher's ``publish``, nobody waiting on it, never
    the spool. A record that fails (broker down, shutting down) is lost; the publisher counts
    it in ``hookd_delivery_failures_total``."""

    def send(record: Record) -> None:
        publisher.publish(record).add_done_callback(_forget)

    return send


def _forget(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception never retrieved" at garbage collection


def _media(content_type: bytes | None) -> bytes | None:
    """The media type without parameters, lower-case: a charset's spelling is no change."""
    if content_type is None:
        return None
    return content_type.split(b";", 1)[0].strip().lower()


def _quote(value: bytes) -> str:
    text = value.decode("latin-1")
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…"
