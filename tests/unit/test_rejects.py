"""The rejects topic's pure part (issue 15, item 1): the record of each refusal kind, with
nothing secret in it, the reasons an operator needs, and the per-route token bucket on an
injected clock. The live test is tests/integration/test_rejects_live.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from send_catalogue import OPTIONS, SIGNABLE

from hookd import send
from hookd.config import ConfigError, validate
from hookd.http.framing import Head
from hookd.metrics import Metrics
from hookd.record import Record
from hookd.rejects import (
    BURST,
    RATE_PER_S,
    SIGNATURE_HEADERS,
    Rejects,
    TokenBucket,
    denied,
    reject_record,
)
from hookd.routing import Route, build_routes
from hookd.verify import Headers, Rejected, Request

NOW = 1_750_000_000.0
#: When a refused request came in, as the connection read the wall clock.
AT_MS = int(NOW * 1000)
SECRET = "gh-configured-secret-4f1d9a"  # what the route holds
SENDER_SECRET = "gh-rotated-at-provider-77c2e0"  # what the provider signs with now
CREDENTIALS = [
    (b"authorization", b"Bearer tok-3b9f27e1c6d84a55"),
    (b"cookie", b"session=c00k1e-v4lue-9e8d7c"),
    (b"x-api-key", b"ak-live-51f0e2d3c4b5a697"),
]


def route_for(scheme: str, **overrides: object) -> Route:
    options = {**OPTIONS[scheme], **overrides}
    raw = {"path": f"/{scheme}", "topic": "t", "verify": scheme, **options}
    [route] = build_routes(validate({"routes": [raw]}, {})).routes
    return route


def head_of(
    headers: list[tuple[bytes, bytes]],
    *,
    target: bytes = b"/github",
    content_length: int = 0,
    chunked: bool = False,
) -> Head:
    return Head(b"POST", target, b"1.1", headers, content_length, chunked, True, False)


def delivery_head(delivery: send.Delivery, target: bytes, extra=()) -> Head:
    headers = [(name.lower().encode(), value.encode()) for name, value in delivery.headers]
    headers += [(b"content-length", str(len(delivery.body)).encode()), *extra]
    return head_of(headers, target=target, content_length=len(delivery.body))


class Sent:
    """``send`` and ``dropped`` for a ``Rejects`` under test, with a clock the test moves."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.metrics = Metrics()
        self.now = 1000.0
        self.rejects = Rejects(
            "rejects",
            self.records.append,
            self.metrics.reject_dropped,
            clock=lambda: self.now,
        )


def refuse_401(rejects: Rejects, route: Route, head: Head, body: bytes, now: float = NOW):
    """What the connection does with a complete request its verifier refuses."""
    request = Request(head.method, head.target, Headers(head.headers), body)
    with pytest.raises(Rejected) as refused:
        route.verifier.verify(request, now)
    exc = refused.value
    return rejects.refused(
        route,
        401,
        str(exc),
        head,
        [body],
        "198.51.100.7",
        received_at_ms=AT_MS,
        complete=True,
        detail=exc.detail,
    )


def serialized(record: Record) -> bytes:
    return b"\n".join(
        [record.key or b"", record.value, *(name.encode() + b"=" + v for name, v in record.headers)]
    )


def assert_nothing_secret(record: Record, secrets: list[str], head: Head) -> None:
    """Neither a secret nor any signature, token or credential value (nor a long piece of
    one, such as the hex after ``sha256=``) appears anywhere in the record."""
    data = serialized(record)
    for secret in secrets:
        assert secret.encode() not in data, secret
    for name, value in head.headers:
        if not denied(name):
            continue
        assert value not in data, name
        for piece in re.split(rb"[=,;: ]", value):
            if len(piece) >= 12:
                assert piece not in data, (name, piece)


def value(record: Record) -> dict:
    return json.loads(record.value)


# -- each refusal kind ---------------------------------------------------------------------


def test_401_bad_signature():
    route = route_for("github", secrets=[SECRET])
    sender = route_for("github", secrets=[SENDER_SECRET])
    delivery = send.delivery(sender, now=NOW)
    head = delivery_head(delivery, b"/github", CREDENTIALS)
    sent = Sent()
    record = refuse_401(sent.rejects, route, head, delivery.body)
    assert record is not None and sent.records == [record]
    assert_nothing_secret(record, [SECRET, SENDER_SECRET], head)
    got = value(record)
    assert record.topic == "rejects" and record.key == b"/github"
    assert record.timestamp_ms == got["received_at"] == int(NOW * 1000)
    assert dict(record.headers)["hookd-status"] == b"401"
    assert got["v"] == 1 and got["route"] == "/github" and got["scheme"] == "github"
    assert got["status"] == 401 and got["source_ip"] == "198.51.100.7"
    assert got["reason"] == got["refusal"] == "signature mismatch" and got["hints"] == []
    assert got["method"] == "POST"
    names = [name for name, _ in got["headers"]]
    assert names == [name.decode() for name, _ in head.headers]  # every name, in order
    by_name = dict(got["headers"])
    signature = dict(head.headers)[b"x-hub-signature-256"]
    assert by_name["x-hub-signature-256"] == len(signature)  # the length, not the value
    assert by_name["authorization"] == len(CREDENTIALS[0][1])
    assert by_name["cookie"] == len(CREDENTIALS[1][1])
    assert by_name["x-api-key"] == len(CREDENTIALS[2][1])
    assert by_name["x-github-event"] == delivery.event  # non-secret values are kept
    assert by_name["content-type"] == "application/json"
    assert got["body_size"] == got["content_length"] == len(delivery.body)
    assert got["body_complete"] is True
    assert got["body_sha256"] == hashlib.sha256(delivery.body).hexdigest()
    assert "body_prefix_b64" not in got  # capture_rejected_body defaults to 0


def test_401_timestamp_in_the_future_says_clock_skew():
    route = route_for("standard-webhooks")
    delivery = send.delivery(route, now=NOW + 340)  # the sender's clock runs 340 s ahead
    head = delivery_head(delivery, b"/standard-webhooks")
    record = refuse_401(Sent().rejects, route, head, delivery.body)
    got = value(record)
    assert got["refusal"] == "timestamp outside tolerance: in the future"  # the answer's words
    assert got["reason"].startswith("timestamp 340 s in the future, tolerance 300 s (clock skew?)")
    assert_nothing_secret(record, OPTIONS["standard-webhooks"]["secrets"], head)
    signature = dict(head.headers)[b"webhook-signature"]
    assert dict(got["headers"])["webhook-signature"] == len(signature)


def test_401_timestamp_too_old_says_how_old():
    route = route_for("slack")
    delivery = send.delivery(route, now=NOW - 1000)
    head = delivery_head(delivery, b"/slack")
    got = value(refuse_401(Sent().rejects, route, head, delivery.body))
    assert got["refusal"] == "timestamp outside tolerance: too old"
    assert got["reason"].startswith("timestamp 1000 s old, tolerance 300 s")


def test_403_allow_list():
    route = route_for("github", allow_from=["192.30.252.0/22"])
    head = head_of([(b"host", b"x"), (b"x-hub-signature-256", b"sha256=" + b"ab" * 32)])
    sent = Sent()
    record = sent.rejects.refused(
        route, 403, "source address not allowed", head, [], "10.1.2.3", received_at_ms=AT_MS
    )
    got = value(record)
    assert (got["status"], got["reason"], got["source_ip"]) == (
        403,
        "source address not allowed",
        "10.1.2.3",
    )
    assert got["body_size"] == 0 and got["body_complete"] is False  # refused at the head
    assert b"ab" * 32 not in serialized(record)


def test_413_at_the_head_and_chunked_mid_body():
    route = route_for("github", max_body_bytes=1000)
    sent = Sent()
    head = head_of([(b"content-length", b"5000000")], content_length=5_000_000)
    got = value(
        sent.rejects.refused(
            route, 413, "body too large", head, [], "192.0.2.1", received_at_ms=AT_MS
        )
    )
    assert (got["status"], got["reason"]) == (413, "body too large")
    assert got["content_length"] == 5_000_000 and got["body_size"] == 0
    chunked = head_of([(b"transfer-encoding", b"chunked")], chunked=True)
    parts = [b"x" * 600, b"y" * 600]
    got = value(
        sent.rejects.refused(
            route, 413, "body too large", chunked, parts, "192.0.2.1", received_at_ms=AT_MS
        )
    )
    assert got["reason"] == "body too large; body arrived chunked"
    assert got["content_length"] is None and got["body_size"] == 1200
    assert got["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert got["body_complete"] is False


def test_400_after_routing():
    route = route_for("github")
    head = head_of([(b"transfer-encoding", b"chunked")], chunked=True)
    reason = "malformed request: invalid chunk size"
    got = value(
        Sent().rejects.refused(route, 400, reason, head, [b"{}"], "192.0.2.1", received_at_ms=AT_MS)
    )
    assert got["status"] == 400 and got["reason"] == reason + "; body arrived chunked"
    assert got["body_size"] == 2


# -- the reasons an operator needs ---------------------------------------------------------


def test_another_schemes_signature_is_named():
    github = route_for("github")
    stripe_delivery = send.delivery(route_for("stripe"), now=NOW)
    head = delivery_head(stripe_delivery, b"/github")
    record = refuse_401(Sent().rejects, github, head, stripe_delivery.body)
    got = value(record)
    assert got["refusal"] == "missing x-hub-signature-256 header"
    assert got["hints"] == [
        "signature present for scheme stripe (stripe-signature) but route expects github"
    ]
    assert got["reason"] == got["refusal"] + "; " + got["hints"][0]
    assert_nothing_secret(record, OPTIONS["stripe"]["secrets"], head)


def test_a_shared_header_is_no_hint_for_a_scheme_that_reads_it():
    # GitHub also sends X-Hub-Signature (SHA-1): on a bitbucket route that is its own header
    bitbucket = route_for("bitbucket")
    head = head_of([(b"x-hub-signature", b"sha256=" + b"00" * 32)])
    got = value(refuse_401(Sent().rejects, bitbucket, head, b"{}"))
    assert got["hints"] == []


def test_compressed_body_and_changed_content_type():
    route = route_for("github", secrets=[SECRET])
    sent = Sent()
    sent.rejects.accepted(route, head_of([(b"content-type", b"application/json")]))
    sender = route_for("github", secrets=[SENDER_SECRET])
    delivery = send.delivery(sender, now=NOW)
    signed = delivery_head(delivery, b"/github").headers
    headers = [(n, v) for n, v in signed if n != b"content-type"]
    headers += [
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-encoding", b"gzip"),
    ]
    head = head_of(headers, content_length=len(delivery.body))
    got = value(refuse_401(sent.rejects, route, head, delivery.body))
    assert got["hints"] == [
        "body arrived compressed (content-encoding: gzip)",
        "content-type changed: application/x-www-form-urlencoded, last accepted application/json",
    ]
    assert got["reason"] == "signature mismatch; " + "; ".join(got["hints"])
    # a charset's spelling is no change; another route's content-type is not this one's
    same = head_of([(b"content-type", b"application/json; charset=utf-8")])
    assert (
        value(sent.rejects.refused(route, 400, "x", same, [], "-", received_at_ms=AT_MS))["hints"]
        == []
    )
    other = route_for("stripe")
    assert value(sent.rejects.refused(other, 400, "x", head, [], "-", received_at_ms=AT_MS))[
        "hints"
    ] == ["body arrived compressed (content-encoding: gzip)"]


def test_the_body_prefix_only_when_the_route_captures_it():
    body = bytes(range(256)) * 2
    head = head_of([], content_length=len(body))
    plain = value(
        Sent().rejects.refused(
            route_for("github"), 401, "x", head, [body], "-", received_at_ms=AT_MS
        )
    )
    assert "body_prefix_b64" not in plain and body[:16].hex() not in json.dumps(plain)
    route = route_for("github", capture_rejected_body=100)
    got = value(Sent().rejects.refused(route, 401, "x", head, [body], "-", received_at_ms=AT_MS))
    assert base64.b64decode(got["body_prefix_b64"]) == body[:100]
    assert got["body_size"] == len(body)


def test_every_signed_scheme_has_its_signature_header_listed_and_redacted():
    """A scheme added to hookd without its header here would leak its signature values
    into records of other routes, and give no hint."""
    for scheme in SIGNABLE:
        if scheme in ("hmac", "token", "basic", "none"):
            continue  # their header is the route's own (option ``header``; authorization)
        route = route_for(scheme)
        names = {name.lower().encode() for name, _ in send.delivery(route, now=NOW).headers}
        listed = [n for n in names if scheme in SIGNATURE_HEADERS.get(n, ())]
        assert listed, f"{scheme}: no header of {sorted(names)} in SIGNATURE_HEADERS"


@pytest.mark.parametrize("scheme", ["hmac", "token", "basic"])
def test_generic_schemes_redact_their_own_header(scheme):
    route = route_for(scheme)
    other = "hooks:other-secret-value" if scheme == "basic" else "other-secret-value"
    delivery = send.delivery(route_for(scheme, secrets=[other]), now=NOW)
    head = delivery_head(delivery, route.path_bytes)
    record = refuse_401(Sent().rejects, route, head, delivery.body)
    assert_nothing_secret(record, [*OPTIONS[scheme]["secrets"], other], head)
    own = (route.config.header or "authorization").lower().encode()
    assert dict(value(record)["headers"])[own.decode()] == len(dict(head.headers)[own])


def test_a_custom_signature_header_without_a_credential_word_is_redacted():
    route = route_for("hmac", header="X-Acme-Mac")
    head = head_of([(b"x-acme-mac", b"sha256=" + b"cd" * 32)], target=b"/hmac")
    record = refuse_401(Sent().rejects, route, head, b"{}")
    assert b"cd" * 32 not in serialized(record)


# -- the rate limit -------------------------------------------------------------------------


def test_token_bucket_on_an_injected_clock():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)  # one token after 1/rate
    assert not bucket.take(0.1)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]  # never beyond burst
    assert not bucket.take(50.0)  # a clock going back adds nothing


def test_rejects_beyond_the_burst_are_dropped_and_counted_per_route():
    assert (RATE_PER_S, BURST) == (10.0, 50)
    sent = Sent()
    github, stripe = route_for("github"), route_for("stripe")
    head = head_of([])
    results = [
        sent.rejects.refused(github, 401, "x", head, [], "-", received_at_ms=AT_MS)
        for _ in range(BURST + 20)
    ]
    assert sum(r is not None for r in results) == BURST == len(sent.records)
    assert sent.metrics.rejects_dropped == {"/github": 20}
    # another route has its own bucket
    assert sent.rejects.refused(stripe, 401, "x", head, [], "-", received_at_ms=AT_MS) is not None
    # one second later: RATE_PER_S more
    sent.now += 1.0
    again = [
        sent.rejects.refused(github, 401, "x", head, [], "-", received_at_ms=AT_MS)
        for _ in range(20)
    ]
    assert sum(r is not None for r in again) == RATE_PER_S
    assert sent.metrics.rejects_dropped == {"/github": 30}
    text = sent.metrics.render().decode()
    assert 'hookd_rejects_dropped_total{route="/github"} 30' in text


def test_a_failing_send_never_reaches_the_caller(caplog):
    def broken(record: Record) -> None:
        raise RuntimeError("boom")

    rejects = Rejects("rejects", broken, lambda route: None)
    assert (
        rejects.refused(route_for("github"), 401, "x", head_of([]), [], "-", received_at_ms=AT_MS)
        is None
    )
    assert "rejects record for /github not written" in caplog.text


def test_reject_record_is_pure():
    route = route_for("github")
    head = head_of([(b"content-type", b"application/json")])
    kwargs = dict(
        topic="r",
        route=route,
        status=401,
        refusal="signature mismatch",
        detail=None,
        head=head,
        body=b"{}",
        body_complete=True,
        source_ip="192.0.2.1",
        received_at_ms=1,
    )
    assert reject_record(**kwargs) == reject_record(**kwargs)


# -- config ----------------------------------------------------------------------------------


def test_config_rejects_topic_and_capture():
    route = {"path": "/g", "topic": "events", "verify": "github", "secrets": ["s"]}
    config = validate({"kafka": {"rejects_topic": "hookd-rejects"}, "routes": [route]}, {})
    assert config.kafka.rejects_topic == "hookd-rejects"
    assert config.routes[0].capture_rejected_body == 0
    with pytest.raises(ConfigError) as same:
        validate({"kafka": {"rejects_topic": "events"}, "routes": [route]}, {})
    assert same.value.problems[0][0] == "kafka.rejects_topic"
    with pytest.raises(ConfigError) as bad:
        validate({"kafka": {"rejects_topic": "no good!"}, "routes": [route]}, {})
    assert "not a Kafka topic name" in bad.value.problems[0][1]
    with pytest.raises(ConfigError) as big:
        validate({"routes": [{**route, "capture_rejected_body": 70_000}]}, {})
    assert big.value.problems[0][0] == "routes[0].capture_rejected_body"
