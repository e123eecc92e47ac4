"""Issue 12, finding 9: a delivery id from a header the signature does not cover is bounded.

Anyone holding one captured delivery can send it with any id; it becomes the record key and
enters the redelivery window (whose own bound is in tests/unit/test_dedup_bounds.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from verify_helpers import NOW, request, signed, symmetric, verifier

from hookd.verify import Rejected
from hookd.verify.base import MAX_DELIVERY_ID_BYTES

#: scheme -> (route options, the unsigned header its delivery id comes from)
UNSIGNED_IDS: dict[str, tuple[dict[str, Any], str]] = {
    "github": ({}, "X-GitHub-Delivery"),
    "shopify": ({}, "X-Shopify-Webhook-Id"),
    "bitbucket": ({}, "X-Request-UUID"),
    "linear": ({}, "Linear-Delivery"),
    "gitlab": ({}, "X-Gitlab-Event-UUID"),
    "twilio": ({}, "I-Twilio-Idempotency-Token"),
    "hmac": ({"header": "X-Sig", "id_header": "X-Delivery", "template": "{body}"}, "X-Delivery"),
}


@pytest.mark.parametrize("scheme", sorted(UNSIGNED_IDS))
def test_unsigned_delivery_ids_are_bounded(scheme: str) -> None:
    options, header = UNSIGNED_IDS[scheme]
    if scheme == "hmac":  # its own route: the shared one signs the id ({id} in the template)
        v = verifier("hmac", secrets=["secret-A"], **options)
    else:
        v = symmetric(scheme, "secret-A")
    body = b"Body=x" if scheme == "twilio" else b'{"webhookTimestamp":%d}' % int(NOW * 1000)
    headers = [h for h in v.sign(body, b"/hooks/x", NOW) if h[0].lower() != header.lower()]
    longest = "d" * MAX_DELIVERY_ID_BYTES
    result = v.verify(request([*headers, (header, longest)], body=body), NOW)
    assert result.delivery_id == longest.encode()
    with pytest.raises(Rejected, match=f"{header.lower()} header: longer than 200 bytes"):
        v.verify(request([*headers, (header, longest + "d")], body=body), NOW)


def test_a_captured_github_delivery_replayed_with_a_15_kb_id_is_refused() -> None:
    v = symmetric("github", "secret-A")
    headers = signed("github", "secret-A")
    with pytest.raises(Rejected, match="x-github-delivery header: longer than 200 bytes"):
        v.verify(request([*headers, ("X-GitHub-Delivery", "x" * 15_000)]), NOW)
