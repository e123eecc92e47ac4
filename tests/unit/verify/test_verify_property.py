"""Whatever arrives, verify answers ``Verified`` or raises ``Rejected`` — nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verify_helpers import NOW, SYMMETRIC, request, symmetric, verifier

from hookd.verify import SCHEMES, Rejected, Verified, Verifier

HEADER_NAMES = [
    b"x-signature", b"x-hub-signature-256", b"x-hub-signature", b"stripe-signature",
    b"webhook-id", b"webhook-timestamp", b"webhook-signature", b"svix-id", b"svix-timestamp",
    b"svix-signature", b"x-shopify-hmac-sha256", b"x-slack-signature",
    b"x-slack-request-timestamp", b"x-twilio-signature", b"x-twilio-webhooks-signature-settings",
    b"x-gitlab-token", b"paddle-signature", b"linear-signature", b"linear-timestamp",
    b"x-hubspot-signature-v3", b"x-hubspot-request-timestamp", b"x-square-hmacsha256-signature",
    b"x-pagerduty-signature", b"typeform-signature", b"x-zm-signature", b"x-zm-request-timestamp",
    b"calendly-webhook-signature", b"x-twilio-email-event-webhook-signature",
    b"x-twilio-email-event-webhook-timestamp", b"x-signature-ed25519", b"x-signature-timestamp",
    b"x-sig", b"x-ts", b"x-id", b"x-api-key", b"authorization",
]  # fmt: skip

header_values = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet="tvh01=,; .:abcdef", max_size=120).map(str.encode),
    st.sampled_from([b"t=1,v1=", b"v1,", b"ts=;h1=", b"v0=", b"sha256=", b"Basic Og==",
                     b"Bearer ", b"1760000000", b"99999999999999999999", b"-1", b"\xff"]),
)  # fmt: skip
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=8)
bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([
        b'{"type":"url_verification","challenge":1}', b'{"type":1}',
        b'{"event":"endpoint.url_validation","payload":{"plainToken":["x"]}}',
        b'{"webhookTimestamp":1.5}', b'{"webhookTimestamp":true}', b"[]", b"a=%ff&b",
    ]),
)  # fmt: skip
targets = st.one_of(
    st.just(b"/hooks/x"),
    st.binary(max_size=60).map(lambda b: b"/hooks/x?" + b),
    st.just(b"/hooks/x?bodySHA256=zz"),
)


def _all_verifiers() -> list[Verifier]:
    built = [symmetric(scheme, SYMMETRIC[scheme][1][0]) for scheme in sorted(SYMMETRIC)]
    built.append(verifier("sendgrid", public_key=_P256))
    built.append(verifier("discord", public_key="11" * 32))
    built.append(verifier("none"))
    return built


_P256 = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7"
    "yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
)
VERIFIERS = _all_verifiers()


def test_every_registered_scheme_is_fuzzed() -> None:
    assert {v.scheme for v in VERIFIERS} | {"svix"} == set(SCHEMES)


@pytest.mark.parametrize("v", VERIFIERS, ids=lambda v: v.scheme)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=headers, body=bodies, target=targets, method=st.sampled_from([b"POST", b"GET"]))
def test_verify_only_ever_raises_rejected(
    v: Verifier, items: list[tuple[bytes, bytes]], body: bytes, target: bytes, method: bytes
) -> None:
    try:
        result: Any = v.verify(request(items, body=body, target=target, method=method), NOW)
    except Rejected:
        return
    assert isinstance(result, Verified)


#: Headers a scheme reads besides the ones its sign() writes (among HEADER_NAMES): Svix's own
#: headers win over Standard Webhooks' (both schemes), Twilio's signature settings pick the
#: algorithm.
_SVIX = frozenset({b"svix-id", b"svix-timestamp", b"svix-signature"})
ALSO_READS: dict[str, frozenset[bytes]] = {
    "standard-webhooks": _SVIX,
    "svix": _SVIX,
    "twilio": frozenset({b"x-twilio-webhooks-signature-settings"}),
}


@pytest.mark.parametrize("scheme", sorted(SYMMETRIC))
@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), extra=st.lists(st.tuples(st.sampled_from(HEADER_NAMES),
       header_values), max_size=2))  # fmt: skip
def test_signed_requests_survive_arbitrary_bodies(
    scheme: str, body: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    """sign() then verify() for any body. An extra header can only change the outcome when the
    scheme reads it (a duplicate of a signed header, or one of ALSO_READS); any other extra
    header leaves the outcome exactly as without it."""
    v = symmetric(scheme, SYMMETRIC[scheme][1][0])
    try:
        signed = v.sign(body, b"/hooks/x", NOW)
    except Rejected:
        assert scheme == "twilio"  # a body that is not UTF-8 cannot be a Twilio form
        return
    clean = v.verify(request(signed, body=body), NOW)  # a clean signed request is accepted
    assert isinstance(clean, Verified)
    reads = {name.lower().encode() for name, _ in signed} | ALSO_READS.get(scheme, frozenset())
    relevant = [name for name, _ in extra if name in reads]
    try:
        result = v.verify(request([*signed, *extra], body=body), NOW)
    except Rejected as exc:
        assert relevant, f"refused for headers it does not read: {extra}: {exc}"
        return
    if not relevant:
        assert result == clean
