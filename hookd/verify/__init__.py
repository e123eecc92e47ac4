"""Signature schemes by name (``SCHEMES``). Each module holds one family of schemes and is pure;
see docs/providers.md."""

from hookd.verify.asymmetric import Discord, SendGrid
from hookd.verify.base import (
    CannotSign,
    Headers,
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
)
from hookd.verify.body_hmac import (
    Bitbucket,
    GitHub,
    Intercom,
    Linear,
    PagerDuty,
    Segment,
    Shopify,
    Typeform,
)
from hookd.verify.generic_hmac import Hmac
from hookd.verify.shared_secret import Basic, GitLab, NoVerification, Token
from hookd.verify.standard_webhooks import StandardWebhooks
from hookd.verify.timestamped_hmac import Calendly, Paddle, Stripe
from hookd.verify.url_hmac import HubSpot, Square, Twilio
from hookd.verify.v0_hmac import Slack, Zoom

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
]
