"""Signature schemes by name. Each scheme is one small pure module; see docs/providers.md."""

from hookd.verify.asymmetric import Discord, SendGrid
from hookd.verify.base import (
    CannotSign,
    Headers,
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
    split_target,
)
from hookd.verify.generic import Hmac
from hookd.verify.simple import (
    Bitbucket,
    GitHub,
    Intercom,
    Linear,
    PagerDuty,
    Segment,
    Shopify,
    Typeform,
)
from hookd.verify.slack import Slack, Zoom
from hookd.verify.standard import StandardWebhooks
from hookd.verify.stripe import Calendly, Paddle, Stripe
from hookd.verify.token import Basic, GitLab, NoVerification, Token
from hookd.verify.url import HubSpot, Square, Twilio

SCHEMES: dict[str, type[Verifier]] = {
    scheme.scheme: scheme
    for scheme in (
        Segment,
        GitHub,
        Stripe,
        StandardWebhooks,
        Shopify,
        Slack,
        Twilio,
        GitLab,
        Paddle,
        Linear,
        HubSpot,
        Square,
        PagerDuty,
        Typeform,
        Intercom,
        Zoom,
        Calendly,
        Bitbucket,
        SendGrid,
        Discord,
        Hmac,
        Token,
        Basic,
        NoVerification,
    )
}
# Svix is the reference Standard Webhooks sender; its svix-* headers are read as well.
SCHEMES["svix"] = StandardWebhooks

__all__ = [
    "SCHEMES",
    "CannotSign",
    "Headers",
    "Rejected",
    "Request",
    "SchemeConfigError",
    "Verified",
    "Verifier",
    "split_target",
]
