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
