"""A verified request's exact bytes, key and headers land in Kafka; 2xx only after the ack."""

from __future__ import annotations

import hashlib
import hmac
import json
import shlex
import subprocess
import sys
import time

from embedded_broker import read_topic
from http_client import Client, request, segment_request
from support import ROOT, unique_topic

SECRET = b"s3cret"


def segment_route(topic: str, **extra: object) -> dict[str, object]:
    return {"path": "/segment", "topic": topic, "verify": "segment", "secrets": ["s3cret"], **extra}


def test_exact_body_key_and_headers(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([segment_route(topic, key="json:/messageId")])
    # Odd spacing, unicode and a trailing newline: the record must keep every byte.
    body = b'{ "messageId" : "m-1",  "event":"caf\xc3\xa9" }\n'
    answer = request(hookd.address, segment_request("/segment?x=1", body, SECRET))
    assert answer.status == 200
    [record] = read_topic(broker.address, topic, 1)
    assert record.value() == body
    assert record.key() == b"m-1"
    headers = dict(record.headers())
    assert headers["hookd-route"] == b"/segment"
    assert headers["hookd-verify"] == b"segment"
    assert headers["hookd-source-ip"] == b"127.0.0.1"
    assert headers["content-type"] == b"application/json"
    received_at = int(headers["hookd-received-at"])
    assert abs(received_at - time.time() * 1000) < 60_000
    assert record.timestamp()[1] == received_at


def test_github_delivery_id_is_key_and_event_type_header(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([{"path": "/gh", "topic": topic, "verify": "github", "secrets": ["gh"]}])
    body = b'{"zen":"Keep it logically awesome."}'
    signature = "sha256=" + hmac.new(b"gh", body, hashlib.sha256).hexdigest()
    raw = (
        b"POST /gh HTTP/1.1\r\nHost: x\r\nX-GitHub-Delivery: 72d3162e-cc78\r\n"
        b"X-GitHub-Event: ping\r\nX-Hub-Signature-256: " + signature.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert request(hookd.address, raw).status == 200
    [record] = read_topic(broker.address, topic, 1)
    assert record.key() == b"72d3162e-cc78"
    headers = dict(record.headers())
    assert headers["hookd-webhook-id"] == b"72d3162e-cc78"
    assert headers["hookd-event-type"] == b"ping"


def test_rotation_every_secret_is_tried(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([segment_route(topic, secrets=["old", "new"])])
    for secret in (b"old", b"new"):
        assert request(hookd.address, segment_request("/segment", b"{}", secret)).status == 200
    answer = request(hookd.address, segment_request("/segment", b"{}", b"other"))
    assert answer.status == 401
    assert b"signature mismatch" in answer.body
    assert b"other" not in answer.body
    assert len(read_topic(broker.address, topic, 2)) == 2


def test_keep_alive_and_pipelined_requests_answered_in_order(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([segment_route(topic)])
    bodies = [f'{{"n":{i}}}'.encode() for i in range(20)]
    with Client(hookd.address) as client:
        # Two well-formed requests around a bad signature, all in one write.
        bad = segment_request("/segment", b'{"bad":1}', b"wrong")
        client.send(b"".join(segment_request("/segment", b, SECRET) for b in bodies[:10]) + bad)
        statuses = [client.response().status for _ in range(11)]
        client.send(b"".join(segment_request("/segment", b, SECRET) for b in bodies[10:]))
        statuses += [client.response().status for _ in range(10)]
    assert statuses == [200] * 10 + [401] + [200] * 10
    records = read_topic(broker.address, topic, 20)
    assert [r.value() for r in records] == bodies


def test_chunked_body_is_published_dechunked(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([segment_route(topic)])
    body = b'{"chunked":true,"pad":"' + b"x" * 5000 + b'"}'
    from http_client import segment_signature

    chunks = [body[:7], body[7:4000], body[4000:]]
    raw = (
        b"POST /segment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"X-Signature: "
        + segment_signature(SECRET, body)
        + b"\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        + b"0\r\n\r\n"
    )
    assert request(hookd.address, raw).status == 200
    [record] = read_topic(broker.address, topic, 1)
    assert record.value() == body


def test_expect_100_continue(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([segment_route(topic)])
    body = b'{"expect":"continue"}'
    full = segment_request("/segment", body, SECRET, extra=b"Expect: 100-continue\r\n")
    head, _, _ = full.partition(b"\r\n\r\n")
    with Client(hookd.address) as client:
        client.send(head + b"\r\n\r\n")
        client.sock.settimeout(5)
        interim = client.sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 ")
        client.send(body)
        assert client.response().status == 200
    [record] = read_topic(broker.address, topic, 1)
    assert record.value() == body


def test_sign_prints_a_curl_the_route_accepts(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([segment_route(topic)])
    curl = subprocess.run(
        [
            sys.executable,
            "-m",
            "hookd.cli",
            "sign",
            "--config",
            str(hookd.config_path),
            "--route",
            "/segment",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    assert curl.startswith("curl ")
    out = subprocess.run(shlex.split(curl), capture_output=True, text=True, check=True).stdout
    assert out.startswith("HTTP/1.1 200 ")
    [record] = read_topic(broker.address, topic, 1)
    assert json.loads(record.value())["event"] == "hookd test"


def test_admin_endpoints_only_on_admin_listener(broker, start_hookd):
    from support import http_get

    hookd = start_hookd([segment_route(unique_topic())])
    assert request(hookd.address, segment_request("/segment", b"{}", SECRET)).status == 200
    assert http_get(hookd.admin_port, "/healthz") == (200, b"ok\n")
    assert http_get(hookd.admin_port, "/readyz")[0] == 200
    status, metrics = http_get(hookd.admin_port, "/metrics")
    assert status == 200
    assert b'hookd_requests_total{route="/segment",code="200"} 1' in metrics
    assert b"hookd_publish_latency_seconds_count 1" in metrics
    # the public listener knows no admin paths
    raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    assert request(hookd.address, raw).status == 404
