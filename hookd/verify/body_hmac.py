"""Schemes that sign the body alone: one HMAC, one header, an optional prefix.

Segment, GitHub, Shopify, Typeform, Intercom, Bitbucket (one signature), PagerDuty (a list of
``v1=`` signatures) and Linear (a body HMAC whose freshness is carried inside the body).
"""

from __future__ import annotations

from typing import ClassVar

from hookd.settings import RouteConfig
from hookd.verify.base import (
    DECODERS,
    ENCODERS,
    NOT_JSON,
    Mac,
    Rejected,
    Request,
    Verified,
    Verifier,
    any_mac_matches,
    check_timestamp,
    delivery_id_header,
    hex_candidates,
    keyed_macs,
    mac_of,
    optional_signature_header,
    parse_int,
    parse_json,
    signature_header,
    strip_prefix,
)


class BodyHmac(Verifier):
    """``header: prefix + encode(HMAC(secret, body))``."""

    header: ClassVar[bytes]
    algorithm: ClassVar[str]
    encoding: ClassVar[str]
    prefix: ClassVar[bytes] = b""
    delivery_id_header: ClassVar[bytes | None] = None
    event_type_header: ClassVar[bytes | None] = None

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        # Resolved once per route: verify is on the hot path.
        self._decode = DECODERS[self.encoding]
        #: One keyed HMAC state per secret, in the route's order.
        self.macs = keyed_macs(self.secrets, self.algorithm)

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        value = strip_prefix(signature_header(headers, self.header), self.prefix)
        candidate = self._decode(value)
        if not any_mac_matches(self.macs, request.body, (candidate,)):
            raise Rejected("signature mismatch")
        return self._verified(request)

    def _verified(self, request: Request) -> Verified:
        headers = request.headers
        return Verified(
            delivery_id=delivery_id_header(headers, self.delivery_id_header)
            if self.delivery_id_header
            else None,
            event_type=headers.first(self.event_type_header) if self.event_type_header else None,
        )

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return [(self.header.decode(), self.signature(self.macs[0], body))]

    def signature(self, mac: Mac, body: bytes) -> str:
        """One signature as the header spells it (prefix and encoding), under one state."""
        return self.prefix.decode() + ENCODERS[self.encoding](mac_of(mac, body))


class Segment(BodyHmac):
    """Segment: ``X-Signature`` = hex HMAC-SHA1 of the body."""

    scheme = "segment"
    header = b"x-signature"
    algorithm = "sha1"
    encoding = "hex"


class GitHub(BodyHmac):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``."""

    scheme = "github"
    default_respond_within_s = 8.0
    default_forward_headers = (
        "x-github-hook-id",
        "x-github-hook-installation-target-id",
        "x-github-hook-installation-target-type",
        "x-github-enterprise-host",
        "x-github-enterprise-version",
    )
    foreign_secret_prefixes = (
        ("ghp_", "a GitHub personal access token"),
        ("github_pat_", "a GitHub fine-grained personal access token"),
        ("gho_", "a GitHub OAuth token"),
        ("ghs_", "a GitHub App installation token"),
    )
    header = b"x-hub-signature-256"
    algorithm = "sha256"
    encoding = "hex"
    prefix = b"sha256="
    delivery_id_header = b"x-github-delivery"
    event_type_header = b"x-github-event"


class Shopify(BodyHmac):
    """Shopify: ``X-Shopify-Hmac-Sha256`` = base64 HMAC-SHA256 with the app's client secret."""

    scheme = "shopify"
    default_respond_within_s = 4.0
    default_forward_headers = (
        "x-shopify-shop-domain",
        "x-shopify-api-version",
        "x-shopify-topic",
        "x-shopify-webhook-id",
        "x-shopify-event-id",
        "x-shopify-triggered-at",
    )
    foreign_secret_prefixes = (
        ("shpat_", "a Shopify Admin API access token"),
        ("shpca_", "a Shopify custom app access token"),
        ("shppa_", "a Shopify private app password"),
        ("shpua_", "a Shopify user access token"),
    )
    header = b"x-shopify-hmac-sha256"
    algorithm = "sha256"
    encoding = "base64"
    delivery_id_header = b"x-shopify-webhook-id"
    event_type_header = b"x-shopify-topic"


class Typeform(BodyHmac):
    """Typeform: ``Typeform-Signature: sha256=<base64 HMAC-SHA256>``."""

    scheme = "typeform"
    header = b"typeform-signature"
    algorithm = "sha256"
    encoding = "base64"
    prefix = b"sha256="


class Intercom(BodyHmac):
    """Intercom: ``X-Hub-Signature: sha1=<hex HMAC-SHA1>`` with the app's client secret."""

    scheme = "intercom"
    header = b"x-hub-signature"
    algorithm = "sha1"
    encoding = "hex"
    prefix = b"sha1="


class Bitbucket(BodyHmac):
    """Bitbucket Cloud: ``X-Hub-Signature: sha256=<hex HMAC-SHA256>``."""

    scheme = "bitbucket"
    header = b"x-hub-signature"
    algorithm = "sha256"
    encoding = "hex"
    prefix = b"sha256="
    delivery_id_header = b"x-request-uuid"
    event_type_header = b"x-event-key"
    default_forward_headers = ("x-hook-uuid", "x-attempt-number")


class PagerDuty(BodyHmac):
    """PagerDuty v3: ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`` — one per active secret.

    Entries of other versions are ignored (a future ``v2`` must not make us fall back to
    anything weaker); at least one well-formed ``v1`` must be there."""

    scheme = "pagerduty"
    header = b"x-pagerduty-signature"
    algorithm = "sha256"
    encoding = "hex"
    prefix = b"v1="

    def verify(self, request: Request, now: float) -> Verified:
        value = signature_header(request.headers, self.header)
        v1 = [item.strip()[3:] for item in value.split(b",") if item.strip().startswith(b"v1=")]
        candidates = hex_candidates(v1)
        if not candidates:
            raise Rejected("malformed x-pagerduty-signature header: no v1 signature")
        if not any_mac_matches(self.macs, request.body, candidates):
            raise Rejected("signature mismatch")
        return Verified()


_LINEAR_TS_FIELD = b'"webhookTimestamp"'


class Linear(BodyHmac):
    """Linear: ``Linear-Signature`` = hex HMAC-SHA256 of the body; freshness in ms, ±60 s.

    The time comes from the body's ``webhookTimestamp`` (signed) and/or the ``Linear-Timestamp``
    header (what @linear/sdk prefers, but unsigned). Every one present must be fresh, and at
    least one must be present — a replay cannot refresh the signed one by adding the header."""

    scheme = "linear"
    foreign_secret_prefixes = (("lin_api_", "a Linear API key"),)
    header = b"linear-signature"
    algorithm = "sha256"
    encoding = "hex"
    default_tolerance_s = 60.0
    delivery_id_header = b"linear-delivery"
    event_type_header = b"linear-event"
    timestamp_header: ClassVar[bytes] = b"linear-timestamp"

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        candidate = self._decode(signature_header(headers, self.header))
        header_ts = optional_signature_header(headers, self.timestamp_header)
        if not any_mac_matches(self.macs, request.body, (candidate,)):
            raise Rejected("signature mismatch")
        sent_ms: list[int] = []
        if header_ts is not None:
            sent_ms.append(parse_int(header_ts, "linear-timestamp header"))
        if _LINEAR_TS_FIELD in request.body:
            sent_ms.append(_body_timestamp(request.body))
        if not sent_ms:
            raise Rejected("missing timestamp: neither webhookTimestamp nor linear-timestamp")
        for ms in sent_ms:
            check_timestamp(ms / 1000, now, self.tolerance_s, reject_future=True)
        return self._verified(request)

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return [*super().sign(body, target, now), ("Linear-Timestamp", str(int(now * 1000)))]


def _body_timestamp(body: bytes) -> int:
    document = parse_json(body)
    if document is NOT_JSON:
        raise Rejected("malformed body: not JSON")
    value = document.get("webhookTimestamp") if isinstance(document, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Rejected("malformed webhookTimestamp")
    return value
