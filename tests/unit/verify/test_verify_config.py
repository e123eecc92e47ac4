"""Bad route options are refused when the route is built, naming the option."""

from __future__ import annotations

from typing import Any

import pytest
from verify_helpers import route

from hookd.verify import SCHEMES, SchemeConfigError

ED25519_HEX = "a" * 64
P256_B64 = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7"
    "yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
)
# An Ed25519 SubjectPublicKeyInfo: valid DER, wrong algorithm for SendGrid.
ED25519_DER_B64 = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("github", {}, "secrets"),
    ("github", {"secrets": ["s"], "public_url": "https://a.example/x"}, "public_url"),
    ("github", {"secrets": ["s"], "tolerance_s": 10}, "tolerance_s"),
    ("twilio", {"secrets": ["s"]}, "public_url"),
    ("twilio", {"secrets": ["s"], "public_url": "/relative"}, "public_url"),
    ("twilio", {"secrets": ["s"], "public_url": "ftp://a.example/x"}, "public_url"),
    ("twilio", {"secrets": ["s"], "public_url": "https://a.example/x?a=1"}, "public_url"),
    ("twilio", {"secrets": ["s"], "public_url": "https://a.example:99999/x"}, "public_url"),
    ("hubspot", {"secrets": ["s"]}, "public_url"),
    ("square", {"secrets": ["s"], "public_url": "https://a.example/x#frag"}, "public_url"),
    ("sendgrid", {}, "public_key"),
    ("sendgrid", {"public_key": "not base64!"}, "public_key"),
    ("sendgrid", {"public_key": "AAAA"}, "public_key"),
    ("sendgrid", {"public_key": ED25519_DER_B64}, "public_key"),
    ("sendgrid", {"public_key": P256_B64, "secrets": ["s"]}, "secrets"),
    ("discord", {}, "public_key"),
    ("discord", {"public_key": "xyz"}, "public_key"),
    ("discord", {"public_key": "ab" * 31}, "public_key"),
    ("discord", {"public_key": [ED25519_HEX, "nope"]}, "public_key"),
    ("hmac", {"secrets": ["s"]}, "header"),
    ("hmac", {"secrets": ["s"], "header": "bad header"}, "header"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "template": "{ts}"}, "template"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "template": "{nope}{body}"}, "template"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "template": "{body!r}"}, "template"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "template": "{body"}, "template"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "template": "{ts}.{body}"}, "template"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "template": "{id}.{body}"}, "template"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "tolerance_s": 5}, "tolerance_s"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "prefix": "é="}, "prefix"),
    ("hmac", {"secrets": ["s"], "header": "X-Sig", "timestamp_header": "a b"}, "timestamp_header"),
    ("basic", {"secrets": ["no-colon"]}, "secrets[0]"),
    ("basic", {"secrets": ["a:b", ":pw"]}, "secrets[1]"),
    ("standard-webhooks", {"secrets": ["whsec_***"]}, "secrets[0]"),
    ("svix", {"secrets": ["whsec_"]}, "secrets[0]"),
    ("basic", {"secrets": ["hooks:"]}, "secrets[0]"),
    ("stripe", {"secrets": ["s", "whsec_"]}, "secrets[1]"),
    ("token", {"secrets": ["s"], "header": "x: y"}, "header"),
    ("none", {"header": "X-Any"}, "header"),
]


@pytest.mark.parametrize(("scheme", "options", "option"), BAD)
def test_bad_options_raise_scheme_config_error(
    scheme: str, options: dict[str, Any], option: str
) -> None:
    with pytest.raises(SchemeConfigError) as caught:
        SCHEMES[scheme].from_route(route(scheme, **options))
    assert caught.value.option == option


def test_every_option_a_scheme_declares_exists_on_the_route() -> None:
    fields = set(route("none").model_fields)
    for cls in SCHEMES.values():
        assert cls.options <= fields, cls.scheme


@pytest.mark.parametrize(
    ("scheme", "options"),
    [
        ("sendgrid", {"public_key": P256_B64}),
        ("sendgrid", {"public_key": [P256_B64, P256_B64]}),
        ("discord", {"public_key": ED25519_HEX}),
        ("twilio", {"secrets": ["s"], "public_url": "http://a.example:8080/x"}),
        ("hmac", {"secrets": ["s"], "header": "X-Sig", "timestamp_header": "X-Ts",
                  "template": "{ts}.{body}", "tolerance_s": 5}),
    ],
)  # fmt: skip
def test_good_options_build(scheme: str, options: dict[str, Any]) -> None:
    assert SCHEMES[scheme].from_route(route(scheme, **options)).scheme == SCHEMES[scheme].scheme


def test_a_valid_key_of_the_wrong_type_is_named_as_such() -> None:
    with pytest.raises(SchemeConfigError, match="P-256"):
        SCHEMES["sendgrid"].from_route(route("sendgrid", public_key=ED25519_DER_B64))
