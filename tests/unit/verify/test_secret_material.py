"""Issue 12, finding 5: a secret whose *material* is empty is refused when the route is built.

``hooks:`` for basic, ``whsec_`` for Stripe, base64 that decodes to nothing for Standard
Webhooks: the config's check of the raw string let them through, and each is public.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_helpers import SYMMETRIC, verifier

from hookd.config import RouteConfig
from hookd.verify import SCHEMES, SchemeConfigError

#: Spellings of "nothing": what an empty or blank variable leaves in a secret.
BLANKS = ["", " ", "\t", "  \n"]


def _secret_schemes() -> list[str]:
    return sorted(name for name, cls in SCHEMES.items() if cls.needs_secrets)


def _empty_material(scheme: str, blank: str) -> str:
    """A secret as written ``<public part>${EMPTY}`` for the scheme, with EMPTY = blank."""
    cls = SCHEMES[scheme]
    if scheme == "basic":
        return "hooks:" + blank
    return cls.secret_prefix + blank if cls.secret_prefix else blank


def test_every_scheme_with_secrets_is_covered() -> None:
    assert set(_secret_schemes()) == set(SYMMETRIC)


@pytest.mark.parametrize("scheme", _secret_schemes())
@settings(max_examples=20, deadline=None)
@given(blank=st.sampled_from(BLANKS) | st.text(alphabet=" \t\r\n", max_size=4))
def test_every_scheme_refuses_empty_secret_material(scheme: str, blank: str) -> None:
    """The class: for every scheme, a secret with no material is refused by ``secret_key``
    (pure) and when the route is built, naming ``secrets[i]``."""
    secret = _empty_material(scheme, blank)
    with pytest.raises(ValueError, match="empty"):
        SCHEMES[scheme].secret_key(secret)
    options = dict(SYMMETRIC[scheme][0])
    good = SYMMETRIC[scheme][1][0]
    # model_construct: past the config's own check of the raw string, which refuses a blank
    # one already; the scheme's rule holds by itself.
    config = RouteConfig.model_construct(
        path="/hooks/x", topic="events", verify=scheme, secrets=(good, secret), **options
    )
    with pytest.raises(SchemeConfigError) as caught:
        SCHEMES[scheme].from_route(config)
    assert caught.value.option == "secrets[1]"
    assert "empty" in caught.value.reason


@pytest.mark.parametrize("scheme", _secret_schemes())
def test_every_scheme_keeps_accepting_its_real_secrets(scheme: str) -> None:
    for secret in SYMMETRIC[scheme][1]:
        assert SCHEMES[scheme].secret_key(secret)


def test_basic_with_an_empty_password_variable_is_refused() -> None:
    """The review's case: ``hooks:${LEGACY_PASSWORD}`` with the variable set but empty passed
    ``hookd check`` and let ``Authorization: Basic aG9va3M6`` (``hooks:``) in."""
    with pytest.raises(ValueError, match="empty password"):
        SCHEMES["basic"].secret_key("hooks:")
    with pytest.raises(SchemeConfigError) as caught:
        verifier("basic", secrets=["hooks:"])
    assert caught.value.option == "secrets[0]"
    assert SCHEMES["basic"].secret_key("hooks:pw") == b"hooks:pw"


@pytest.mark.parametrize(
    ("scheme", "secret"),
    [("stripe", "whsec_"), ("paddle", "pdl_ntfset_"), ("standard-webhooks", "whsec_"),
     ("svix", "whsec_="), ("svix", "="), ("standard-webhooks", "whsec_ ")],
)  # fmt: skip
def test_a_public_prefix_alone_is_no_secret(scheme: str, secret: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        SCHEMES[scheme].secret_key(secret)


def test_stripe_keys_with_the_whole_string_and_svix_with_the_decoded_key() -> None:
    assert SCHEMES["stripe"].secret_key("whsec_abc") == b"whsec_abc"
    assert SCHEMES["svix"].secret_key("whsec_" + base64.b64encode(b"key!").decode()) == b"key!"
