"""Stripe-like schemes: one header holding a timestamp and a list of versioned signatures.

Stripe (``t=…,v1=…``), Calendly (``t=…,v1=…``) and Paddle (``ts=…;h1=…``) sign
``{t}<sep>{body}`` with HMAC-SHA256, hex. Only the current version's entries count (Stripe's
test-mode ``v0`` and any future version are ignored, never used as a fallback); every entry of
that version is tried, so a provider-side secret rotation (two signatures) just works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from hookd.settings import RouteConfig
from hookd.verify.base import (
    Mac,
    Rejected,
    Request,
    Verified,
    Verifier,
    any_mac_matches,
    check_timestamp,
    hex_candidates,
    json_field,
    json_object,
    keyed_macs,
    mac_of,
    only_one,
    parse_int,
    parse_pairs,
    signature_header,
)


class TimestampedHmac(Verifier):
    """``header: <ts_key>=<t><item_sep><sig_key>=<hex>[<item_sep><sig_key>=<hex>…]``."""

    header: ClassVar[bytes]
    item_separator: ClassVar[bytes] = b","
    timestamp_key: ClassVar[bytes] = b"t"
    signature_key: ClassVar[bytes] = b"v1"
    #: Between the timestamp and the body in the signed message.
    message_separator: ClassVar[bytes] = b"."
    #: Top-level body members reported as delivery id / event type (parsed only after the
    #: signature passed).
    id_field: ClassVar[str | None] = None
    type_field: ClassVar[str | None] = None

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self._header_name = self.header.decode()
        #: One keyed HMAC-SHA256 state per secret, in the route's order.
        self.macs = keyed_macs(self.secrets, "sha256")

    def verify(self, request: Request, now: float) -> Verified:
        value = signature_header(request.headers, self.header)
        pairs = parse_pairs(value, self.item_separator)
        timestamp = only_one(pairs, self.timestamp_key, self.header)
        sent_at = parse_int(timestamp, f"{self._header_name} timestamp")
        candidates = hex_candidates(v for k, v in pairs if k == self.signature_key)
        if not candidates:
            raise Rejected(
                f"malformed {self._header_name} header: no {self.signature_key.decode()} signature"
            )
        check_timestamp(sent_at, now, self.tolerance_s, reject_future=False)
        if not any_mac_matches(self.macs, self._signed(timestamp, request.body), candidates):
            raise Rejected("signature mismatch")
        if self.id_field is None:
            return Verified()
        return self._from_body(request.body)

    def _from_body(self, body: bytes) -> Verified:
        document = json_object(body)
        return Verified(
            delivery_id=json_field(document, self.id_field) if self.id_field else None,
            event_type=json_field(document, self.type_field) if self.type_field else None,
        )

    def _signed(self, timestamp: bytes, body: bytes) -> bytes:
        return timestamp + self.message_separator + body

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return [(self._header_name, self.header_value(str(int(now)), body, self.macs[:1]))]

    def header_value(self, timestamp: str, body: bytes, macs: Sequence[Mac]) -> str:
        """The signature header as the provider sends it: the timestamp, then one signature
        per state in ``macs`` (``hookd sign``: the first secret's; ``hookd send``: every
        secret's, as during a rotation)."""
        message = self._signed(timestamp.encode(), body)
        items = [f"{self.timestamp_key.decode()}={timestamp}"]
        items += [f"{self.signature_key.decode()}={mac_of(mac, message).hex()}" for mac in macs]
        return self.item_separator.decode().join(items)


class Stripe(TimestampedHmac):
    """Stripe: ``Stripe-Signature: t=…,v1=…``; the key is the whole ``whsec_…`` string.

    Older than the tolerance (300 s) is refused; a future timestamp is not (stripe-python)."""

    scheme = "stripe"
    secret_prefix = "whsec_"
    expected_secret_prefix = "whsec_"
    foreign_secret_prefixes = (
        ("sk_live_", "a Stripe secret API key"),
        ("sk_test_", "a Stripe secret API key"),
        ("rk_live_", "a Stripe restricted API key"),
        ("rk_test_", "a Stripe restricted API key"),
        ("pk_live_", "a Stripe publishable key"),
        ("pk_test_", "a Stripe publishable key"),
    )
    header = b"stripe-signature"
    default_tolerance_s = 300.0
    id_field = "id"
    type_field = "type"


class Calendly(TimestampedHmac):
    """Calendly: ``Calendly-Webhook-Signature: t=…,v1=…``; older than 3 minutes is refused."""

    scheme = "calendly"
    default_respond_within_s = 12.0
    header = b"calendly-webhook-signature"
    default_tolerance_s = 180.0


class Paddle(TimestampedHmac):
    """Paddle Billing: ``Paddle-Signature: ts=…;h1=…[;h1=…]`` over ``{ts}:{body}``.

    Paddle's SDKs allow 5 s between sending and verifying (older is refused). The key is the
    whole secret, ``pdl_ntfset_…`` included."""

    scheme = "paddle"
    secret_prefix = "pdl_ntfset_"
    expected_secret_prefix = "pdl_ntfset_"
    foreign_secret_prefixes = (
        ("pdl_live_apikey_", "a Paddle API key"),
        ("pdl_sdbx_apikey_", "a Paddle sandbox API key"),
    )
    default_respond_within_s = 4.0
    header = b"paddle-signature"
    item_separator = b";"
    timestamp_key = b"ts"
    signature_key = b"h1"
    message_separator = b":"
    default_tolerance_s = 5.0
    id_field = "event_id"
    type_field = "event_type"
