"""``v0`` schemes: ``v0=<hex HMAC-SHA256("v0:{ts}:{body}")>`` plus a timestamp header.

Slack and Zoom share the construction (±300 s, integer seconds) and both send a handshake
when an endpoint is registered, answered here only after the signature verified: Slack's
``url_verification`` (echo the challenge) and Zoom's ``endpoint.url_validation`` (prove the
secret by HMAC-ing a plain token).
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from hookd.settings import RouteConfig
from hookd.verify.base import (
    Mac,
    Rejected,
    Request,
    Verified,
    Verifier,
    check_timestamp,
    decode_hex,
    json_object,
    keyed_macs,
    mac_of,
    matching_mac,
    parse_int,
    signature_header,
    strip_prefix,
)


class V0Hmac(Verifier):
    """``signature_header: v0=<hex>`` over ``v0:{timestamp_header}:{body}``."""

    signature_header: ClassVar[bytes]
    timestamp_header: ClassVar[bytes]
    #: The body holds a handshake only if it contains this; cheap test before any parsing.
    handshake_marker: ClassVar[bytes]
    default_tolerance_s = 300.0

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self._ts_what = f"{self.timestamp_header.decode()} header"
        self._macs = keyed_macs(self.secrets, "sha256")

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        value = strip_prefix(signature_header(headers, self.signature_header), b"v0=")
        candidate = decode_hex(value)
        timestamp = signature_header(headers, self.timestamp_header)
        check_timestamp(
            parse_int(timestamp, self._ts_what), now, self.tolerance_s, reject_future=True
        )
        index = matching_mac(self._macs, _signed(timestamp, request.body), (candidate,))
        if index < 0:
            raise Rejected("signature mismatch")
        if self.handshake_marker in request.body:
            reply = self._handshake(request.body, self._macs[index])
            if reply is not None:
                return Verified(reply=reply)
        return Verified()

    def _handshake(self, body: bytes, mac: Mac) -> bytes | None:
        """The reply to a handshake in ``body``; ``mac`` is the state of the secret that
        verified it. ``None`` when the body is no handshake after all."""
        raise NotImplementedError

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        timestamp = str(int(now))
        signature = mac_of(self._macs[0], _signed(timestamp.encode(), body)).hex()
        return [
            (self.signature_header.decode(), "v0=" + signature),
            (self.timestamp_header.decode(), timestamp),
        ]


def _signed(timestamp: bytes, body: bytes) -> bytes:
    return b"v0:" + timestamp + b":" + body


class Slack(V0Hmac):
    """Slack: ``X-Slack-Signature`` / ``X-Slack-Request-Timestamp``; the signing secret is used
    as UTF-8 text, not decoded."""

    scheme = "slack"
    default_forward_headers = ("x-slack-retry-num", "x-slack-retry-reason")
    foreign_secret_prefixes = (
        ("xoxb-", "a Slack bot token"),
        ("xoxp-", "a Slack user token"),
        ("xapp-", "a Slack app-level token"),
    )
    default_respond_within_s = 2.5
    signature_header = b"x-slack-signature"
    timestamp_header = b"x-slack-request-timestamp"
    handshake_marker = b"url_verification"

    def _handshake(self, body: bytes, mac: Mac) -> bytes | None:
        document = json_object(body)
        if document is None or document.get("type") != "url_verification":
            return None
        challenge = document.get("challenge")
        if not isinstance(challenge, str):
            raise Rejected("malformed url_verification: no challenge")
        return orjson.dumps({"challenge": challenge})


class Zoom(V0Hmac):
    """Zoom: ``x-zm-signature`` / ``x-zm-request-timestamp`` with the app's secret token."""

    scheme = "zoom"
    default_respond_within_s = 2.5
    signature_header = b"x-zm-signature"
    timestamp_header = b"x-zm-request-timestamp"
    handshake_marker = b"endpoint.url_validation"

    def _handshake(self, body: bytes, mac: Mac) -> bytes | None:
        document = json_object(body)
        if document is None or document.get("event") != "endpoint.url_validation":
            return None
        payload = document.get("payload")
        token = payload.get("plainToken") if isinstance(payload, dict) else None
        if not isinstance(token, str):
            raise Rejected("malformed endpoint.url_validation: no plainToken")
        encrypted = mac_of(mac, token.encode()).hex()
        return orjson.dumps({"plainToken": token, "encryptedToken": encrypted})
