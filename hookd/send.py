"""``hookd send`` (and ``hookd sign``'s headers): a delivery as its provider sends it.

For a route, ``delivery`` builds what the provider would post: a sample body of the provider's
shape (or the caller's), the delivery id and event type where the provider puts them (headers
or body), its timestamp headers, and the signature exactly as the provider computes it. Where
the provider's signature header carries several signatures during a secret rotation (Stripe,
Calendly, Paddle, PagerDuty, Standard Webhooks / Svix), there is one per configured secret,
in the route's order; the other schemes sign with the route's first secret, as hookd sign does.
Asymmetric schemes (sendgrid, discord) cannot be signed: only the provider holds the private
key. Pure apart from the clock and fresh ids; ``post`` does the HTTP.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from hookd import __version__
from hookd.config import Config
from hookd.routing import Route
from hookd.verify import CannotSign
from hookd.verify.base import keyed_macs, mac_of
from hookd.verify.body_hmac import PagerDuty
from hookd.verify.standard_webhooks import StandardWebhooks
from hookd.verify.timestamped_hmac import TimestampedHmac

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

#: Why each asymmetric scheme cannot be signed here.
UNSIGNABLE = {
    "sendgrid": "SendGrid signs with an ECDSA P-256 private key that only SendGrid holds; the "
    "route has its public key. Send a test event from SendGrid (Mail Settings, Event Webhook, "
    '"Test Your Integration") instead',
    "discord": "Discord signs with an Ed25519 private key that only Discord holds; the route "
    "has the application's public key. Discord's own PING, sent when you save the Interactions "
    "Endpoint URL, is the test",
}


@dataclass(frozen=True)
class Delivery:
    """One request to post: ``headers`` hold everything but Host and Content-Length."""

    body: bytes
    headers: list[tuple[str, str]]
    #: Where the provider puts it (a header or the body), for the report; ``None`` if nowhere.
    delivery_id: str | None
    event: str | None


@dataclass(frozen=True)
class _Sample:
    """What one provider sends besides its signature."""

    #: The event type ``--event`` replaces; ``None`` where the provider sends none.
    event: str | None
    #: (delivery id, event, now) -> body
    body: Callable[[str, str, float], bytes]
    #: (delivery id, event, now) -> headers besides the signature's
    headers: Callable[[str, str, float], list[tuple[str, str]]] = lambda i, e, n: []
    #: A fresh delivery id, as the provider spells it
    make_id: Callable[[], str] = lambda: str(uuid.uuid4())
    content_type: str = JSON
    user_agent: str = f"hookd-send/{__version__}"
    #: The delivery id travels in the body (a caller's body has its own, or none); else in
    #: a header (or the signature's), fresh for every request.
    id_in_body: bool = False


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _iso(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


def _generic_body(delivery_id: str, event: str, now: float) -> bytes:
    return _json(
        {
            "id": delivery_id,
            "type": event,
            "created_at": _iso(now),
            "data": {"source": "hookd send", "message": "hookd test"},
        }
    )


_GENERIC = _Sample(event="hookd.test", body=_generic_body, id_in_body=True)

_SAMPLES: dict[str, _Sample] = {
    "segment": _Sample(
        event="hookd test",
        make_id=lambda: f"hookd-{uuid.uuid4()}",
        id_in_body=True,
        user_agent="Segment.io/1.0",
        body=lambda i, e, n: _json(
            {
                "type": "track",
                "messageId": i,
                "event": e,
                "userId": "hookd-user",
                "timestamp": _iso(n),
                "properties": {"source": "hookd send"},
            }
        ),
    ),
    "github": _Sample(
        event="push",
        user_agent="GitHub-Hookshot/hookd",
        headers=lambda i, e, n: [
            ("X-GitHub-Delivery", i),
            ("X-GitHub-Event", e),
            ("X-GitHub-Hook-ID", "123456789"),
            ("X-GitHub-Hook-Installation-Target-ID", "987654321"),
            ("X-GitHub-Hook-Installation-Target-Type", "repository"),
        ],
        body=lambda i, e, n: _json(
            {
                "ref": "refs/heads/main",
                "before": "0" * 40,
                "after": uuid.uuid4().hex + "0" * 8,
                "repository": {"id": 987654321, "full_name": "hookd/hookd-test"},
                "pusher": {"name": "hookd", "email": "hookd@example.com"},
                "sender": {"login": "hookd", "type": "User"},
                "head_commit": {"message": "hookd test", "timestamp": _iso(n)},
            }
        ),
    ),
    "stripe": _Sample(
        event="payment_intent.succeeded",
        make_id=lambda: f"evt_{_hex()}",
        id_in_body=True,
        user_agent="Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        body=lambda i, e, n: _json(
            {
                "id": i,
                "object": "event",
                "api_version": "2024-06-20",
                "created": int(n),
                "type": e,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": f"req_{_hex(14)}", "idempotency_key": None},
                "data": {
                    "object": {
                        "id": f"pi_{_hex()}",
                        "object": "payment_intent",
                        "amount": 2000,
                        "currency": "usd",
                        "status": "succeeded",
                    }
                },
            }
        ),
    ),
    "standard-webhooks": _Sample(
        event="invoice.paid",
        make_id=lambda: f"msg_{_hex(27)}",
        body=lambda i, e, n: _json(
            {"type": e, "timestamp": _iso(n), "data": {"id": f"inv_{_hex(12)}", "amount": 2000}}
        ),
    ),
    "shopify": _Sample(
        event="orders/create",
        user_agent="Shopify-Captain-Hook",
        headers=lambda i, e, n: [
            ("X-Shopify-Topic", e),
            ("X-Shopify-Webhook-Id", i),
            ("X-Shopify-Event-Id", str(uuid.uuid4())),
            ("X-Shopify-Triggered-At", _iso(n)),
            ("X-Shopify-Shop-Domain", "hookd-test.myshopify.com"),
            ("X-Shopify-API-Version", "2025-01"),
        ],
        body=lambda i, e, n: _json(
            {
                "id": int(n * 1000),
                "email": "buyer@example.com",
                "created_at": _iso(n),
                "total_price": "20.00",
                "currency": "USD",
                "line_items": [{"title": "hookd test", "quantity": 1, "price": "20.00"}],
            }
        ),
    ),
    "slack": _Sample(
        event="app_mention",
        make_id=lambda: f"Ev{_hex(10).upper()}",
        id_in_body=True,
        user_agent="Slackbot 1.0 (+https://api.slack.com/robots)",
        body=lambda i, e, n: _json(
            {
                "token": "hookd-verification-token",
                "team_id": "T0HOOKD",
                "api_app_id": "A0HOOKD",
                "type": "event_callback",
                "event_id": i,
                "event_time": int(n),
                "event": {"type": e, "user": "U0HOOKD", "text": "hookd test", "ts": f"{n:.6f}"},
            }
        ),
    ),
    "zoom": _Sample(
        event="meeting.started",
        user_agent="Zoom Marketplace/1.0a",
        headers=lambda i, e, n: [("x-zm-trackingid", i)],
        body=lambda i, e, n: _json(
            {
                "event": e,
                "event_ts": int(n * 1000),
                "payload": {
                    "account_id": "hookdAccount",
                    "object": {"id": "85042416590", "topic": "hookd test", "start_time": _iso(n)},
                },
            }
        ),
    ),
    "twilio": _Sample(
        event=None,
        content_type=FORM,
        user_agent="TwilioProxy/1.1",
        headers=lambda i, e, n: [("I-Twilio-Idempotency-Token", i)],
        body=lambda i, e, n: urlencode(
            {
                "ToCountry": "US",
                "SmsMessageSid": (sid := f"SM{uuid.uuid4().hex}"),
                "NumMedia": "0",
                "SmsSid": sid,
                "SmsStatus": "received",
                "Body": "hookd test",
                "To": "+15005550006",
                "MessageSid": sid,
                "AccountSid": f"AC{_hex(32)}",
                "From": "+15005550001",
                "ApiVersion": "2010-04-01",
            }
        ).encode(),
    ),
    "gitlab": _Sample(
        event="Push Hook",
        user_agent="GitLab/17.5.0",
        headers=lambda i, e, n: [
            ("X-Gitlab-Event", e),
            ("X-Gitlab-Event-UUID", i),
            ("X-Gitlab-Webhook-UUID", "6f4f8c1e-2f4b-4c43-9d8d-5a0e1c2b3d4f"),
            ("X-Gitlab-Instance", "https://gitlab.example.com"),
        ],
        body=lambda i, e, n: _json(
            {
                "object_kind": "push",
                "event_name": "push",
                "ref": "refs/heads/main",
                "checkout_sha": uuid.uuid4().hex + "0" * 8,
                "user_username": "hookd",
                "project": {"id": 15, "path_with_namespace": "hookd/hookd-test"},
                "commits": [{"message": "hookd test", "timestamp": _iso(n)}],
            }
        ),
    ),
    "paddle": _Sample(
        event="transaction.completed",
        make_id=lambda: f"evt_{_hex(26)}",
        id_in_body=True,
        body=lambda i, e, n: _json(
            {
                "event_id": i,
                "event_type": e,
                "occurred_at": _iso(n),
                "notification_id": f"ntf_{_hex(26)}",
                "data": {"id": f"txn_{_hex(26)}", "status": "completed", "currency_code": "USD"},
            }
        ),
    ),
    "linear": _Sample(
        event="Issue",
        user_agent="Linear-Webhook",
        headers=lambda i, e, n: [("Linear-Delivery", i), ("Linear-Event", e)],
        body=lambda i, e, n: _json(
            {
                "action": "create",
                "type": e,
                "createdAt": _iso(n),
                "data": {"id": str(uuid.uuid4()), "title": "hookd test", "identifier": "HK-1"},
                "url": "https://linear.app/hookd/issue/HK-1",
                "organizationId": str(uuid.uuid4()),
                "webhookTimestamp": int(n * 1000),
                "webhookId": str(uuid.uuid4()),
            }
        ),
    ),
    "hubspot": _Sample(
        event="contact.creation",
        make_id=lambda: str(uuid.uuid4().int % 10**10),
        id_in_body=True,
        user_agent="HubSpot Connect 2.0 (http://dev.hubspot.com/)",
        body=lambda i, e, n: _json(
            [
                {
                    "eventId": int(i),
                    "subscriptionId": 2345678,
                    "portalId": 62515,
                    "appId": 54321,
                    "occurredAt": int(n * 1000),
                    "subscriptionType": e,
                    "attemptNumber": 0,
                    "objectId": 123456,
                    "changeFlag": "CREATED",
                    "changeSource": "CRM",
                }
            ]
        ),
    ),
    "square": _Sample(
        event="payment.created",
        id_in_body=True,
        user_agent="Square Connect v2",
        body=lambda i, e, n: _json(
            {
                "merchant_id": "MLHOOKD0TEST",
                "type": e,
                "event_id": i,
                "created_at": _iso(n),
                "data": {
                    "type": e.partition(".")[0],
                    "id": (pid := _hex(22)),
                    "object": {"payment": {"id": pid, "status": "APPROVED"}},
                },
            }
        ),
    ),
    "pagerduty": _Sample(
        event="incident.triggered",
        make_id=lambda: f"01{_hex(24).upper()}",
        id_in_body=True,
        user_agent="PagerDuty-Webhook/V3.0",
        headers=lambda i, e, n: [
            ("X-Webhook-Id", str(uuid.uuid4())),
            ("X-Webhook-Subscription", "PHOOKD1"),
        ],
        body=lambda i, e, n: _json(
            {
                "event": {
                    "id": i,
                    "event_type": e,
                    "resource_type": e.partition(".")[0],
                    "occurred_at": _iso(n),
                    "data": {"id": "PHOOKD2", "type": "incident", "title": "hookd test"},
                }
            }
        ),
    ),
    "typeform": _Sample(
        event="form_response",
        make_id=lambda: _hex(26).upper(),
        id_in_body=True,
        user_agent="Typeform Webhooks",
        body=lambda i, e, n: _json(
            {
                "event_id": i,
                "event_type": e,
                "form_response": {
                    "form_id": "hookdF0rm",
                    "token": _hex(32),
                    "submitted_at": _iso(n),
                    "answers": [{"type": "text", "text": "hookd test"}],
                },
            }
        ),
    ),
    "intercom": _Sample(
        event="conversation.user.created",
        make_id=lambda: f"notif_{uuid.uuid4()}",
        id_in_body=True,
        body=lambda i, e, n: _json(
            {
                "type": "notification_event",
                "app_id": "hookdapp",
                "id": i,
                "topic": e,
                "delivery_attempts": 1,
                "created_at": int(n),
                "data": {"type": "notification_event_data", "item": {"type": "conversation"}},
            }
        ),
    ),
    "calendly": _Sample(
        event="invitee.created",
        id_in_body=True,
        body=lambda i, e, n: _json(
            {
                "event": e,
                "created_at": _iso(n),
                "created_by": "https://api.calendly.com/users/HOOKD",
                "payload": {
                    "uri": f"https://api.calendly.com/scheduled_events/HOOKD/invitees/{i}",
                    "email": "invitee@example.com",
                    "name": "hookd test",
                    "status": "active",
                },
            }
        ),
    ),
    "bitbucket": _Sample(
        event="repo:push",
        user_agent="Bitbucket-Webhooks/2.0",
        headers=lambda i, e, n: [
            ("X-Event-Key", e),
            ("X-Request-UUID", i),
            ("X-Hook-UUID", "{8d3c1f2a-7b6e-4d5c-9a8b-1e2f3a4b5c6d}"),
            ("X-Attempt-Number", "1"),
        ],
        body=lambda i, e, n: _json(
            {
                "actor": {"display_name": "hookd", "type": "user"},
                "repository": {"full_name": "hookd/hookd-test", "type": "repository"},
                "push": {"changes": [{"new": {"name": "main", "type": "branch"}}]},
            }
        ),
    ),
}
_SAMPLES["svix"] = _SAMPLES["standard-webhooks"]


def sample(scheme: str) -> _Sample:
    return _SAMPLES.get(scheme, _GENERIC)


def default_event(scheme: str) -> str | None:
    """The event type a sample delivery of ``scheme`` carries without ``--event``."""
    return sample(scheme).event


def delivery(
    route: Route,
    *,
    body: bytes | None = None,
    event: str | None = None,
    target: bytes | None = None,
    now: float | None = None,
) -> Delivery:
    """What the provider of ``route`` would post: ``body`` (default: a fresh sample of the
    provider's shape, ``event`` its event type) and every header, signature included.
    ``target`` is the request target the signature covers where the scheme signs it
    (default: the route's path). Raises ``CannotSign`` for an asymmetric scheme."""
    if route.scheme in UNSIGNABLE:
        raise CannotSign(
            f'route {route.path} uses scheme "{route.scheme}", which hookd cannot sign: '
            + UNSIGNABLE[route.scheme]
        )
    now = time.time() if now is None else now
    target = route.path_bytes if target is None else target
    profile = sample(route.scheme)
    event = None if profile.event is None else (event or profile.event)
    made_id = profile.make_id()
    delivery_id: str | None = made_id
    if body is None:
        body = profile.body(made_id, event or "", now)
    elif profile.id_in_body:
        delivery_id = None  # in the caller's body, if anywhere
    headers = [("Content-Type", profile.content_type), ("User-Agent", profile.user_agent)]
    headers += profile.headers(delivery_id or profile.make_id(), event or "", now)
    signature, signed_id = signature_headers(route, body, target, now, delivery_id)
    headers += signature
    return Delivery(body, headers, signed_id or delivery_id, event)


def signature_headers(
    route: Route, body: bytes, target: bytes, now: float, delivery_id: str | None = None
) -> tuple[list[tuple[str, str]], str | None]:
    """The signature (and signed timestamp / id) headers as the route's provider sends them,
    and the delivery id when the signature carries one (Standard Webhooks, ``hmac`` with
    ``id_header``). One signature per secret where the header carries several."""
    verifier = route.verifier
    ts = str(int(now))
    if isinstance(verifier, StandardWebhooks):
        msg_id = delivery_id or f"msg_{_hex(27)}"
        prefix = "svix" if route.scheme == "svix" else "webhook"
        return verifier.signed_headers(msg_id, ts, body, verifier.macs, prefix), msg_id
    if isinstance(verifier, TimestampedHmac):
        value = verifier.header_value(ts, body, verifier.macs)
        return [(_title(verifier.header.decode()), value)], None
    if isinstance(verifier, PagerDuty):
        value = ",".join(verifier.signature(mac, body) for mac in verifier.macs)
        return [("X-PagerDuty-Signature", value)], None
    headers = [(_title(name), value) for name, value in verifier.sign(body, target, now)]
    if route.scheme == "github":  # GitHub sends the legacy SHA-1 signature too
        (sha1,) = keyed_macs(verifier.secrets[:1], "sha1")
        headers.append(("X-Hub-Signature", "sha1=" + mac_of(sha1, body).hex()))
    id_header = getattr(verifier, "id_header", None) if route.scheme == "hmac" else None
    signed_id = next(
        (value for name, value in headers if id_header and name.lower() == id_header.decode()),
        None,
    )
    return headers, signed_id


def _title(name: str) -> str:
    """``stripe-signature`` -> ``Stripe-Signature``; names already cased stay as they are."""
    if name != name.lower():
        return name
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def default_url(config: Config, route: Route) -> str:
    """The route on the config's own listener (a wildcard address as 127.0.0.1)."""
    listen = config.server.listen_address
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if config.server.tls_cert is not None else "http"
    return f"{scheme}://{host}:{listen.port}{route.path}"


def target_of(url: str) -> bytes:
    """The request target (path and query) a request to ``url`` carries."""
    parts = urlsplit(url)
    return ((parts.path or "/") + (f"?{parts.query}" if parts.query else "")).encode()


@dataclass
class Answer:
    status: int
    reason: str
    body: bytes
    seconds: float


@dataclass
class Sender:
    """Posts deliveries to one URL over one keep-alive connection (reopened when closed)."""

    url: str
    timeout_s: float = 30.0
    _connection: http.client.HTTPConnection | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {self.url!r}")
        self._parts = parts

    def post(self, delivery: Delivery) -> Answer:
        connection = self._connect()
        headers = dict(delivery.headers)
        started = time.perf_counter()
        try:
            connection.request("POST", target_of(self.url).decode(), delivery.body, headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        seconds = time.perf_counter() - started
        if response.will_close:
            self.close()
        return Answer(response.status, response.reason, answer, seconds)

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            parts = self._parts
            if parts.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    parts.hostname or "",
                    parts.port,
                    timeout=self.timeout_s,
                    context=ssl.create_default_context(),
                )
            else:
                self._connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=self.timeout_s
                )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def report_line(index: int, count: int, delivery: Delivery, answer: Answer) -> str:
    """``1/3 200 OK 4.1 ms id=… event=… {answer}``: one line per request."""
    text = answer.body.decode("utf-8", "replace").strip().replace("\n", " ")
    if len(text) > 200:
        text = text[:200] + "…"
    parts = [
        f"{index}/{count}",
        str(answer.status),
        answer.reason,
        f"{answer.seconds * 1000:.1f} ms",
    ]
    if delivery.delivery_id is not None:
        parts.append(f"id={delivery.delivery_id}")
    if delivery.event:
        parts.append(f"event={delivery.event}")
    if text:
        parts.append(text)
    return " ".join(parts)
