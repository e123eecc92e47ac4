"""Shared-token schemes: the caller presents a secret, compared in constant time.

Every configured secret is compared (no early exit), so the time taken does not reveal which
one, if any, matched.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from hookd.settings import RouteConfig
from hookd.verify.base import (
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
    delivery_id_header,
    signature_header,
)

_BEARER = b"bearer "
_BASIC = b"basic "


def _any_equal(presented: bytes, secrets: Iterable[bytes]) -> bool:
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(secret, presented)
    return matched


class Token(Verifier):
    """A token in a header (default ``Authorization: Bearer <token>``), one of the secrets."""

    scheme = "token"
    options = frozenset({"header"})

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        header = (route.header or "authorization").strip().lower()
        if not header or not header.isascii() or any(c in header for c in " :\t"):
            raise SchemeConfigError("header", f"not a valid header name: {route.header!r}")
        self.header = header.encode("ascii")

    def verify(self, request: Request, now: float) -> Verified:
        presented = signature_header(request.headers, self.header)
        if self.header == b"authorization":
            if presented[: len(_BEARER)].lower() != _BEARER:
                raise Rejected("malformed authorization header: expected Bearer")
            presented = presented[len(_BEARER) :].strip()
        if not _any_equal(presented, self.secrets):
            raise Rejected("token mismatch")
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        token = self.secrets[0].decode()
        if self.header == b"authorization":
            return [("Authorization", f"Bearer {token}")]
        return [(self.header.decode(), token)]


class GitLab(Verifier):
    """GitLab: the webhook's secret token, sent back verbatim in ``X-Gitlab-Token``."""

    scheme = "gitlab"
    foreign_secret_prefixes = (("glpat-", "a GitLab personal access token"),)
    default_forward_headers = ("x-gitlab-instance", "x-gitlab-webhook-uuid")
    default_respond_within_s = 8.0

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        if not _any_equal(signature_header(headers, b"x-gitlab-token"), self.secrets):
            raise Rejected("token mismatch")
        return Verified(
            delivery_id=delivery_id_header(headers, b"x-gitlab-event-uuid"),
            event_type=headers.first(b"x-gitlab-event"),
        )

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return [("X-Gitlab-Token", self.secrets[0].decode())]


class Basic(Verifier):
    """HTTP Basic (RFC 7617): ``Authorization: Basic base64(user:password)``; secrets are
    ``user:password``. User and password are compared separately, each in constant time."""

    scheme = "basic"

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self.credentials = tuple(_split_credentials(secret) for secret in self.secrets)

    @classmethod
    def secret_key(cls, secret: str) -> bytes:
        """``user:password``, both non-empty: ``"hooks:${PASSWORD}"`` with an empty variable
        would let anyone in with ``Authorization: Basic aG9va3M6`` (``hooks:``)."""
        user, sep, password = secret.partition(":")
        if not sep or not user.strip():
            raise ValueError('basic secrets are "user:password"')
        if not password.strip():
            raise ValueError(
                "empty password: an empty secret would accept anything (is a variable empty?)"
            )
        return secret.encode()

    def verify(self, request: Request, now: float) -> Verified:
        value = signature_header(request.headers, b"authorization")
        if value[: len(_BASIC)].lower() != _BASIC:
            raise Rejected("malformed authorization header: expected Basic")
        try:
            decoded = base64.b64decode(value[len(_BASIC) :].strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("malformed authorization header: not base64") from None
        user, sep, password = decoded.partition(b":")
        if not sep:
            raise Rejected("malformed authorization header: no user:password")
        matched = False
        for expected_user, expected_password in self.credentials:
            same_user = hmac.compare_digest(expected_user, user)
            same_password = hmac.compare_digest(expected_password, password)
            matched |= same_user & same_password
        if not matched:
            raise Rejected("credentials mismatch")
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        user, password = self.credentials[0]
        return [("Authorization", "Basic " + base64.b64encode(user + b":" + password).decode())]


def _split_credentials(secret: bytes) -> tuple[bytes, bytes]:
    user, _, password = secret.partition(b":")  # Basic.secret_key checked both are there
    return user, password


class NoVerification(Verifier):
    """Accept everything. ``hookd check`` warns about every route that uses it."""

    scheme = "none"
    needs_secrets = False

    def verify(self, request: Request, now: float) -> Verified:
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        return []
