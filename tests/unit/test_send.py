"""``hookd send`` / ``hookd sign``: the deliveries they build, verified by hookd's own
verifiers (issue 15, item 4). The live test is tests/integration/test_send_live.py."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from send_catalogue import OPTIONS, ROTATING, SIGNABLE

from hookd import cli, send
from hookd.config import validate
from hookd.routing import Route, build_routes
from hookd.verify import CannotSign, Headers, Rejected, Request, Verified

NOW = 1_750_000_000.0


def route_for(scheme: str, **overrides: object) -> Route:
    options = {**OPTIONS[scheme], **overrides}
    raw = {"path": f"/{scheme}", "topic": "t", "verify": scheme, **options}
    [route] = build_routes(validate({"routes": [raw]}, {})).routes
    return route


def as_request(delivery: send.Delivery, target: bytes) -> Request:
    headers = [(name.lower().encode(), value.encode()) for name, value in delivery.headers]
    return Request(b"POST", target, Headers(headers), delivery.body)


def verify(route: Route, delivery: send.Delivery, now: float = NOW) -> Verified:
    return route.verifier.verify(as_request(delivery, route.path_bytes), now)


def header(delivery: send.Delivery, name: str) -> str:
    [value] = [v for n, v in delivery.headers if n.lower() == name.lower()]
    return value


@pytest.mark.parametrize("scheme", SIGNABLE)
def test_every_symmetric_scheme_builds_a_delivery_its_verifier_accepts(scheme):
    route = route_for(scheme)
    delivery = send.delivery(route, now=NOW)
    verified = verify(route, delivery)
    assert verified.reply is None  # a delivery, not a handshake
    names = [name.lower() for name, _ in delivery.headers]
    assert len(names) == len(set(names)), "a header twice"
    assert "content-type" in names and "user-agent" in names
    if verified.delivery_id is not None:  # where hookd reads an id, it is the one reported
        assert verified.delivery_id.decode() == delivery.delivery_id
    if verified.event_type is not None:
        assert verified.event_type.decode() == delivery.event


@pytest.mark.parametrize("scheme", SIGNABLE)
def test_a_given_body_is_sent_as_is(scheme, tmp_path):
    route = route_for(scheme)
    body = b"From=%2B15005550001&Body=hi" if scheme == "twilio" else b'{"mine":true}'
    delivery = send.delivery(route, body=body, now=NOW)
    assert delivery.body == body
    verify(route, delivery)


@pytest.mark.parametrize("scheme", sorted(ROTATING))
def test_rotation_one_signature_per_secret_each_verifies_alone(scheme):
    both = route_for(scheme)
    delivery = send.delivery(both, now=NOW)
    for secret in OPTIONS[scheme]["secrets"]:
        verify(route_for(scheme, secrets=[secret]), delivery)  # raises if not signed with it
    # and a secret not configured matches none of them
    stranger = "whsec_c3RyYW5nZXI=" if scheme in ("svix", "standard-webhooks") else "stranger"
    if scheme == "stripe":
        stranger = "whsec_stranger"
    elif scheme == "paddle":
        stranger = "pdl_ntfset_stranger"
    with pytest.raises(Rejected, match="signature mismatch"):
        verify(route_for(scheme, secrets=[stranger]), delivery)


def test_rotation_header_formats():
    stripe = send.delivery(route_for("stripe"), now=NOW)
    items = header(stripe, "Stripe-Signature").split(",")
    assert items[0] == f"t={int(NOW)}" and [i[:3] for i in items[1:]] == ["v1=", "v1="]
    paddle = send.delivery(route_for("paddle"), now=NOW)
    items = header(paddle, "Paddle-Signature").split(";")
    assert items[0] == f"ts={int(NOW)}" and [i[:3] for i in items[1:]] == ["h1=", "h1="]
    pagerduty = send.delivery(route_for("pagerduty"), now=NOW)
    assert [i[:3] for i in header(pagerduty, "X-PagerDuty-Signature").split(",")] == ["v1="] * 2
    standard = send.delivery(route_for("standard-webhooks"), now=NOW)
    assert [e[:3] for e in header(standard, "webhook-signature").split(" ")] == ["v1,"] * 2
    assert header(standard, "webhook-timestamp") == str(int(NOW))
    assert header(standard, "webhook-id") == standard.delivery_id
    svix = send.delivery(route_for("svix"), now=NOW)
    assert header(svix, "svix-id") == svix.delivery_id
    assert not any(n.startswith("webhook-") for n, _ in svix.headers)


def test_single_signature_schemes_sign_with_the_first_secret():
    delivery = send.delivery(route_for("github"), now=NOW)
    verify(route_for("github", secrets=["gh-new"]), delivery)
    with pytest.raises(Rejected):
        verify(route_for("github", secrets=["gh-old"]), delivery)


def test_provider_headers_id_event_and_timestamps():
    github = send.delivery(route_for("github"), event="issues", now=NOW)
    assert header(github, "X-GitHub-Event") == "issues" == github.event
    assert header(github, "X-GitHub-Delivery") == github.delivery_id
    assert header(github, "X-Hub-Signature").startswith("sha1=")
    assert header(github, "X-Hub-Signature-256").startswith("sha256=")
    assert header(github, "User-Agent").startswith("GitHub-Hookshot/")
    shopify = send.delivery(route_for("shopify"), now=NOW)
    assert header(shopify, "X-Shopify-Topic") == "orders/create"
    assert header(shopify, "X-Shopify-Webhook-Id") == shopify.delivery_id
    assert header(shopify, "X-Shopify-Shop-Domain").endswith(".myshopify.com")
    slack = send.delivery(route_for("slack"), now=NOW)
    assert header(slack, "X-Slack-Request-Timestamp") == str(int(NOW))
    assert json.loads(slack.body)["event_id"] == slack.delivery_id
    linear = send.delivery(route_for("linear"), now=NOW)
    assert json.loads(linear.body)["webhookTimestamp"] == int(NOW * 1000)
    assert header(linear, "Linear-Delivery") == linear.delivery_id
    twilio = send.delivery(route_for("twilio"), now=NOW)
    assert header(twilio, "Content-Type") == "application/x-www-form-urlencoded"
    assert twilio.event is None
    hmac = send.delivery(route_for("hmac"), now=NOW)
    assert header(hmac, "X-Acme-Delivery") == hmac.delivery_id
    assert header(hmac, "X-Acme-Timestamp") == str(int(NOW))


def test_event_goes_where_the_provider_puts_it():
    stripe = send.delivery(route_for("stripe"), event="invoice.paid", now=NOW)
    document = json.loads(stripe.body)
    assert document["type"] == "invoice.paid" and document["id"] == stripe.delivery_id
    assert route_for("stripe").verifier.verify(as_request(stripe, b"/stripe"), NOW).event_type == (
        b"invoice.paid"
    )
    paddle = send.delivery(route_for("paddle"), event="subscription.created", now=NOW)
    assert json.loads(paddle.body)["event_type"] == "subscription.created"


def test_each_delivery_is_fresh():
    route = route_for("stripe")
    first, second = send.delivery(route, now=NOW), send.delivery(route, now=NOW)
    assert first.delivery_id != second.delivery_id and first.body != second.body
    github = route_for("github")
    body = b'{"same":1}'
    a, b = send.delivery(github, body=body, now=NOW), send.delivery(github, body=body, now=NOW)
    assert a.delivery_id != b.delivery_id  # a header id: fresh even for the same body
    # an id that lives in the body is the caller's: not reported, not invented
    assert send.delivery(route, body=body, now=NOW).delivery_id is None


def test_old_timestamps_are_refused_so_the_timestamp_is_real():
    route = route_for("stripe")
    delivery = send.delivery(route, now=NOW - 3600)
    with pytest.raises(Rejected, match="too old"):
        verify(route, delivery)


def test_url_schemes_sign_the_query_of_the_target():
    route = route_for("twilio")
    target = b"/twilio?tenant=a"
    delivery = send.delivery(route, target=target, now=NOW)
    route.verifier.verify(as_request(delivery, target), NOW)
    with pytest.raises(Rejected):
        route.verifier.verify(as_request(delivery, b"/twilio?tenant=b"), NOW)


@pytest.mark.parametrize(
    ("scheme", "options", "why"),
    [
        (
            "discord",
            {"public_key": "0" * 64},
            "Ed25519 private key that only Discord holds",
        ),
        (
            "sendgrid",
            {
                "public_key": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaW"
                "jcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
            },
            "ECDSA P-256 private key that only SendGrid holds",
        ),
    ],
)
def test_asymmetric_schemes_say_why_they_cannot_be_signed(scheme, options, why):
    raw = {"path": f"/{scheme}", "topic": "t", "verify": scheme, **options}
    [route] = build_routes(validate({"routes": [raw]}, {})).routes
    with pytest.raises(CannotSign) as caught:
        send.delivery(route)
    assert why in str(caught.value) and f"/{scheme}" in str(caught.value)


def test_default_url_and_target():
    config = validate({"server": {"listen": "0.0.0.0:8080"}, "routes": [{**_github()}]}, {})
    [route] = build_routes(config).routes
    assert send.default_url(config, route) == "http://127.0.0.1:8080/gh"
    config = validate({"server": {"listen": "[::1]:9000"}, "routes": [_github()]}, {})
    assert send.default_url(config, route) == "http://[::1]:9000/gh"
    assert send.target_of("http://h:1/a/b?x=1") == b"/a/b?x=1"
    assert send.target_of("http://h:1") == b"/"


def _github() -> dict[str, object]:
    return {"path": "/gh", "topic": "t", "verify": "github", "secrets": ["s"]}


def write_config(tmp_path: Path, routes: list[dict[str, object]]) -> Path:
    lines = ['[server]\nlisten = "127.0.0.1:1"\n']
    for route in routes:
        lines.append("[[routes]]")
        for key, value in route.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "hookd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_unknown_route_and_asymmetric_scheme_are_clear_errors(tmp_path, capsys):
    discord = {"path": "/discord", "topic": "t", "verify": "discord", "public_key": "0" * 64}
    config = write_config(tmp_path, [_github(), discord])
    for command in ("send", "sign"):
        assert cli.main([command, "--config", str(config), "--route", "/nope"]) == 2
        assert "no route '/nope' (routes: /gh, /discord)" in capsys.readouterr().err
        assert cli.main([command, "--config", str(config), "--route", "/discord"]) == 2
        err = capsys.readouterr().err
        assert 'scheme "discord", which hookd cannot sign' in err and "private key" in err


def test_cli_send_reports_a_connection_failure(tmp_path, capsys):
    config = write_config(tmp_path, [_github()])
    code = cli.main(["send", "--config", str(config), "--route", "/gh", "--count", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1/2 error: POST http://127.0.0.1:1/gh" in err and "2/2 error" in err


def test_cli_sign_prints_the_provider_headers(tmp_path, capsys):
    config = write_config(tmp_path, [{**_github(), "secrets": ["a", "b"]}])
    assert cli.main(["sign", "--config", str(config), "--route", "/gh", "--event", "ping"]) == 0
    parts = shlex.split(capsys.readouterr().out)
    headers = [parts[i + 1] for i, part in enumerate(parts) if part == "-H"]
    names = {h.partition(":")[0] for h in headers}
    assert {"X-GitHub-Delivery", "X-Hub-Signature-256", "X-Hub-Signature"} <= names
    assert "X-GitHub-Event: ping" in headers
    assert parts[5] == "http://127.0.0.1:1/gh"


@pytest.mark.parametrize("scheme", SIGNABLE)
def test_the_reported_delivery_id_is_in_the_request(scheme):
    route = route_for(scheme)
    for body in (None, b'{"mine":true}' if scheme != "twilio" else b"Body=hi"):
        delivery = send.delivery(route, body=body, now=NOW)
        if delivery.delivery_id is not None:
            sent = delivery.body.decode() + "".join(value for _, value in delivery.headers)
            assert delivery.delivery_id in sent


def test_a_provider_without_event_types_reports_none():
    assert send.delivery(route_for("twilio"), event="ignored", now=NOW).event is None
