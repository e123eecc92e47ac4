"""Schemes that sign the body alone: one HMAC, one header, an optional prefix."""

from __future__ import annotations

from typing import ClassVar

from hookd.verify.base import (
    DECODERS,
    DIGESTS,
    ENCODERS,
    Rejected,
    Request,
    Verified,
    Verifier,
    any_digest_matches,
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

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        value = strip_prefix(headers.require(self.header).strip(), self.prefix)
        candidate = DECODERS[self.encoding](value)
        if not any_digest_matches(
            DIGESTS[self.algorithm], self.secrets, request.body, (candidate,)
        ):
            raise Rejected("signature mismatch")
        return Verified(
            delivery_id=headers.first(self.delivery_id_header) if self.delivery_id_header else None,
            event_type=headers.first(self.event_type_header) if self.event_type_header else None,
        )

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        raw = DIGESTS[self.algorithm](self.secrets[0], body)
        return [(self.header.decode(), self.prefix.decode() + ENCODERS[self.encoding](raw))]


class Segment(BodyHmac):
    """Segment: ``X-Signature`` = hex HMAC-SHA1 of the body."""

    scheme = "segment"
    header = b"x-signature"
    algorithm = "sha1"
    encoding = "hex"


class GitHub(BodyHmac):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``."""

    scheme = "github"
    header = b"x-hub-signature-256"
    algorithm = "sha256"
    encoding = "hex"
    prefix = b"sha256="
    delivery_id_header = b"x-github-delivery"
    event_type_header = b"x-github-event"
