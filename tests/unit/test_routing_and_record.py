"""Route table and record building: pure, no sockets."""

from __future__ import annotations

import pytest

from hookd.config import ConfigError, validate
from hookd.record import KeyRule, build_record, json_pointer
from hookd.routing import build_routes
from hookd.verify import Headers, Request, Verified

GITHUB = {"path": "/gh", "topic": "gh-events", "verify": "github", "secrets": ["s"]}


def table(*routes: dict, **server: object):
    return build_routes(validate({"server": server, "routes": list(routes)}, {}))


def test_lookup_is_exact_and_ignores_the_query():
    routes = table(GITHUB, {**GITHUB, "path": "/gh/v2", "topic": "other"})
    assert routes.lookup(b"/gh").topic == "gh-events"
    assert routes.lookup(b"/gh?x=1&y").topic == "gh-events"
    assert routes.lookup(b"/gh/v2").topic == "other"
    assert routes.lookup(b"/gh/") is None
    assert routes.lookup(b"/GH") is None


def test_route_body_limit_defaults_to_server_limit():
    routes = table(GITHUB, {**GITHUB, "path": "/big", "max_body_bytes": 5000}, max_body_bytes=100)
    assert routes.lookup(b"/gh").max_body_bytes == 100
    assert routes.lookup(b"/big").max_body_bytes == 5000


@pytest.mark.parametrize(
    ("route", "line"),
    [
        ({**GITHUB, "verify": "githbu"}, 'routes[0].verify: unknown scheme "githbu"'),
        ({**GITHUB, "secrets": []}, 'routes[0].secrets: scheme "github" needs at least one secret'),
        (
            {**GITHUB, "public_url": "https://x"},
            'routes[0].public_url: not used by scheme "github"',
        ),
        ({**GITHUB, "tolerance_s": 30}, 'routes[0].tolerance_s: scheme "github" has no timestamp'),
    ],
)
def test_scheme_problems_name_the_route_key(route, line):
    with pytest.raises(ConfigError) as info:
        table(route)
    assert info.value.lines()[0].startswith(f"config error: {line}")


def test_no_routes_is_an_error():
    with pytest.raises(ConfigError) as info:
        table()
    assert info.value.lines() == [
        "config error: routes: no routes configured: add at least one [[routes]] table"
    ]


def request(body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request(b"POST", b"/gh", Headers(headers or []), body)


def test_record_keeps_body_and_carries_contract_headers():
    body = b'{"a": 1,\n "b":"\xe2\x82\xac"}'
    req = request(body, [(b"content-type", b"application/json; charset=utf-8")])
    verified = Verified(delivery_id=b"d-1", event_type=b"push")
    record = build_record(
        topic="gh-events",
        route_path="/gh",
        scheme="github",
        key_rule=KeyRule(None),
        request=req,
        verified=verified,
        received_at_ms=1700000000123,
        source_ip="10.0.0.7",
    )
    assert record.value is body
    assert record.key == b"d-1"
    assert record.timestamp_ms == 1700000000123
    assert dict(record.headers) == {
        "hookd-route": b"/gh",
        "hookd-verify": b"github",
        "hookd-received-at": b"1700000000123",
        "hookd-source-ip": b"10.0.0.7",
        "hookd-webhook-id": b"d-1",
        "hookd-event-type": b"push",
        "content-type": b"application/json; charset=utf-8",
    }


def test_record_omits_unknown_optional_headers():
    record = build_record(
        topic="t",
        route_path="/x",
        scheme="none",
        key_rule=KeyRule(None),
        request=request(b"x"),
        verified=Verified(),
        received_at_ms=1,
        source_ip="::1",
    )
    assert record.key is None
    assert [name for name, _ in record.headers] == [
        "hookd-route",
        "hookd-verify",
        "hookd-received-at",
        "hookd-source-ip",
    ]


def test_key_rules():
    req = request(
        b'{"data":{"id":"evt_1","n":7,"list":["a","b"],"a/b":"slash"}}', [(b"x-delivery", b"hdr-1")]
    )
    verified = Verified(delivery_id=b"scheme-id")
    assert KeyRule(None).key(req, verified) == b"scheme-id"
    assert KeyRule("none").key(req, verified) is None
    assert KeyRule("header:X-Delivery").key(req, verified) == b"hdr-1"
    assert KeyRule("header:x-missing").key(req, verified) is None
    assert KeyRule("json:/data/id").key(req, verified) == b"evt_1"
    assert KeyRule("json:/data/n").key(req, verified) == b"7"
    assert KeyRule("json:/data/list/1").key(req, verified) == b"b"
    assert KeyRule("json:/data/a~1b").key(req, verified) == b"slash"
    assert KeyRule("json:/data").key(req, verified) is None  # objects make no key
    assert KeyRule("json:/nope/x").key(req, verified) is None


def test_json_pointer_on_invalid_json_gives_no_key():
    assert json_pointer(b"not json", ("a",)) is None
    assert json_pointer(b"[1,2]", ("5",)) is None


def test_ack_modes_from_ack_and_fallback():
    from hookd.publish.ack import AckMode

    spool = {"path": "/var/spool/hookd"}
    routes = build_routes(
        validate(
            {
                "spool": spool,
                "routes": [
                    GITHUB,
                    {**GITHUB, "path": "/reject", "fallback": "reject"},
                    {**GITHUB, "path": "/spool", "ack": "spool"},
                ],
            },
            {},
        )
    )
    assert routes.lookup(b"/gh").ack_mode is AckMode.KAFKA_OR_SPOOL  # spool is the default fallback
    assert routes.lookup(b"/reject").ack_mode is AckMode.KAFKA
    assert routes.lookup(b"/spool").ack_mode is AckMode.SPOOL
    assert table(GITHUB).lookup(b"/gh").ack_mode is AckMode.KAFKA  # no spool: reject


def test_spool_modes_need_a_spool_section():
    with pytest.raises(ConfigError) as info:
        table({**GITHUB, "ack": "spool"}, {**GITHUB, "path": "/b", "fallback": "spool"})
    assert info.value.lines() == [
        'config error: routes[0].ack: ack = "spool" needs a [spool] section',
        'config error: routes[1].fallback: fallback = "spool" needs a [spool] section',
    ]


SHOPIFY = {"path": "/shop", "topic": "orders", "verify": "shopify", "secrets": ["s"]}
SHOP_HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-shopify-hmac-sha256", b"c2lnbmF0dXJl"),
    (b"x-shopify-shop-domain", b"acme.myshopify.com"),
    (b"x-shopify-api-version", b"2025-01"),
    (b"x-shopify-topic", b"orders/create"),
    (b"x-shopify-webhook-id", b"b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
    (b"x-unrelated", b"not forwarded"),
]


def record_for(route_config: dict, target: bytes, headers: list[tuple[bytes, bytes]]):
    route = table(route_config).lookup(target.partition(b"?")[0])
    return build_record(
        topic=route.topic,
        route_path=route.path,
        scheme=route.scheme,
        key_rule=route.key_rule,
        request=Request(b"POST", target, Headers(headers), b"{}"),
        verified=Verified(),
        received_at_ms=1,
        source_ip="10.0.0.7",
    )


def forwarded(record) -> list[tuple[str, bytes]]:
    return [(n, v) for n, v in record.headers if n.startswith(("hookd-header-", "hookd-query"))]


def test_shopify_routes_forward_the_shop_domain_and_api_version_by_default():
    # Issue 14: X-Shopify-Shop-Domain is the only place a delivery names its shop.
    record = record_for(SHOPIFY, b"/shop?shop=acme", SHOP_HEADERS)
    assert forwarded(record) == [
        ("hookd-header-x-shopify-shop-domain", b"acme.myshopify.com"),
        ("hookd-header-x-shopify-api-version", b"2025-01"),
        ("hookd-header-x-shopify-topic", b"orders/create"),
        ("hookd-header-x-shopify-webhook-id", b"b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
    ]  # in the configured order; absent ones left out; no query unless asked


def test_forward_headers_and_query_per_route_case_insensitive():
    route = {**SHOPIFY, "forward_headers": ["X-Unrelated", "x-SHOPIFY-shop-domain"]}
    record = record_for({**route, "forward_query": True}, b"/shop?shop=acme&x=%20y", SHOP_HEADERS)
    assert forwarded(record) == [
        ("hookd-header-x-unrelated", b"not forwarded"),
        ("hookd-header-x-shopify-shop-domain", b"acme.myshopify.com"),
        ("hookd-query", b"shop=acme&x=%20y"),  # raw, as received
    ]
    assert forwarded(record_for({**SHOPIFY, "forward_headers": []}, b"/shop", SHOP_HEADERS)) == []
    assert forwarded(record_for({**route, "forward_query": True}, b"/shop", [])) == []


def test_github_forwards_its_hook_headers_and_schemes_without_defaults_nothing():
    headers = [(b"x-github-hook-id", b"42"), (b"x-github-hook-installation-target-type", b"repo")]
    assert forwarded(record_for(GITHUB, b"/gh", headers)) == [
        ("hookd-header-x-github-hook-id", b"42"),
        ("hookd-header-x-github-hook-installation-target-type", b"repo"),
    ]
    stripe = {"path": "/st", "topic": "t", "verify": "stripe", "secrets": ["whsec_x"]}
    assert forwarded(record_for(stripe, b"/st?a=1", headers)) == []


def test_forwarded_metadata_is_bounded_and_what_did_not_fit_is_named():
    from hookd.record import FORWARD_MAX_BYTES

    big = b"d" * (FORWARD_MAX_BYTES - 100)
    route = {**SHOPIFY, "forward_headers": ["x-a", "x-b", "x-c"], "forward_query": True}
    headers = [(b"x-a", big), (b"x-b", b"b" * 200), (b"x-c", b"small")]
    record = record_for(route, b"/shop?" + b"q" * 300, headers)
    names = [name for name, _ in record.headers]
    assert "hookd-header-x-a" in names and "hookd-header-x-c" in names
    assert "hookd-header-x-b" not in names and "hookd-query" not in names
    assert dict(record.headers)["hookd-forward-omitted"] == b"x-b,query"
    total = sum(len(n) + len(v) for n, v in forwarded(record))
    assert total <= FORWARD_MAX_BYTES


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "X-Shopify-Hmac-Sha256",
        "X-Hub-Signature-256",
        "X-Gitlab-Token",
        "X-Api-Key",
        "X-Webhook-Secret",
        "Stripe-Signature",
    ],
)
def test_a_header_that_may_carry_a_credential_is_never_forwarded(name):
    with pytest.raises(ConfigError) as info:
        table({**SHOPIFY, "forward_headers": ["x-shopify-shop-domain", name]})
    [line] = info.value.lines()
    assert line.startswith(f"config error: routes[0].forward_headers: {name!r} may carry a")


def test_the_routes_own_signature_header_is_never_forwarded():
    route = {"path": "/a", "topic": "t", "verify": "hmac", "secrets": ["s"], "header": "X-Acme"}
    with pytest.raises(ConfigError) as info:
        table({**route, "forward_headers": ["x-acme"]})
    assert info.value.lines() == [
        "config error: routes[0].forward_headers: 'x-acme' carries the route's signature or token"
    ]


def test_forward_headers_must_be_header_names():
    with pytest.raises(ConfigError) as info:
        table({**SHOPIFY, "forward_headers": ["x shop"]})
    assert info.value.lines() == [
        "config error: routes[0].forward_headers: 'x shop' is not a header name"
    ]
