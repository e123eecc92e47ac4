"""Shared-token schemes: the caller presents a secret, compared in constant time."""

from __future__ import annotations

import hmac

from hookd.config import RouteConfig
from hookd.verify.base import Rejected, Request, Verified, Verifier

_BEARER = b"bearer "


class Token(Verifier):
    """A token in a header (default ``Authorization: Bearer <token>``), one of the secrets."""

    scheme = "token"
    options = frozenset({"header"})

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self.header = (route.header or "authorization").lower().encode("ascii")

    def verify(self, request: Request, now: float) -> Verified:
        presented = request.headers.require(self.header).strip()
        if self.header == b"authorization":
            if presented[: len(_BEARER)].lower() != _BEARER:
                raise Rejected("malformed authorization header: expected Bearer")
            presented = presented[len(_BEARER) :].strip()
        matched = False
        for secret in self.secrets:
            matched |= hmac.compare_digest(secret, presented)
        if not matched:
            raise Rejected("token mismatch")
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        token = self.secrets[0].decode()
        if self.header == b"authorization":
            return [("Authorization", f"Bearer {token}")]
        return [(self.header.decode(), token)]


class NoVerification(Verifier):
    """Accept everything. ``hookd check`` warns about every route that uses it."""

    scheme = "none"
    needs_secrets = False

    def verify(self, request: Request, now: float) -> Verified:
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return []
