"""Each scheme's own rules: multi-signature lists, delivery ids, handshakes, URL signing."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from verify_helpers import NOW, TARGET, request, signed, symmetric, verifier

from hookd.verify import Rejected, Verified


def hex_hmac(secret: str, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.digest(secret.encode(), message, algorithm).hex()


def b64_hmac(secret: str, message: bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(hmac.digest(secret.encode(), message, algorithm)).decode()


BODY = b'{"hello":"world"}'


# -- body HMACs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "header", "value"),
    [
        ("segment", "X-Signature", hex_hmac("s", BODY, "sha1")),
        ("github", "X-Hub-Signature-256", "sha256=" + hex_hmac("s", BODY)),
        ("shopify", "X-Shopify-Hmac-Sha256", b64_hmac("s", BODY)),
        ("typeform", "Typeform-Signature", "sha256=" + b64_hmac("s", BODY)),
        ("intercom", "X-Hub-Signature", "sha1=" + hex_hmac("s", BODY, "sha1")),
        ("bitbucket", "X-Hub-Signature", "sha256=" + hex_hmac("s", BODY)),
        ("pagerduty", "X-PagerDuty-Signature", "v1=" + hex_hmac("s", BODY)),
    ],
)
def test_body_hmacs_match_an_independent_computation(scheme: str, header: str, value: str) -> None:
    v = verifier(scheme, secrets=["s"])
    assert v.verify(request([(header, value)], body=BODY), NOW) == Verified()
    # the prefix is part of the format: without it the header is malformed
    bare = value.partition("=")[2] if "=" in value[:7] else "sha256=" + value
    with pytest.raises(Rejected):
        v.verify(request([(header, bare)], body=BODY), NOW)


@pytest.mark.parametrize(
    ("scheme", "headers", "expected"),
    [
        ("github", [("X-GitHub-Delivery", "d-1"), ("X-GitHub-Event", "push")], (b"d-1", b"push")),
        ("shopify", [("X-Shopify-Webhook-Id", "w-1"), ("X-Shopify-Topic", "orders/create")],
         (b"w-1", b"orders/create")),
        ("bitbucket", [("X-Request-UUID", "u-1"), ("X-Event-Key", "repo:push")],
         (b"u-1", b"repo:push")),
        ("gitlab", [("X-Gitlab-Event-UUID", "g-1"), ("X-Gitlab-Event", "Push Hook")],
         (b"g-1", b"Push Hook")),
        ("linear", [("Linear-Delivery", "l-1"), ("Linear-Event", "Issue")], (b"l-1", b"Issue")),
    ],
)  # fmt: skip
def test_delivery_id_and_event_type_come_from_the_headers(
    scheme: str, headers: list[tuple[str, str]], expected: tuple[bytes, bytes]
) -> None:
    v = symmetric(scheme, "secret-A")
    result = v.verify(request(signed(scheme, "secret-A") + headers), NOW)
    assert (result.delivery_id, result.event_type) == expected


def test_pagerduty_tries_every_v1_and_ignores_other_versions() -> None:
    good = hex_hmac("new", BODY)
    v = verifier("pagerduty", secrets=["new"])
    header = f"v1={hex_hmac('old', BODY)}, v2=zzz,v1={good}"
    assert v.verify(request([("X-PagerDuty-Signature", header)], body=BODY), NOW) == Verified()
    with pytest.raises(Rejected, match="no v1"):
        v.verify(request([("X-PagerDuty-Signature", f"v2={good}")], body=BODY), NOW)


def test_linear_body_timestamp_is_checked_even_when_the_header_is_fresh() -> None:
    v = verifier("linear", secrets=["s"])
    stale = b'{"action":"create","webhookTimestamp":%d}' % int((NOW - 120) * 1000)
    headers = [("Linear-Signature", hex_hmac("s", stale)),
               ("Linear-Timestamp", str(int(NOW * 1000)))]  # fmt: skip
    with pytest.raises(Rejected, match="too old"):
        v.verify(request(headers, body=stale), NOW)
    fresh = b'{"action":"create","webhookTimestamp":%d}' % int((NOW - 30) * 1000)
    only_body = [("Linear-Signature", hex_hmac("s", fresh))]
    assert v.verify(request(only_body, body=fresh), NOW) == Verified()


def test_linear_without_any_timestamp_is_refused() -> None:
    v = verifier("linear", secrets=["s"])
    with pytest.raises(Rejected, match="missing timestamp"):
        v.verify(request([("Linear-Signature", hex_hmac("s", BODY))], body=BODY), NOW)
    bad = b'{"webhookTimestamp":"soon"}'
    with pytest.raises(Rejected, match="malformed webhookTimestamp"):
        v.verify(request([("Linear-Signature", hex_hmac("s", bad))], body=bad), NOW)


# -- t=…,v1=… family ------------------------------------------------------------------------


def test_stripe_reports_event_id_and_type_from_the_body() -> None:
    body = b'{"id":"evt_9","type":"charge.succeeded","object":"event"}'
    v = symmetric("stripe", "whsec_aaaa")
    result = v.verify(request(signed("stripe", "whsec_aaaa", body=body), body=body), NOW)
    assert result == Verified(delivery_id=b"evt_9", event_type=b"charge.succeeded")
    not_json = b"plain"
    result = v.verify(request(signed("stripe", "whsec_aaaa", body=not_json), body=not_json), NOW)
    assert result == Verified()


@pytest.mark.parametrize(
    "header",
    [
        "v1=" + "ab" * 32,  # no t
        "t=1,t=2,v1=" + "ab" * 32,  # ambiguous t
        "t=12a,v1=" + "ab" * 32,
        "t=-5,v1=" + "ab" * 32,
        f"t={int(NOW)}",  # no v1
        f"t={int(NOW)},v1=nothex",
    ],
)
def test_stripe_malformed_headers(header: str) -> None:
    with pytest.raises(Rejected, match="malformed"):
        symmetric("stripe", "whsec_aaaa").verify(request([("Stripe-Signature", header)]), NOW)


def test_paddle_several_h1_and_unknown_keys() -> None:
    ts = str(int(NOW))
    message = f"{ts}:".encode() + BODY
    header = f"ts={ts};h1={hex_hmac('old', message)};h2=future;h1={hex_hmac('new', message)}"
    v = verifier("paddle", secrets=["new"])
    assert v.verify(request([("Paddle-Signature", header)], body=BODY), NOW) == Verified()


def test_paddle_reports_event_id_from_the_body() -> None:
    body = b'{"event_id":"evt_01h","event_type":"transaction.completed"}'
    v = symmetric("paddle", "pdl_ntfset_A")
    result = v.verify(request(signed("paddle", "pdl_ntfset_A", body=body), body=body), NOW)
    assert result == Verified(delivery_id=b"evt_01h", event_type=b"transaction.completed")


def test_calendly_signature_layout() -> None:
    t = str(int(NOW))
    header = f"t={t},v1={hex_hmac('key', f'{t}.'.encode() + BODY)}"
    v = verifier("calendly", secrets=["key"])
    result = v.verify(request([("Calendly-Webhook-Signature", header)], body=BODY), NOW)
    assert result == Verified()


# -- Standard Webhooks ------------------------------------------------------------------------


def test_standard_webhooks_only_v1_entries_count() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    msg = f"msg_1.{int(NOW)}.".encode() + BODY
    good = base64.b64encode(hmac.digest(b"k" * 24, msg, "sha256")).decode()
    v = verifier("standard-webhooks", secrets=[secret])
    base = [("webhook-id", "msg_1"), ("webhook-timestamp", str(int(NOW)))]
    ok = [*base, ("webhook-signature", f"v2,{good}  garbage v1,!!! v1,{good}")]
    assert v.verify(request(ok, body=BODY), NOW).delivery_id == b"msg_1"
    with pytest.raises(Rejected, match="no v1"):
        v.verify(request([*base, ("webhook-signature", f"v1a,{good}")], body=BODY), NOW)


def test_standard_webhooks_unpadded_and_bare_secrets() -> None:
    raw = b"0123456789abcdefghij"  # 20 bytes: base64 has padding
    padded = base64.b64encode(raw).decode()
    for secret in (padded, "whsec_" + padded.rstrip("=")):
        v = verifier("standard-webhooks", secrets=[secret])
        assert v.secrets == (raw,)


def test_standard_webhooks_timestamp_must_be_integer_seconds() -> None:
    v = symmetric("standard-webhooks", "whsec_" + base64.b64encode(b"A" * 32).decode())
    headers = [("webhook-id", "m"), ("webhook-timestamp", f"{NOW:.1f}"),
               ("webhook-signature", "v1,AAAA")]  # fmt: skip
    with pytest.raises(Rejected, match="malformed webhook-timestamp"):
        v.verify(request(headers), NOW)


# -- handshakes -----------------------------------------------------------------------------


def slack_headers(secret: str, body: bytes) -> list[tuple[str, str]]:
    ts = str(int(NOW))
    return [("X-Slack-Signature", "v0=" + hex_hmac(secret, f"v0:{ts}:".encode() + body)),
            ("X-Slack-Request-Timestamp", ts)]  # fmt: skip


def test_slack_url_verification_replies_with_the_challenge() -> None:
    body = b'{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",' \
        b'"type":"url_verification"}'  # fmt: skip
    v = verifier("slack", secrets=["s"])
    result = v.verify(request(slack_headers("s", body), body=body), NOW)
    assert result.reply is not None
    assert orjson.loads(result.reply) == {
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    }


def test_slack_unsigned_url_verification_gets_no_reply() -> None:
    body = b'{"challenge":"x","type":"url_verification"}'
    with pytest.raises(Rejected):
        verifier("slack", secrets=["s"]).verify(
            request(slack_headers("other", body), body=body), NOW
        )


def test_slack_event_mentioning_url_verification_is_published() -> None:
    body = b'{"type":"event_callback","event":{"text":"url_verification"}}'
    result = verifier("slack", secrets=["s"]).verify(
        request(slack_headers("s", body), body=body), NOW
    )
    assert result.reply is None


def zoom_headers(secret: str, body: bytes) -> list[tuple[str, str]]:
    ts = str(int(NOW))
    return [("x-zm-signature", "v0=" + hex_hmac(secret, f"v0:{ts}:".encode() + body)),
            ("x-zm-request-timestamp", ts)]  # fmt: skip


def test_zoom_url_validation_answers_with_the_secret_that_verified() -> None:
    body = b'{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event":"endpoint.url_validation"}'
    v = verifier("zoom", secrets=["old-token", "new-token"])
    result = v.verify(request(zoom_headers("new-token", body), body=body), NOW)
    assert result.reply is not None
    assert orjson.loads(result.reply) == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": hex_hmac("new-token", b"qgg8vlvZRS6UYooatFL8Aw"),
    }
    with pytest.raises(Rejected):
        v.verify(request(zoom_headers("intruder", body), body=body), NOW)


def test_zoom_url_validation_without_token_is_refused() -> None:
    body = b'{"payload":{},"event":"endpoint.url_validation"}'
    with pytest.raises(Rejected, match="plainToken"):
        verifier("zoom", secrets=["z"]).verify(request(zoom_headers("z", body), body=body), NOW)


def discord_headers(key: Ed25519PrivateKey, body: bytes) -> list[tuple[str, str]]:
    ts = str(int(NOW))
    return [("X-Signature-Ed25519", key.sign(ts.encode() + body).hex()),
            ("X-Signature-Timestamp", ts)]  # fmt: skip


def test_discord_ping_gets_a_pong(ed25519_key: Ed25519PrivateKey, request_keys: dict) -> None:
    v = verifier("discord", public_key=request_keys["discord"])
    ping = b'{"type":1,"id":"1","application_id":"2"}'
    assert v.verify(request(discord_headers(ed25519_key, ping), body=ping), NOW).reply == (
        b'{"type":1}'
    )
    command = b'{"type":2,"id":"99"}'
    result = v.verify(request(discord_headers(ed25519_key, command), body=command), NOW)
    assert result == Verified(delivery_id=b"99", event_type=b"2")


def test_discord_wrong_key_tamper_and_rotation(
    ed25519_key: Ed25519PrivateKey, request_keys: dict
) -> None:
    other = Ed25519PrivateKey.generate()
    body = b'{"type":2}'
    v = verifier("discord", public_key=request_keys["discord"])
    with pytest.raises(Rejected, match="mismatch"):
        v.verify(request(discord_headers(other, body), body=body), NOW)
    with pytest.raises(Rejected, match="mismatch"):
        v.verify(request(discord_headers(ed25519_key, body), body=body + b" "), NOW)
    from conftest import discord_public

    both = verifier("discord", public_key=[discord_public(other), request_keys["discord"]])
    interaction = Verified(event_type=b"2")  # a type 2 interaction, no id in the body
    assert both.verify(request(discord_headers(ed25519_key, body), body=body), NOW) == interaction
    assert both.verify(request(discord_headers(other, body), body=body), NOW) == interaction


def test_sendgrid_generated_key_and_rotation(
    ecdsa_key: ec.EllipticCurvePrivateKey, request_keys: dict
) -> None:
    ts = "1700000000"
    sig = base64.b64encode(ecdsa_key.sign(ts.encode() + BODY, ec.ECDSA(hashes.SHA256()))).decode()
    headers = [("X-Twilio-Email-Event-Webhook-Signature", sig),
               ("X-Twilio-Email-Event-Webhook-Timestamp", ts)]  # fmt: skip
    v = verifier("sendgrid", public_key=request_keys["sendgrid"])
    assert v.verify(request(headers, body=BODY), NOW) == Verified()
    with pytest.raises(Rejected):
        v.verify(request(headers, body=BODY + b"x"), NOW)
    with pytest.raises(Rejected, match="missing"):
        v.verify(request(headers[:1], body=BODY), NOW)


# -- public_url schemes ---------------------------------------------------------------------


def test_hubspot_signs_method_url_with_query_body_and_ms_timestamp() -> None:
    url = "https://hooks.example.com/hubspot"
    ts = str(int(NOW * 1000))
    message = f"POST{url}?portal=9".encode() + BODY + ts.encode()
    headers = [("X-HubSpot-Signature-v3", b64_hmac("cs", message)),
               ("X-HubSpot-Request-Timestamp", ts)]  # fmt: skip
    v = verifier("hubspot", secrets=["cs"], public_url=url)
    target = b"/internal/hubspot?portal=9"
    assert v.verify(request(headers, body=BODY, target=target), NOW) == Verified()
    with pytest.raises(Rejected, match="mismatch"):
        v.verify(request(headers, body=BODY, target=target, method=b"PUT"), NOW)
    with pytest.raises(Rejected, match="mismatch"):
        v.verify(request(headers, body=BODY, target=b"/internal/hubspot"), NOW)


def test_square_signs_public_url_and_body() -> None:
    url = "https://example.com/webhooks"
    headers = [("x-square-hmacsha256-signature", b64_hmac("key", url.encode() + BODY))]
    v = verifier("square", secrets=["key"], public_url=url)
    assert v.verify(request(headers, body=BODY, target=b"/behind/proxy"), NOW) == Verified()
    with pytest.raises(Rejected):
        v.verify(request(headers, body=BODY, target=b"/behind/proxy?x=1"), NOW)


def test_twilio_non_utf8_form_body_is_refused() -> None:
    v = verifier("twilio", secrets=["t"], public_url="https://a.example/t")
    with pytest.raises(Rejected, match="malformed form body"):
        v.verify(request([("X-Twilio-Signature", "AAAA")], body=b"a=\xff"), NOW)


def test_twilio_body_sha256_round_trip() -> None:
    body = b'{"a":1}'
    target = b"/t?bodySHA256=" + hashlib.sha256(body).hexdigest().encode()
    v = verifier("twilio", secrets=["t"], public_url="https://a.example/t")
    result = v.verify(request(v.sign(body, target, NOW), body=body, target=target), NOW)
    assert result == Verified()


# -- generic hmac, token, basic -------------------------------------------------------------


def test_hmac_template_fields() -> None:
    v = verifier(
        "hmac", secrets=["k"], header="X-Sig", template="{ts}:{id}:{method}:{url}:{body}{{x}}",
        timestamp_header="X-Ts", id_header="X-Id", prefix="sha256=",
    )  # fmt: skip
    ts = str(int(NOW))
    message = f"{ts}:abc:POST:/hooks/x?q=1:".encode() + BODY + b"{x}"
    headers = [("X-Sig", "sha256=" + hex_hmac("k", message)), ("X-Ts", ts), ("X-Id", "abc")]
    result = v.verify(request(headers, body=BODY, target=b"/hooks/x?q=1"), NOW)
    assert result == Verified(delivery_id=b"abc")


def test_hmac_default_is_hex_sha256_of_the_body_without_timestamp() -> None:
    v = verifier("hmac", secrets=["k"], header="X-Sig")
    assert v.tolerance_s is None
    assert v.verify(request([("X-Sig", hex_hmac("k", BODY))], body=BODY), NOW) == Verified()


def test_token_bearer_and_custom_header() -> None:
    bearer = verifier("token", secrets=["tok-1", "tok-2"])
    assert bearer.verify(request([("Authorization", "Bearer tok-2")]), NOW) == Verified()
    with pytest.raises(Rejected, match="Bearer"):
        bearer.verify(request([("Authorization", "tok-2")]), NOW)
    with pytest.raises(Rejected, match="mismatch"):
        bearer.verify(request([("Authorization", "Bearer tok-3")]), NOW)
    custom = verifier("token", secrets=["tok-1"], header="X-Api-Key")
    assert custom.verify(request([("X-Api-Key", "tok-1")]), NOW) == Verified()


@pytest.mark.parametrize(
    ("credentials", "accepted"),
    [("alice:pw", True), ("bob:pw2", True), ("alice:pw2", False), ("bob:pw", False),
     ("alice:", False), ("alice", False), ("alice:pw:x", False)],
)  # fmt: skip
def test_basic_checks_user_and_password(credentials: str, accepted: bool) -> None:
    v = verifier("basic", secrets=["alice:pw", "bob:pw2"])
    header = [("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())]
    if accepted:
        assert v.verify(request(header), NOW) == Verified()
    else:
        with pytest.raises(Rejected):
            v.verify(request(header), NOW)


def test_basic_refuses_other_schemes_and_bad_base64() -> None:
    v = verifier("basic", secrets=["alice:pw"])
    for value in ("Bearer YWxpY2U6cHc=", "Basic ***", "Basic"):
        with pytest.raises(Rejected, match="malformed"):
            v.verify(request([("Authorization", value)]), NOW)


def test_target_constant_is_used_by_sign() -> None:
    # sign() of URL schemes appends the target's query, nothing else of it
    v = verifier("square", secrets=["k"], public_url="https://a.example/s")
    [(_, sig)] = v.sign(BODY, TARGET + b"?z=1", NOW)
    assert sig == b64_hmac("k", b"https://a.example/s?z=1" + BODY)
