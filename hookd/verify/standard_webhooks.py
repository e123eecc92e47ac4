"""Standard Webhooks (https://www.standardwebhooks.com), as sent by Svix and many others.

``webhook-signature: v1,<base64> [v1,<base64> …]`` over ``{id}.{timestamp}.{body}`` with the
base64-decoded part of the ``whsec_…`` secret. Svix sends the same headers as ``svix-*``; like
the svix SDK, a ``svix-*`` header wins over its ``webhook-*`` twin. Entries of other versions
(e.g. the asymmetric ``v1a``) are ignored, not verified and not a fallback.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence

from hookd.settings import RouteConfig
from hookd.verify.base import (
    Headers,
    Mac,
    Rejected,
    Request,
    Verified,
    Verifier,
    any_mac_matches,
    base64_candidates,
    check_timestamp,
    keyed_macs,
    mac_of,
    optional_signature_header,
    parse_int,
)

_SECRET_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """``whsec_<base64>`` (or bare base64, padding optional) → key bytes, as the SDKs do;
    ``ValueError`` when it is not base64 or decodes to nothing (``"whsec_"``, ``"="``)."""
    raw = secret.removeprefix(_SECRET_PREFIX)
    if not raw.strip().rstrip("="):
        raise ValueError(_EMPTY_KEY)
    raw += "=" * (-len(raw) % 4)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "standard-webhooks secrets are base64, optionally prefixed whsec_"
        ) from None
    if not key:
        raise ValueError(_EMPTY_KEY)
    return key


_EMPTY_KEY = (
    "the base64 key after whsec_ is empty: an empty secret would accept anything "
    "(is a variable empty?)"
)


def _header(headers: Headers, svix: bytes, standard: bytes) -> bytes:
    value = optional_signature_header(headers, svix)
    if value is None:
        value = optional_signature_header(headers, standard)
    if not value:
        raise Rejected(f"missing {standard.decode()} header")
    return value


class StandardWebhooks(Verifier):
    """Standard Webhooks / Svix: two-sided timestamp tolerance (300 s), integer seconds."""

    scheme = "standard-webhooks"
    default_respond_within_s = 12.0
    default_tolerance_s = 300.0

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        #: One keyed HMAC-SHA256 state per secret, in the route's order.
        self.macs = keyed_macs(self.secrets, "sha256")

    @classmethod
    def secret_key(cls, secret: str) -> bytes:
        """The base64-decoded part after ``whsec_``: the key the SDKs use."""
        return decode_secret(secret)

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        msg_id = _header(headers, b"svix-id", b"webhook-id")
        timestamp = _header(headers, b"svix-timestamp", b"webhook-timestamp")
        signatures = _header(headers, b"svix-signature", b"webhook-signature")
        check_timestamp(
            parse_int(timestamp, "webhook-timestamp header"),
            now,
            self.tolerance_s,
            reject_future=True,
        )
        v1 = []
        for entry in signatures.split(b" "):
            version, sep, signature = entry.partition(b",")
            if sep and version == b"v1":
                v1.append(signature)
        candidates = base64_candidates(v1)
        if not candidates:
            raise Rejected("malformed webhook-signature header: no v1 signature")
        message = _signed(msg_id, timestamp, request.body)
        if not any_mac_matches(self.macs, message, candidates):
            raise Rejected("signature mismatch")
        return Verified(delivery_id=msg_id)

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return self.signed_headers(f"msg_{uuid.uuid4().hex}", str(int(now)), body, self.macs[:1])

    def signed_headers(
        self,
        msg_id: str,
        timestamp: str,
        body: bytes,
        macs: Sequence[Mac],
        prefix: str = "webhook",
    ) -> list[tuple[str, str]]:
        """``{prefix}-id``, ``-timestamp`` and ``-signature``, the last with one ``v1`` entry
        per state in ``macs`` (``hookd sign``: the first secret's; ``hookd send``: every
        secret's, as during a rotation). Svix's own headers: ``prefix="svix"``."""
        message = _signed(msg_id.encode(), timestamp.encode(), body)
        signatures = " ".join(
            "v1," + base64.b64encode(mac_of(mac, message)).decode() for mac in macs
        )
        return [
            (f"{prefix}-id", msg_id),
            (f"{prefix}-timestamp", timestamp),
            (f"{prefix}-signature", signatures),
        ]


def _signed(msg_id: bytes, timestamp: bytes, body: bytes) -> bytes:
    return b"%s.%s.%s" % (msg_id, timestamp, body)
