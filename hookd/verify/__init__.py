"""Signature schemes by name. Each scheme is one small pure module; see PROVIDERS.md."""

from hookd.verify.base import (
    CannotSign,
    Headers,
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
)
from hookd.verify.simple import GitHub, Segment
from hookd.verify.token import NoVerification, Token

SCHEMES: dict[str, type[Verifier]] = {
    scheme.scheme: scheme for scheme in (Segment, GitHub, Token, NoVerification)
}

__all__ = [
    "SCHEMES",
    "CannotSign",
    "Headers",
    "Rejected",
    "Request",
    "SchemeConfigError",
    "Verified",
    "Verifier",
]
