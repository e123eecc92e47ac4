"""Public-key schemes: SendGrid (ECDSA P-256) and Discord (Ed25519), via ``cryptography``.

The route holds the provider's public key(s) in ``public_key`` (a list during rotation) and no
secrets. Keys are parsed once per route. Nothing here can sign: ``sign`` raises ``CannotSign``.
"""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hookd.settings import RouteConfig
from hookd.verify.base import (
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
    decode_base64,
    decode_hex,
    json_field,
    json_object,
    signature_header,
)


class PublicKeyVerifier(Verifier):
    """Common part: ``public_key`` required, ``secrets`` refused."""

    options = frozenset({"public_key"})
    needs_secrets = False
    key_format: ClassVar[str]

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        if route.secrets:
            raise SchemeConfigError(
                "secrets", f'scheme "{self.scheme}" verifies with public_key, not secrets'
            )
        if not route.public_key:
            raise SchemeConfigError(
                "public_key", f'scheme "{self.scheme}" needs the provider\'s {self.key_format}'
            )


_ECDSA = ec.ECDSA(hashes.SHA256())


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid shows the key as base64 DER (SubjectPublicKeyInfo); PEM is accepted too."""
    try:
        if text.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise SchemeConfigError("public_key", "not a base64 DER or PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SchemeConfigError("public_key", "sendgrid keys are ECDSA P-256 (secp256r1)")
    return key


class SendGrid(PublicKeyVerifier):
    """SendGrid Event Webhook: base64 DER ECDSA-P256/SHA-256 signature of ``{ts}{body}``."""

    scheme = "sendgrid"
    key_format = "base64 DER ECDSA public key"

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self.keys = tuple(load_sendgrid_key(k) for k in route.public_key or ())

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        signature = decode_base64(
            signature_header(headers, b"x-twilio-email-event-webhook-signature")
        )
        timestamp = signature_header(headers, b"x-twilio-email-event-webhook-timestamp")
        message = timestamp + request.body
        for key in self.keys:
            try:
                key.verify(signature, message, _ECDSA)
            except (InvalidSignature, ValueError):
                continue
            return Verified()
        raise Rejected("signature mismatch")


def load_discord_key(text: str) -> Ed25519PublicKey:
    """Discord shows the application's public key as 64 hex digits."""
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError:
        raise SchemeConfigError(
            "public_key", "discord keys are 32-byte Ed25519 keys in hex"
        ) from None


_PONG = b'{"type":1}'


class Discord(PublicKeyVerifier):
    """Discord interactions: hex Ed25519 signature of ``{ts}{body}``; PING (type 1) → PONG."""

    scheme = "discord"
    default_respond_within_s = 2.5
    key_format = "hex Ed25519 application public key"

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self.keys = tuple(load_discord_key(k) for k in route.public_key or ())

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        signature = decode_hex(signature_header(headers, b"x-signature-ed25519"))
        timestamp = signature_header(headers, b"x-signature-timestamp")
        message = timestamp + request.body
        for key in self.keys:
            try:
                key.verify(signature, message)
            except (InvalidSignature, ValueError):
                continue
            return _interaction(request.body)
        raise Rejected("signature mismatch")


def _interaction(body: bytes) -> Verified:
    document = json_object(body)
    event_type = json_field(document, "type")
    if event_type == b"1":
        return Verified(event_type=event_type, reply=_PONG)
    return Verified(delivery_id=json_field(document, "id"), event_type=event_type)
