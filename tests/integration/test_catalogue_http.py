"""Schemes over HTTP against the real broker: rotation, redelivery dedup, handshakes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from embedded_broker import read_topic
from http_client import Client, request
from readback import marker, records_before
from support import http_get, unique_topic

from hookd.config import validate
from hookd.routing import build_routes

DISCORD_KEY = Ed25519PrivateKey.generate()
DISCORD_PUBLIC = DISCORD_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def raw_post(path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: hookd", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed(route: dict, body: bytes, secret_index: int = 0) -> bytes:
    """Sign with the route's own scheme (its ``sign`` uses the first secret)."""
    chosen = {**route, "secrets": [route["secrets"][secret_index]]}
    [built] = build_routes(validate({"routes": [chosen]}, {})).routes
    return raw_post(
        route["path"], body, built.verifier.sign(body, route["path"].encode(), time.time())
    )


@pytest.fixture(scope="module")
def hookd(module_launcher):
    topic = unique_topic("catalogue")
    routes = {
        "stripe": {
            "path": "/stripe",
            "topic": topic,
            "verify": "stripe",
            "secrets": ["whsec_old", "whsec_new"],
        },
        "svix": {
            "path": "/svix",
            "topic": topic,
            "verify": "svix",
            "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        },
        "github": {"path": "/github", "topic": topic, "verify": "github", "secrets": ["gh"]},
        "nodedup": {
            "path": "/nodedup",
            "topic": topic,
            "verify": "github",
            "secrets": ["gh"],
            "dedup_entries": 0,
        },
        "slack": {
            "path": "/slack",
            "topic": topic,
            "verify": "slack",
            "secrets": ["slack-signing"],
        },
        "zoom": {"path": "/zoom", "topic": topic, "verify": "zoom", "secrets": ["zoom-token"]},
        "discord": {
            "path": "/discord",
            "topic": topic,
            "verify": "discord",
            "public_key": DISCORD_PUBLIC,
        },
    }
    server = module_launcher.start(list(routes.values()))
    server.topic = topic
    server.route = routes
    return server


def values(broker, hookd, expected: int) -> list[bytes]:
    return [r.value() for r in read_topic(broker.address, hookd.topic, expected, timeout=10)]


def records_so_far(broker, hookd) -> list:
    """Every record on the module's topic, read up to a marker published after everything the
    test sent (through /nodedup, which shares the topic)."""
    mark = marker()
    signature = "sha256=" + hmac.new(b"gh", mark, hashlib.sha256).hexdigest()
    raw = raw_post("/nodedup", mark, [("X-Hub-Signature-256", signature)])
    assert request(hookd.address, raw).status == 200
    return records_before(broker.address, hookd.topic, mark)


def published_so_far(broker, hookd) -> list[bytes]:
    return [record.value() for record in records_so_far(broker, hookd)]


def test_rotation_old_and_new_secret_both_accepted(broker, hookd):
    route = hookd.route["stripe"]
    bodies = [json.dumps({"id": f"evt_rot_{i}", "type": "ping"}).encode() for i in range(2)]
    for index, body in enumerate(bodies):
        assert request(hookd.address, signed(route, body, index)).status == 200
    wrong = signed({**route, "secrets": ["whsec_other"]}, b'{"id":"evt_x"}')
    answer = request(hookd.address, wrong)
    assert answer.status == 401
    assert b"whsec" not in answer.body
    published = values(broker, hookd, 2)
    assert all(body in published for body in bodies)


def test_two_deliveries_of_one_id_publish_one_record(broker, hookd):
    route = hookd.route["svix"]
    body = b'{"type":"invoice.paid","n":"dedup-once"}'
    first = signed(route, body)  # one delivery id, sent twice (a provider retry)
    answers = [request(hookd.address, first) for _ in range(2)]
    assert [a.status for a in answers] == [200, 200]
    assert b'"duplicate":true' in answers[1].body
    assert published_so_far(broker, hookd).count(body) == 1
    metrics = http_get(hookd.admin_port, "/metrics")[1]
    assert b'hookd_dedup_hits_total{route="/svix"} 1' in metrics


def test_dedup_is_keyed_by_delivery_id_and_can_be_off(broker, hookd):
    body = b'{"n":"same-body-two-ids"}'

    def github(path: str, delivery: str) -> bytes:
        signature = "sha256=" + hmac.new(b"gh", body, hashlib.sha256).hexdigest()
        return raw_post(
            path, body, [("X-Hub-Signature-256", signature), ("X-GitHub-Delivery", delivery)]
        )

    for raw in (github("/github", "d-1"), github("/github", "d-2"), github("/github", "d-1")):
        assert request(hookd.address, raw).status == 200
    for _ in range(2):
        assert request(hookd.address, github("/nodedup", "d-9")).status == 200
    # d-1 and d-2 once each on /github, d-9 twice on /nodedup
    records = records_so_far(broker, hookd)
    ids = [dict(r.headers()).get("hookd-webhook-id") for r in records if r.value() == body]
    assert sorted(ids) == [b"d-1", b"d-2", b"d-9", b"d-9"]


def test_slack_url_verification_answered_not_published(broker, hookd):
    body = json.dumps(
        {
            "type": "url_verification",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "token": "x",
        }
    ).encode()
    answer = request(hookd.address, signed(hookd.route["slack"], body))
    assert answer.status == 200
    assert json.loads(answer.body) == {
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    }
    unsigned = raw_post("/slack", body, [])
    assert request(hookd.address, unsigned).status == 401
    assert body not in published_so_far(broker, hookd)


def test_zoom_url_validation_answered_not_published(broker, hookd):
    body = json.dumps(
        {"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}
    ).encode()
    answer = request(hookd.address, signed(hookd.route["zoom"], body))
    assert answer.status == 200
    expected = hmac.new(b"zoom-token", b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert json.loads(answer.body) == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": expected,
    }
    assert body not in published_so_far(broker, hookd)


def test_discord_ping_answered_pong_and_interaction_published(broker, hookd):
    def discord(body: bytes, key: Ed25519PrivateKey = DISCORD_KEY) -> bytes:
        ts = str(int(time.time()))
        signature = key.sign(ts.encode() + body).hex()
        return raw_post(
            "/discord", body, [("X-Signature-Ed25519", signature), ("X-Signature-Timestamp", ts)]
        )

    ping = b'{"type":1,"id":"ping-1"}'
    with Client(hookd.address) as client:
        client.send(discord(ping))
        answer = client.response()
        assert (answer.status, json.loads(answer.body)) == (200, {"type": 1})
        interaction = b'{"type":2,"id":"int-1","data":{"name":"hi"}}'
        client.send(discord(interaction))
        assert client.response().status == 200
        client.send(discord(interaction, Ed25519PrivateKey.generate()))
        assert client.response().status == 401
    published = published_so_far(broker, hookd)
    assert interaction in published and ping not in published
