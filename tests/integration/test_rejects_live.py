"""The rejects topic on a running hookd and the embedded broker (issue 15, item 1): bad
deliveries of each refusal kind come back from ``[kafka] rejects_topic`` with what an operator
needs and nothing secret, and the per-route rate limit drops (and counts) beyond the burst."""

from __future__ import annotations

import json
import re
import time

import pytest
from embedded_broker import read_topic, wait_for
from http_client import Client, request, segment_request
from support import http_get, unique_topic

from hookd import send
from hookd.config import validate
from hookd.rejects import BURST, RATE_PER_S
from hookd.routing import build_routes

SECRET = "gh-live-secret-5d7e91c2"
SENDER_SECRET = "gh-rotated-secret-0a4b6f"
SW_SECRET = "whsec_QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
FLOOD_SECRET = b"flood-secret-8c1d"
TOKEN = b"Bearer live-token-2f9e8d7c6b5a"
COOKIE = b"session=live-cookie-1a2b3c4d"
FLOOD = BURST + 30


def route(raw: dict) -> object:
    [built] = build_routes(validate({"routes": [raw]}, {})).routes
    return built


GH = {"path": "/gh", "verify": "github", "secrets": [SECRET], "max_body_bytes": 1000}
SW = {"path": "/sw", "verify": "standard-webhooks", "secrets": [SW_SECRET]}
WALLED = {
    "path": "/walled",
    "verify": "github",
    "secrets": [SECRET],
    "allow_from": ["192.0.2.0/24"],
}


@pytest.fixture(scope="module")
def hookd(module_launcher):
    events, rejects = unique_topic("events"), unique_topic("rejects")
    routes = [
        {**GH, "topic": events, "capture_rejected_body": 8},
        {**SW, "topic": events},
        {**WALLED, "topic": events},
        {
            "path": "/flood",
            "topic": events,
            "verify": "segment",
            "secrets": [FLOOD_SECRET.decode()],
        },
    ]
    server = module_launcher.start(routes, kafka={"rejects_topic": rejects})
    server.rejects = rejects
    return server


def raw_request(path: str, delivery: send.Delivery, extra: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: hookd\r\n".encode()
    head += b"".join(f"{name}: {value}\r\n".encode() for name, value in delivery.headers)
    head += extra + f"Content-Length: {len(delivery.body)}\r\n\r\n".encode()
    return head + delivery.body


def test_each_refusal_kind_is_recorded_with_nothing_secret(hookd, broker):
    wrongly_signed = send.delivery(route({**GH, "topic": "t", "secrets": [SENDER_SECRET]}))
    credentials = b"Authorization: " + TOKEN + b"\r\nCookie: " + COOKIE + b"\r\n"
    bad = raw_request("/gh", wrongly_signed, credentials)
    assert request(hookd.address, bad).status == 401
    ahead = send.delivery(route({**SW, "topic": "t"}), now=time.time() + 340)
    assert request(hookd.address, raw_request("/sw", ahead)).status == 401
    too_large = b"POST /gh HTTP/1.1\r\nHost: hookd\r\nContent-Length: 5000\r\n\r\n"
    assert request(hookd.address, too_large).status == 413
    bad_chunk = (
        b"POST /gh HTTP/1.1\r\nHost: hookd\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n"
    )
    assert request(hookd.address, bad_chunk).status == 400
    walled = send.delivery(route({**WALLED, "topic": "t"}))
    assert request(hookd.address, raw_request("/walled", walled)).status == 403  # allow_from
    refusals = 5

    records = read_topic(broker.address, hookd.rejects, refusals)
    values = [json.loads(r.value()) for r in records]
    by_status = {v["status"]: v for v in values}
    assert sorted(by_status) == [400, 401, 403, 413], values
    assert len(values) == refusals and [r.key() for r in records] == [
        v["route"].encode() for v in values
    ]

    signature = dict(wrongly_signed.headers)["X-Hub-Signature-256"].encode()
    everything = b"\n".join(
        r.value() + (r.key() or b"") + b"".join(v for _, v in r.headers() or []) for r in records
    )
    for secret in (SECRET.encode(), SENDER_SECRET.encode(), SW_SECRET.encode(), TOKEN, COOKIE):
        assert secret not in everything
    for value in (signature, signature.removeprefix(b"sha256="), TOKEN.split()[1]):
        assert value not in everything
    sw_signature = dict(ahead.headers)["webhook-signature"].encode()
    assert sw_signature.split(b",")[1] not in everything

    [mismatch, skew] = [v for v in values if v["status"] == 401]
    assert (mismatch["route"], mismatch["reason"]) == ("/gh", "signature mismatch")
    assert mismatch["source_ip"] == "127.0.0.1" and mismatch["method"] == "POST"
    headers = dict(mismatch["headers"])
    assert headers["authorization"] == len(TOKEN) and headers["cookie"] == len(COOKIE)
    assert headers["x-hub-signature-256"] == len(signature)
    assert headers["x-github-event"] == wrongly_signed.event
    assert mismatch["body_size"] == len(wrongly_signed.body) and mismatch["body_complete"]
    assert mismatch["body_prefix_b64"]  # /gh captures 8 bytes
    assert abs(mismatch["received_at"] / 1000 - time.time()) < 60
    assert skew["route"] == "/sw" and "body_prefix_b64" not in skew
    assert re.match(
        r"timestamp 3[34]\d s in the future, tolerance 300 s \(clock skew\?\)", skew["reason"]
    )
    assert skew["refusal"] == "timestamp outside tolerance: in the future"
    assert by_status[413]["reason"] == "body too large"
    assert by_status[413]["content_length"] == 5000 and by_status[413]["body_size"] == 0
    assert by_status[400]["reason"].endswith("; body arrived chunked")
    assert by_status[403]["route"] == "/walled" and by_status[403]["body_size"] == 0


def test_the_rate_limit_drops_and_counts_beyond_the_burst(hookd, broker):
    bad = segment_request("/flood", b'{"type":"track"}', b"not-the-secret")
    started = time.monotonic()
    with Client(hookd.address) as client:
        for _ in range(FLOOD):
            client.send(bad)
            assert client.response().status == 401
    elapsed = time.monotonic() - started
    records = [
        r for r in read_topic(broker.address, hookd.rejects, BURST + 5) if r.key() == b"/flood"
    ]
    refilled = int(elapsed * RATE_PER_S) + 1
    assert BURST <= len(records) <= BURST + refilled, (len(records), elapsed)
    dropped = f'hookd_rejects_dropped_total{{route="/flood"}} {FLOOD - len(records)}'
    assert wait_for(lambda: dropped.encode() in http_get(hookd.admin_port, "/metrics")[1], 5)
