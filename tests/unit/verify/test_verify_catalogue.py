"""Behaviour every scheme shares, checked for each one through its own ``sign``."""

from __future__ import annotations

import pytest
from verify_helpers import (
    BODY,
    DEFAULT_TOLERANCE,
    NOW,
    SYMMETRIC,
    TARGET,
    TIMESTAMPED,
    accepted,
    request,
    signed,
    symmetric,
    verifier,
)

from hookd.verify import SCHEMES, CannotSign, Rejected, Verified

ALL_SCHEMES = [
    "segment", "github", "stripe", "standard-webhooks", "svix", "shopify", "slack", "twilio",
    "gitlab", "paddle", "linear", "hubspot", "square", "pagerduty", "typeform", "intercom",
    "zoom", "calendly", "bitbucket", "sendgrid", "discord", "hmac", "token", "basic", "none",
]  # fmt: skip
SCHEMES_UNDER_TEST = sorted(SYMMETRIC)


def test_the_catalogue_is_complete() -> None:
    assert sorted(SCHEMES) == sorted(ALL_SCHEMES)
    assert SCHEMES["svix"] is SCHEMES["standard-webhooks"]


def test_every_symmetric_scheme_is_in_the_table() -> None:
    asymmetric = {name for name, cls in SCHEMES.items() if not cls.needs_secrets}
    assert asymmetric == {"sendgrid", "discord", "none"}
    assert set(SYMMETRIC) == set(SCHEMES) - asymmetric


@pytest.mark.parametrize("scheme", SCHEMES_UNDER_TEST)
def test_sign_round_trips_through_verify(scheme: str) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    result = symmetric(scheme, a).verify(request(signed(scheme, a)), NOW)
    assert isinstance(result, Verified)
    assert result.reply is None


@pytest.mark.parametrize(
    "scheme", [s for s in SCHEMES_UNDER_TEST if s not in ("gitlab", "token", "basic")]
)
def test_a_tampered_body_is_refused(scheme: str) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    with pytest.raises(Rejected):
        symmetric(scheme, a).verify(request(signed(scheme, a), body=BODY + b" "), NOW)


@pytest.mark.parametrize("scheme", SCHEMES_UNDER_TEST)
def test_a_wrong_secret_is_refused(scheme: str) -> None:
    a, _, wrong = SYMMETRIC[scheme][1]
    with pytest.raises(Rejected, match="mismatch"):
        symmetric(scheme, a).verify(request(signed(scheme, wrong)), NOW)


@pytest.mark.parametrize("scheme", SCHEMES_UNDER_TEST)
def test_rotation_accepts_the_second_secret(scheme: str) -> None:
    a, b, _ = SYMMETRIC[scheme][1]
    both = symmetric(scheme, a, b)
    for secret in (b, a):
        headers = signed(scheme, secret)
        assert both.verify(request(headers), NOW) == accepted(scheme, headers)


@pytest.mark.parametrize("scheme", SCHEMES_UNDER_TEST)
def test_each_missing_header_is_refused(scheme: str) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    headers = signed(scheme, a)
    v = symmetric(scheme, a)
    for dropped in headers:
        if scheme == "hmac" and dropped[0] == "X-Id":
            continue  # covered below: the id is signed, so dropping it is a mismatch
        with pytest.raises(Rejected):
            v.verify(request([h for h in headers if h != dropped]), NOW)


@pytest.mark.parametrize("scheme", SCHEMES_UNDER_TEST)
@pytest.mark.parametrize(
    "garbage",
    [b"", b"%%%", b"v1=", b"t=,v1=,ts=;h1=", b"\xff\xfe\x00", "é".encode(), b"A" * 5000],
)
def test_each_malformed_header_is_refused(scheme: str, garbage: bytes) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    headers = signed(scheme, a)
    v = symmetric(scheme, a)
    for i, (name, _) in enumerate(headers):
        mangled = [*headers[:i], (name, garbage), *headers[i + 1 :]]
        with pytest.raises(Rejected):
            v.verify(request(mangled), NOW)


@pytest.mark.parametrize("scheme", SCHEMES_UNDER_TEST)
def test_a_duplicated_signature_header_is_refused(scheme: str) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    headers = signed(scheme, a)
    with pytest.raises(Rejected, match="duplicate"):
        symmetric(scheme, a).verify(request([*headers, headers[0]]), NOW)


@pytest.mark.parametrize("scheme", sorted(TIMESTAMPED))
def test_timestamps_follow_each_schemes_rule(scheme: str) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    _, rejects_future = TIMESTAMPED[scheme]
    tolerance = DEFAULT_TOLERANCE[scheme]
    v = symmetric(scheme, a)
    assert v.tolerance_s == tolerance
    fresh = signed(scheme, a, now=NOW - tolerance + 2)
    assert v.verify(request(fresh), NOW) == accepted(scheme, fresh)
    with pytest.raises(Rejected, match="too old"):
        v.verify(request(signed(scheme, a, now=NOW - tolerance - 2)), NOW)
    future = signed(scheme, a, now=NOW + tolerance + 2)
    if rejects_future:
        with pytest.raises(Rejected, match="future"):
            v.verify(request(future), NOW)
    else:
        assert v.verify(request(future), NOW) == accepted(scheme, future)


@pytest.mark.parametrize("scheme", sorted(TIMESTAMPED))
def test_the_routes_tolerance_overrides_the_default(scheme: str) -> None:
    a, _, _ = SYMMETRIC[scheme][1]
    strict = symmetric(scheme, a, tolerance_s=1)
    lenient = symmetric(scheme, a, tolerance_s=100_000)
    three_hours_ago = signed(scheme, a, now=NOW - 3 * 3600)
    assert lenient.verify(request(three_hours_ago), NOW) == accepted(scheme, three_hours_ago)
    with pytest.raises(Rejected, match="too old"):
        strict.verify(request(signed(scheme, a, now=NOW - 3)), NOW)


@pytest.mark.parametrize("scheme", ["sendgrid", "discord"])
def test_asymmetric_schemes_cannot_sign(scheme: str, request_keys: dict[str, str]) -> None:
    v = verifier(scheme, public_key=request_keys[scheme])
    with pytest.raises(CannotSign):
        v.sign(BODY, TARGET, NOW)


def test_none_accepts_anything_and_signs_nothing() -> None:
    v = verifier("none")
    assert v.verify(request([]), NOW) == Verified()
    assert v.sign(BODY, TARGET, NOW) == []
