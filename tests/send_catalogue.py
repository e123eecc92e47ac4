"""One route per scheme that ``hookd send`` can sign (every symmetric one), with two secrets
where the scheme takes several: shared by tests/unit/test_send.py and the live test."""

from __future__ import annotations

from typing import Any

from hookd.send import UNSIGNABLE
from hookd.verify import SCHEMES

SVIX_OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SVIX_NEW = "whsec_QWxhZGRpbjpvcGVuIHNlc2FtZQ=="

#: scheme -> its route's options besides path and topic.
OPTIONS: dict[str, dict[str, Any]] = {
    "segment": {"secrets": ["seg-new", "seg-old"]},
    "github": {"secrets": ["gh-new", "gh-old"]},
    "stripe": {"secrets": ["whsec_new", "whsec_old"]},
    "standard-webhooks": {"secrets": [SVIX_NEW, SVIX_OLD]},
    "svix": {"secrets": [SVIX_NEW, SVIX_OLD]},
    "shopify": {"secrets": ["shop-new", "shop-old"]},
    "slack": {"secrets": ["slack-new", "slack-old"]},
    "twilio": {"secrets": ["twilio-token"], "public_url": "https://hooks.example.com/twilio"},
    "gitlab": {"secrets": ["gl-new", "gl-old"]},
    "paddle": {"secrets": ["pdl_ntfset_new", "pdl_ntfset_old"]},
    "linear": {"secrets": ["lin-new", "lin-old"]},
    "hubspot": {"secrets": ["hs-secret"], "public_url": "https://hooks.example.com/hubspot"},
    "square": {"secrets": ["sq-key"], "public_url": "https://hooks.example.com/square"},
    "pagerduty": {"secrets": ["pd-new", "pd-old"]},
    "typeform": {"secrets": ["tf-secret"]},
    "intercom": {"secrets": ["ic-secret"]},
    "zoom": {"secrets": ["zoom-new", "zoom-old"]},
    "calendly": {"secrets": ["cal-new", "cal-old"]},
    "bitbucket": {"secrets": ["bb-secret"]},
    "hmac": {
        "secrets": ["hmac-new", "hmac-old"],
        "header": "X-Acme-Signature",
        "prefix": "sha256=",
        "template": "{ts}.{id}.{body}",
        "timestamp_header": "X-Acme-Timestamp",
        "id_header": "X-Acme-Delivery",
    },
    "token": {"secrets": ["tok-new", "tok-old"]},
    "basic": {"secrets": ["hooks:pw-new", "hooks:pw-old"]},
    "none": {},
}

#: Schemes whose signature header carries one signature per secret (rotation).
ROTATING = {"stripe", "calendly", "paddle", "pagerduty", "standard-webhooks", "svix"}

SIGNABLE = sorted(set(SCHEMES) - set(UNSIGNABLE))


def routes(topic: str) -> list[dict[str, Any]]:
    return [
        {"path": f"/{scheme}", "topic": topic, "verify": scheme, **OPTIONS[scheme]}
        for scheme in SIGNABLE
    ]
