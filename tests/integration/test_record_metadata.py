"""Provider headers and the query string in the record, read back from the broker (issue 14)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from embedded_broker import read_topic
from http_client import request
from support import unique_topic


def test_shopify_headers_and_query_land_in_the_record(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd(
        [
            {
                "path": "/shopify",
                "topic": topic,
                "verify": "shopify",
                "secrets": ["shpss_client_secret"],
                "forward_query": True,
            }
        ]
    )
    body = b'{"id":820982911946154508,"email":"jon@example.com"}'
    signature = base64.b64encode(hmac.new(b"shpss_client_secret", body, hashlib.sha256).digest())
    raw = (
        b"POST /shopify?source=acme&n=%2F1 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Shopify-Hmac-Sha256: " + signature + b"\r\n"
        b"X-Shopify-Shop-Domain: acme.myshopify.com\r\n"
        b"x-shopify-api-version: 2025-01\r\n"  # any case
        b"X-Shopify-Topic: orders/create\r\n"
        b"X-Shopify-Webhook-Id: b54557e4-bdd9-4b37-8a5f-bf7d70bcd043\r\n"
        b"Cookie: session=never-forwarded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert request(hookd.address, raw).status == 200
    [record] = read_topic(broker.address, topic, 1)
    assert record.value() == body
    headers = record.headers()
    forwarded = [(n, v) for n, v in headers if n.startswith(("hookd-header-", "hookd-query"))]
    assert forwarded == [
        ("hookd-header-x-shopify-shop-domain", b"acme.myshopify.com"),
        ("hookd-header-x-shopify-api-version", b"2025-01"),
        ("hookd-header-x-shopify-topic", b"orders/create"),
        ("hookd-header-x-shopify-webhook-id", b"b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
        ("hookd-query", b"source=acme&n=%2F1"),
    ]
    # never a cookie, never the signature
    assert not any(b"never-forwarded" in value or signature in value for _, value in headers)
