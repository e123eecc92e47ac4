"""Issue 12, finding 7: Twilio form bodies that two parameter lists could be read from.

Refused where Twilio never sends them; the name/value re-split is Twilio's own design and is
documented (docs/providers.md, "Where a signature leaves room").
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from verify_helpers import NOW, request, symmetric

from hookd.verify import Rejected, Verified

TWILIO_URL = "https://hooks.example.com/twilio"


def _twilio_signature(params: str) -> str:
    """What Twilio signs: the URL, then each name and its value, names sorted."""
    mac = hmac.new(b"secret-A", (TWILIO_URL + params).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def test_twilio_resplit_from_the_issue_is_twilios_design_and_documented() -> None:
    """``From=%2B15551234&Body=hello`` and ``Body=helloFrom%2B15551234`` sign the same string
    (``BodyhelloFrom+15551234``): Twilio's scheme, which twilio-python accepts too. No rule
    over the body can tell them apart without refusing genuine messages ("iPhone", a
    camel-cased WhatsApp ProfileName), so hookd accepts both and docs/providers.md says that
    Twilio's form parameter boundaries are not signed. This pins that decision."""
    v = symmetric("twilio", "secret-A", public_url=TWILIO_URL)
    signature = _twilio_signature("BodyhelloFrom+15551234")
    headers = [("X-Twilio-Signature", signature)]
    genuine = b"From=%2B15551234&Body=hello"
    resplit = b"Body=helloFrom%2B15551234"
    assert v.verify(request(headers, body=genuine, target=b"/hooks/x"), NOW) == Verified()
    assert v.verify(request(headers, body=resplit, target=b"/hooks/x"), NOW) == Verified()


@pytest.mark.parametrize(
    ("genuine", "forged", "reason"),
    [
        # "%FF" and "%FE" both decoded to U+FFFD: another byte, the same signature
        (b"Body=hello%FF", b"Body=hello%FE", "not UTF-8"),
        # an empty name signed as nothing: "=Bodyx" spells what "Body=x" signed
        (b"Body=x&From=1", b"=Bodyx&From=1", "without a name"),
    ],
)
def test_twilio_forms_read_two_ways_are_refused(genuine: bytes, forged: bytes, reason: str) -> None:
    v = symmetric("twilio", "secret-A", public_url=TWILIO_URL)
    if b"%FF" in genuine:  # not UTF-8, so Twilio never signs it: build the signature by hand
        headers = [("X-Twilio-Signature", _twilio_signature("Bodyhello\ufffd"))]
    else:
        headers = v.sign(genuine, b"/hooks/x", NOW)
        assert v.verify(request(headers, body=genuine), NOW) == Verified()
    with pytest.raises(Rejected, match=reason):
        v.verify(request(headers, body=forged), NOW)


def test_twilio_spellings_of_the_same_parameters_are_accepted() -> None:
    # "a=1&&b=2" and "a" (for "a=") are read as the same parameters by every form parser
    v = symmetric("twilio", "secret-A", public_url=TWILIO_URL)
    headers = v.sign(b"Body=x&From=1&Flag=", b"/hooks/x", NOW)
    assert v.verify(request(headers, body=b"Body=x&&From=1&Flag&"), NOW) == Verified()
