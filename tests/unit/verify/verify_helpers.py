"""Shared builders for the verifier tests: routes, requests, and the per-scheme test table."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from hookd.config import RouteConfig
from hookd.verify import SCHEMES, Headers, Request, Verified, Verifier

NOW = 1_760_000_000.0
BODY = b'{"id":"evt_123","type":"thing.happened","n":1}'
TARGET = b"/hooks/x"


def route(scheme: str, **options: Any) -> RouteConfig:
    return RouteConfig(path="/hooks/x", topic="events", verify=scheme, **options)


def verifier(scheme: str, **options: Any) -> Verifier:
    return SCHEMES[scheme].from_route(route(scheme, **options))


def request(
    headers: Iterable[tuple[str | bytes, str | bytes]],
    body: bytes = BODY,
    target: bytes = TARGET,
    method: bytes = b"POST",
) -> Request:
    items = [
        (
            (n if isinstance(n, bytes) else n.encode()).lower(),
            v if isinstance(v, bytes) else v.encode(),
        )
        for n, v in headers
    ]
    return Request(method=method, target=target, headers=Headers(items), body=body)


def whsec(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * 4).decode()


# scheme -> (route options, secret A, secret B, a wrong secret)
_PLAIN = ("secret-A", "secret-B", "not-the-secret")
SYMMETRIC: dict[str, tuple[dict[str, Any], tuple[str, str, str]]] = {
    "segment": ({}, _PLAIN),
    "github": ({}, _PLAIN),
    "stripe": ({}, ("whsec_aaaa", "whsec_bbbb", "whsec_cccc")),
    "standard-webhooks": ({}, (whsec(b"A" * 8), whsec(b"B" * 8), whsec(b"C" * 8))),
    "svix": ({}, (whsec(b"A" * 8), whsec(b"B" * 8), whsec(b"C" * 8))),
    "shopify": ({}, _PLAIN),
    "slack": ({}, _PLAIN),
    "twilio": ({"public_url": "https://hooks.example.com/twilio"}, _PLAIN),
    "gitlab": ({}, _PLAIN),
    "paddle": ({}, ("pdl_ntfset_A", "pdl_ntfset_B", "pdl_ntfset_C")),
    "linear": ({}, _PLAIN),
    "hubspot": ({"public_url": "https://hooks.example.com/hubspot"}, _PLAIN),
    "square": ({"public_url": "https://hooks.example.com/square"}, _PLAIN),
    "pagerduty": ({}, _PLAIN),
    "typeform": ({}, _PLAIN),
    "intercom": ({}, _PLAIN),
    "zoom": ({}, _PLAIN),
    "calendly": ({}, _PLAIN),
    "bitbucket": ({}, _PLAIN),
    "hmac": (
        {
            "header": "X-Sig",
            "algorithm": "sha512",
            "encoding": "base64",
            "prefix": "v1=",
            "template": "{ts}.{id}.{method} {url}.{body}",
            "timestamp_header": "X-Ts",
            "id_header": "X-Id",
        },
        _PLAIN,
    ),
    "token": ({"header": "X-Api-Key"}, _PLAIN),
    "basic": ({}, ("alice:pw-A", "bob:pw-B", "alice:wrong")),
}

# scheme -> (timestamp unit in seconds, rejects future?) for schemes with a timestamp rule
TIMESTAMPED: dict[str, tuple[float, bool]] = {
    "stripe": (1, False),
    "standard-webhooks": (1, True),
    "svix": (1, True),
    "slack": (1, True),
    "paddle": (1, False),
    "linear": (0.001, True),
    "hubspot": (0.001, False),
    "zoom": (1, True),
    "calendly": (1, False),
    "hmac": (1, True),
}

DEFAULT_TOLERANCE = {
    "stripe": 300,
    "standard-webhooks": 300,
    "svix": 300,
    "slack": 300,
    "paddle": 5,
    "linear": 60,
    "hubspot": 300,
    "zoom": 300,
    "calendly": 180,
    "hmac": 300,
}


def symmetric(scheme: str, *secrets: str, **extra: Any) -> Verifier:
    options = dict(SYMMETRIC[scheme][0])
    options.update(extra)
    return verifier(scheme, secrets=list(secrets), **options)


def signed(
    scheme: str, secret: str, body: bytes = BODY, target: bytes = TARGET, now: float = NOW
) -> list[tuple[str, str]]:
    return symmetric(scheme, secret).sign(body, target, now)


def accepted(scheme: str, headers: Iterable[tuple[str, str]]) -> Verified:
    """What ``verify`` returns for :data:`BODY` signed by :func:`signed`: the delivery id the
    scheme reads (from the id header sign() made up, or the body's ``id`` for Stripe)."""
    values = {name.lower(): value for name, value in headers}
    if scheme == "stripe":
        return Verified(delivery_id=b"evt_123", event_type=b"thing.happened")
    for header in ("webhook-id", "x-id"):  # Standard Webhooks and Svix; the generic hmac route
        if header in values:
            return Verified(delivery_id=values[header].encode())
    return Verified()
