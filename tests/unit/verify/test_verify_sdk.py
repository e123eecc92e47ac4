"""Signed by the providers' own SDKs, verified by hookd (and the reverse where the SDK can
verify), plus the examples the providers publish, verbatim."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import stripe
import svix.webhooks
from slack_sdk.signature import Clock, SignatureVerifier
from standardwebhooks import Webhook as StandardWebhook
from twilio.request_validator import RequestValidator
from verify_helpers import NOW, request, verifier, whsec

from hookd.verify import Rejected, Verified

BODY = b'{"id":"evt_1NxYz","object":"event","type":"invoice.paid","data":{"n":"\xc3\xa9"}}'


# -- Stripe (stripe-python) ------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_5f0e3c0e"


def test_stripe_sdk_signature_is_accepted() -> None:
    header = stripe.WebhookSignature.generate_signature_header(
        BODY.decode(), STRIPE_SECRET, timestamp=int(NOW)
    )
    v = verifier("stripe", secrets=[STRIPE_SECRET])
    result = v.verify(request([("Stripe-Signature", header)], body=BODY), NOW)
    assert result == Verified(delivery_id=b"evt_1NxYz", event_type=b"invoice.paid")


def test_stripe_several_v1_entries_are_all_tried() -> None:
    t = int(NOW)
    signed = f"{t}.{BODY.decode()}"
    old = stripe.WebhookSignature._compute_signature(signed, "whsec_old")
    new = stripe.WebhookSignature._compute_signature(signed, STRIPE_SECRET)
    header = f"t={t},v1={old},v1={new}"
    v = verifier("stripe", secrets=[STRIPE_SECRET])
    result = v.verify(request([("Stripe-Signature", header)], body=BODY), NOW)
    assert result == Verified(delivery_id=b"evt_1NxYz", event_type=b"invoice.paid")


def test_stripe_v0_is_never_a_fallback() -> None:
    t = int(NOW)
    sig = stripe.WebhookSignature._compute_signature(f"{t}.{BODY.decode()}", STRIPE_SECRET)
    v = verifier("stripe", secrets=[STRIPE_SECRET])
    with pytest.raises(Rejected, match="no v1"):
        v.verify(request([("Stripe-Signature", f"t={t},v0={sig}")], body=BODY), NOW)


def test_stripe_sdk_accepts_hookd_sign() -> None:
    v = verifier("stripe", secrets=[STRIPE_SECRET])
    [(name, value)] = v.sign(BODY, b"/", NOW)
    assert name.lower() == "stripe-signature"
    # tolerance=None: the SDK reads the wall clock, hookd signed at a fixed NOW.
    assert stripe.WebhookSignature.verify_header(BODY, value, STRIPE_SECRET, tolerance=None)


# -- Standard Webhooks (standardwebhooks) and Svix (svix) ------------------------------------

SW_SECRET = whsec(b"standard")


def test_standardwebhooks_sdk_signature_is_accepted() -> None:
    when = datetime.fromtimestamp(NOW, tz=UTC)
    sig = StandardWebhook(SW_SECRET).sign("msg_2a", when, BODY.decode())
    headers = [("webhook-id", "msg_2a"), ("webhook-timestamp", str(int(NOW))),
               ("webhook-signature", f"v1a,c29tZXRoaW5n {sig}")]  # fmt: skip
    result = verifier("standard-webhooks", secrets=[SW_SECRET]).verify(
        request(headers, body=BODY), NOW
    )
    assert result.delivery_id == b"msg_2a"


def test_standard_webhooks_published_example() -> None:
    # The test vector of the Standard Webhooks reference libraries
    # (https://github.com/standard-webhooks/standard-webhooks, libraries/*/ tests).
    headers = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ]
    v = verifier("standard-webhooks", secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    body = b'{"test": 2432232314}'
    result = v.verify(request(headers, body=body), 1614265330)
    assert result == Verified(delivery_id=b"msg_p5jXN8AQM9LWM0D4loKWxJek")
    with pytest.raises(Rejected):
        v.verify(request(headers, body=b'{"test": 2432232315}'), 1614265330)


def test_svix_sdk_signature_with_svix_headers_is_accepted() -> None:
    when = datetime.fromtimestamp(NOW, tz=UTC)
    sig = svix.webhooks.Webhook(SW_SECRET).sign("msg_svix", when, BODY.decode())
    headers = [("svix-id", "msg_svix"), ("svix-timestamp", str(int(NOW))),
               ("svix-signature", sig)]  # fmt: skip
    result = verifier("svix", secrets=[SW_SECRET]).verify(request(headers, body=BODY), NOW)
    assert result.delivery_id == b"msg_svix"


def test_svix_headers_win_over_webhook_headers_like_the_sdk() -> None:
    when = datetime.fromtimestamp(NOW, tz=UTC)
    sig = svix.webhooks.Webhook(SW_SECRET).sign("msg_svix", when, BODY.decode())
    headers = [("svix-id", "msg_svix"), ("svix-timestamp", str(int(NOW))),
               ("svix-signature", sig), ("webhook-id", "msg_other")]  # fmt: skip
    v = verifier("svix", secrets=[SW_SECRET])
    assert v.verify(request(headers, body=BODY), NOW).delivery_id == b"msg_svix"


def test_standardwebhooks_sdk_accepts_hookd_sign() -> None:
    v = verifier("standard-webhooks", secrets=[SW_SECRET])
    headers = dict(v.sign(BODY, b"/", time.time()))
    StandardWebhook(SW_SECRET).verify(BODY, headers)  # raises if wrong


# -- Slack (slack_sdk) ------------------------------------------------------------------------

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def test_slack_sdk_signature_is_accepted() -> None:
    ts = str(int(NOW))
    sig = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=BODY)
    headers = [("X-Slack-Signature", sig), ("X-Slack-Request-Timestamp", ts)]
    result = verifier("slack", secrets=[SLACK_SECRET]).verify(request(headers, body=BODY), NOW)
    assert result == Verified()  # accepted, and not a url_verification handshake


def test_slack_published_example() -> None:
    # https://api.slack.com/authentication/verifying-requests-from-slack (worked example)
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
        b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
        b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
        b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d"
        b"10d2c447fce8b6703c"
    )
    headers = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ]
    v = verifier("slack", secrets=[SLACK_SECRET])
    assert v.verify(request(headers, body=body), 1531420618) == Verified()
    with pytest.raises(Rejected, match="too old"):
        v.verify(request(headers, body=body), 1531420618 + 301)


class _FixedClock(Clock):
    def now(self) -> float:
        return NOW


def test_slack_sdk_accepts_hookd_sign() -> None:
    headers = dict(verifier("slack", secrets=[SLACK_SECRET]).sign(BODY, b"/", NOW))
    assert SignatureVerifier(SLACK_SECRET, clock=_FixedClock()).is_valid_request(BODY, headers)


# -- Twilio (twilio-python) -------------------------------------------------------------------

TWILIO_TOKEN = "12345"
PUBLIC_URL = "https://mycompany.com/myapp.php"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_twilio_published_example() -> None:
    # twilio-python tests/unit/test_request_validator.py (the example of Twilio's docs,
    # https://www.twilio.com/docs/usage/security#validating-requests).
    form = urlencode(PARAMS).encode()
    headers = [("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")]
    v = verifier("twilio", secrets=[TWILIO_TOKEN], public_url=PUBLIC_URL)
    target = b"/myapp.php?foo=1&bar=2"
    assert v.verify(request(headers, body=form, target=target), NOW) == Verified()
    with pytest.raises(Rejected):
        v.verify(request(headers, body=form, target=b"/myapp.php?foo=1&bar=3"), NOW)


def test_twilio_sdk_form_signature_with_repeated_values() -> None:
    pairs = [("Body", "hé llo"), ("To", "+1"), ("MediaUrl", "b"), ("MediaUrl", "a")]
    form = urlencode(pairs).encode()

    class Multi(dict):
        def getall(self, key: str) -> list[str]:
            return [v for k, v in pairs if k == key]

    sig = RequestValidator(TWILIO_TOKEN).compute_signature(
        PUBLIC_URL + "?x=1", Multi({k: None for k, _ in pairs})
    )
    v = verifier("twilio", secrets=["other", TWILIO_TOKEN], public_url=PUBLIC_URL)
    headers = [("X-Twilio-Signature", sig), ("I-Twilio-Idempotency-Token", "idem-1")]
    result = v.verify(request(headers, body=form, target=b"/in?x=1"), NOW)
    assert result.delivery_id == b"idem-1"


def test_twilio_sdk_json_body_with_body_sha256() -> None:
    body = b'{"property": "value", "boolean": true}'
    digest = hashlib.sha256(body).hexdigest()
    url = f"{PUBLIC_URL}?bodySHA256={digest}"
    sig = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    v = verifier("twilio", secrets=[TWILIO_TOKEN], public_url=PUBLIC_URL)
    target = f"/myapp.php?bodySHA256={digest}".encode()
    headers = [("X-Twilio-Signature", sig)]
    assert v.verify(request(headers, body=body, target=target), NOW) == Verified()
    with pytest.raises(Rejected, match="bodySHA256"):
        v.verify(request(headers, body=body + b" ", target=target), NOW)


def test_twilio_sdk_port_variants_are_both_accepted() -> None:
    form = urlencode(PARAMS).encode()
    v = verifier("twilio", secrets=[TWILIO_TOKEN], public_url=PUBLIC_URL)
    for url in (PUBLIC_URL, "https://mycompany.com:443/myapp.php"):
        sig = RequestValidator(TWILIO_TOKEN).compute_signature(url, PARAMS)
        assert v.verify(request([("X-Twilio-Signature", sig)], body=form), NOW) == Verified()


def test_twilio_sdk_sha256_shared_key_signature() -> None:
    form = urlencode(PARAMS).encode()
    sig = RequestValidator(TWILIO_TOKEN).compute_signature(
        PUBLIC_URL, PARAMS, algorithm="HMAC_SHA256"
    )
    v = verifier("twilio", secrets=[TWILIO_TOKEN], public_url=PUBLIC_URL)
    settings = ("X-Twilio-Webhooks-Signature-Settings", "key=ks_1,algorithm=HMAC_SHA256")
    result = v.verify(request([("X-Twilio-Signature", sig), settings], body=form), NOW)
    assert result == Verified()
    with pytest.raises(Rejected, match="mismatch"):  # the same signature read as SHA-1
        v.verify(request([("X-Twilio-Signature", sig)], body=form), NOW)
    unknown = ("X-Twilio-Webhooks-Signature-Settings", "algorithm=HMAC_MD5")
    with pytest.raises(Rejected, match="unsupported"):
        v.verify(request([("X-Twilio-Signature", sig), unknown], body=form), NOW)


def test_twilio_sdk_accepts_hookd_sign() -> None:
    form = urlencode(PARAMS).encode()
    v = verifier("twilio", secrets=[TWILIO_TOKEN], public_url=PUBLIC_URL)
    [(_, sig)] = v.sign(form, b"/myapp.php?foo=1&bar=2", NOW)
    assert sig == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert RequestValidator(TWILIO_TOKEN).validate(PUBLIC_URL + "?foo=1&bar=2", PARAMS, sig)


# -- SendGrid (published fixture of every sendgrid SDK) --------------------------------------


def test_sendgrid_published_example() -> None:
    # sendgrid-python test/unit/test_eventwebhook.py (same fixture in the Node, Go, Java, C#
    # and Ruby SDKs): https://github.com/sendgrid/sendgrid-python
    key = (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7"
        "yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
    )
    signature = (
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDW"
        "YNH2j/0="
    )
    body = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
    headers = [
        ("X-Twilio-Email-Event-Webhook-Signature", signature),
        ("X-Twilio-Email-Event-Webhook-Timestamp", "1588788367"),
    ]
    v = verifier("sendgrid", public_key=key)
    assert v.verify(request(headers, body=body), NOW) == Verified()
    with pytest.raises(Rejected):
        v.verify(request(headers, body=b"payload"), NOW)
    wrong_ts = [headers[0], ("X-Twilio-Email-Event-Webhook-Timestamp", "1388788367")]
    with pytest.raises(Rejected):
        v.verify(request(wrong_ts, body=body), NOW)
    # The fixture's "bad key" is another valid P-256 key: the signature must not verify.
    bad = (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8RE"
        "ntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
    )
    with pytest.raises(Rejected):
        verifier("sendgrid", public_key=bad).verify(request(headers, body=body), NOW)
    rotated = verifier("sendgrid", public_key=[bad, key])
    assert rotated.verify(request(headers, body=body), NOW) == Verified()
