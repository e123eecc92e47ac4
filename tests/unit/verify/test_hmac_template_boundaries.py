"""Issue 12, finding 8: a generic ``hmac`` field may not move the boundary of the signed body.

Each field other than ``{body}`` is closed by a literal on the body's side, and its value may
not hold that literal's byte.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_helpers import NOW, request, verifier

from hookd.verify import Rejected, SchemeConfigError, Verified
from hookd.verify.generic_hmac import compile_template, field_separators

HMAC_ROUTE: dict[str, Any] = {
    "header": "X-Sig",
    "template": "{ts}.{id}.{body}",
    "timestamp_header": "X-Ts",
    "id_header": "X-Id",
}


def _hmac_headers(ts: str, msg_id: str, body: bytes) -> list[tuple[str, str]]:
    message = f"{ts}.{msg_id}.".encode() + body
    signature = hmac.new(b"k", message, hashlib.sha256).hexdigest()
    return [("X-Sig", signature), ("X-Ts", ts), ("X-Id", msg_id)]


def test_hmac_id_cannot_move_the_body_boundary() -> None:
    """The review's case: with ``{ts}.{id}.{body}``, the id ``evt_1.{"amount":1`` and the body
    cut at its ``.`` gave the same signed message: published under a new id, a new body."""
    v = verifier("hmac", secrets=["k"], **HMAC_ROUTE)
    ts = str(int(NOW))
    body = b'{"amount":1.50}'
    headers = _hmac_headers(ts, "evt_1", body)
    assert v.verify(request(headers, body=body), NOW) == Verified(delivery_id=b"evt_1")
    forged_id, forged_body = 'evt_1.{"amount":1', b"50}"
    forged = [(n, forged_id if n == "X-Id" else value) for n, value in headers]
    assert f"{ts}.{forged_id}.".encode() + forged_body == f"{ts}.evt_1.".encode() + body
    with pytest.raises(Rejected, match=re.escape("x-id header: contains '.'")):
        v.verify(request(forged, body=forged_body), NOW)


def test_hmac_fields_after_the_body_are_closed_by_the_literal_before_them() -> None:
    v = verifier("hmac", secrets=["k"], header="X-Sig", template="{body}|{id}", id_header="X-Id")
    body = b"a|b"
    signature = hmac.new(b"k", body + b"|c", hashlib.sha256).hexdigest()
    ok = [("X-Sig", signature), ("X-Id", "c")]
    assert v.verify(request(ok, body=body), NOW) == Verified(delivery_id=b"c")
    forged = [("X-Sig", signature), ("X-Id", "b|c")]  # body "a", id "b|c": same message
    with pytest.raises(Rejected, match=re.escape("contains '|'")):
        v.verify(request(forged, body=b"a"), NOW)


@pytest.mark.parametrize(
    "template",
    ["{ts}{body}", "{id}{ts}.{body}", "{body}{id}", "{body}.{ts}{id}", "{body}.{body}",
     "{method}O{body}"],
)  # fmt: skip
def test_hmac_templates_without_a_separator_are_refused(template: str) -> None:
    options = {**HMAC_ROUTE, "template": template}
    with pytest.raises(SchemeConfigError) as caught:
        verifier("hmac", secrets=["k"], **options)
    assert caught.value.option == "template"


def test_hmac_url_separator_may_not_be_in_the_route_path() -> None:
    with pytest.raises(SchemeConfigError, match="'/'"):
        verifier("hmac", secrets=["k"], header="X-Sig", template="{url}/{body}")
    v = verifier("hmac", secrets=["k"], header="X-Sig", template="{url} {body}")
    target = b"/hooks/x?a=1"
    signature = hmac.new(b"k", target + b" " + b"x", hashlib.sha256).hexdigest()
    assert v.verify(request([("X-Sig", signature)], body=b"x", target=target), NOW) == Verified()


def test_field_separators_are_the_literals_on_the_body_side() -> None:
    parts = compile_template("v1:{ts}.{id}::{body}#{url}")
    assert field_separators(parts) == (("ts", b"."), ("id", b":"), ("url", b"#"))


_FIELD_ALPHABET = st.text(alphabet="ab.:1{}", max_size=8)


@settings(max_examples=300, deadline=None)
@given(msg_id=_FIELD_ALPHABET, body=_FIELD_ALPHABET.map(str.encode), cut=st.integers(0, 12))
def test_hmac_one_signed_message_has_one_reading(msg_id: str, body: bytes, cut: int) -> None:
    """Property: one signed message has at most one accepted reading. Sign (id, body), split the
    signed message at another separator into another (id, body) that spells it: verify never
    accepts both. (An id holding the separator is refused itself; the other reading may be.)"""
    v = verifier("hmac", secrets=["k"], **HMAC_ROUTE)
    ts = str(int(NOW))
    headers = _hmac_headers(ts, msg_id, body)
    try:
        v.verify(request(headers, body=body), NOW)
    except Rejected:
        assert "." in msg_id
        return
    message = f"{msg_id}.".encode() + body
    cut = min(cut, len(message) - 1)
    if message[cut : cut + 1] != b".":
        return
    other_id, other_body = message[:cut].decode(), message[cut + 1 :]
    forged = [(n, other_id if n == "X-Id" else value) for n, value in headers]
    try:
        result = v.verify(request(forged, body=other_body), NOW)
    except Rejected:
        return
    assert (other_id, other_body) == (msg_id, body)
    assert result == Verified(delivery_id=msg_id.encode() or None)
