"""The verifier interface: pure functions of (request, now) with no IO.

A scheme is a ``Verifier`` subclass built from its route's config. ``verify`` either returns a
``Verified`` (with the delivery id and event type it found) or raises ``Rejected`` whose message
is safe to send back to the caller: it says what was wrong, never what was expected.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

import orjson

from hookd.settings import RouteConfig


class Rejected(Exception):
    """Verification failed. The message is the reason given in the 401 answer and counted in
    ``hookd_verify_failures_total`` (a few fixed texts). ``detail``, where set, says more for
    the operator (the rejects topic): numbers the message leaves out, never secret material."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.detail = detail


class SchemeConfigError(Exception):
    """A route's options do not fit its scheme: ``(option, reason)``."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class CannotSign(Exception):
    """The scheme is asymmetric: only the provider's private key can sign."""


class Headers:
    """Read-only view of a request's headers (names lower-case, as h11 gives them)."""

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._items = items

    def get(self, name: bytes) -> bytes | None:
        """The header's single value; a repeated header is refused as ambiguous."""
        found = None
        for item_name, value in self._items:
            if item_name == name:
                if found is not None:
                    raise Rejected(f"duplicate {name.decode()} header")
                found = value
        return found

    def require(self, name: bytes) -> bytes:
        value = self.get(name)
        if value is None:
            raise Rejected(f"missing {name.decode()} header")
        return value

    def first(self, name: bytes) -> bytes | None:
        """The first value, for informational headers where a repeat is harmless."""
        for item_name, value in self._items:
            if item_name == name:
                return value
        return None


@dataclass(slots=True)
class Request:
    """What a verifier sees: the request exactly as received. Never changed once built; like
    ``Verified``, built per request, so not ``frozen`` (a frozen ``__init__`` is much slower)."""

    method: bytes
    target: bytes
    headers: Headers
    body: bytes


@dataclass(slots=True)
class Verified:
    """A request that passed. ``reply`` is set for handshakes: answer it, publish nothing."""

    delivery_id: bytes | None = None
    event_type: bytes | None = None
    reply: bytes | None = None


class Verifier(ABC):
    """One signature scheme, configured for one route."""

    scheme: ClassVar[str]
    #: Route keys beyond the common ones that this scheme reads.
    options: ClassVar[frozenset[str]] = frozenset()
    needs_secrets: ClassVar[bool] = True
    #: Default for ``tolerance_s`` on timestamped schemes; ``None`` if the scheme has none.
    default_tolerance_s: ClassVar[float | None] = None
    #: Default for the route's ``respond_within_s``: a margin under the delivery timeout the
    #: provider documents (its clock starts before hookd sees the request head: connect, TLS,
    #: network), so that a 2xx or 503 reaches it in time. ``None`` where the provider documents
    #: none: the route then answers within ``kafka.ack_timeout_s``. Sources: docs/providers.md.
    default_respond_within_s: ClassVar[float | None] = None

    #: A public prefix the provider puts before the secret (Stripe's ``whsec_``): the prefix
    #: alone is no secret, so ``secret_key`` refuses a secret that is only the prefix.
    secret_prefix: ClassVar[str] = ""
    #: Where the provider documents the look of its webhook secret: a secret without this
    #: prefix gets a warning (``hookd check``, start-up), never an error.
    expected_secret_prefix: ClassVar[str] = ""
    #: Prefixes of the provider's *other* credentials (API keys, access tokens), the classic
    #: paste error, with what each is: a secret starting with one gets a warning.
    foreign_secret_prefixes: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Request headers copied into the record (``hookd-header-<name>``) when the route does
    #: not set ``forward_headers``: what the provider sends only in headers and a consumer
    #: needs (Shopify's shop domain, GitHub's hook id). Lower-case. See docs/providers.md.
    default_forward_headers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, route: RouteConfig) -> None:
        keys = []
        for index, secret in enumerate(route.secrets):
            try:
                keys.append(self.secret_key(secret))
            except ValueError as exc:
                raise SchemeConfigError(f"secrets[{index}]", str(exc)) from None
        self.secrets: tuple[bytes, ...] = tuple(keys)
        self.tolerance_s = (
            route.tolerance_s if route.tolerance_s is not None else self.default_tolerance_s
        )

    @classmethod
    def from_route(cls, route: RouteConfig) -> Self:
        """Build for a route; raise ``SchemeConfigError`` when its options do not fit."""
        if cls.needs_secrets and not route.secrets:
            raise SchemeConfigError("secrets", f'scheme "{cls.scheme}" needs at least one secret')
        if route.tolerance_s is not None and cls.default_tolerance_s is None:
            raise SchemeConfigError("tolerance_s", f'scheme "{cls.scheme}" has no timestamp')
        for option in sorted(_SCHEME_OPTIONS - cls.options):
            if getattr(route, option) is not None:
                raise SchemeConfigError(option, f'not used by scheme "{cls.scheme}"')
        return cls(route)

    @classmethod
    def route_problems(cls, route: RouteConfig) -> list[SchemeConfigError]:
        """Every problem of ``route`` for this scheme, not only the first: the common checks
        of ``from_route``, each secret's, then the scheme's own (its constructor's)."""
        found: list[SchemeConfigError] = []
        if cls.needs_secrets and not route.secrets:
            found.append(
                SchemeConfigError("secrets", f'scheme "{cls.scheme}" needs at least one secret')
            )
        if route.tolerance_s is not None and cls.default_tolerance_s is None:
            found.append(
                SchemeConfigError("tolerance_s", f'scheme "{cls.scheme}" has no timestamp')
            )
        for option in sorted(_SCHEME_OPTIONS - cls.options):
            if getattr(route, option) is not None:
                found.append(SchemeConfigError(option, f'not used by scheme "{cls.scheme}"'))
        own = (route.header or "").strip().lower()
        if own and route.forward_headers and own in route.forward_headers:
            found.append(
                SchemeConfigError(
                    "forward_headers", f"{own!r} carries the route's signature or token"
                )
            )
        for index, secret in enumerate(route.secrets):
            try:
                cls.secret_key(secret)
            except ValueError as exc:
                found.append(SchemeConfigError(f"secrets[{index}]", str(exc)))
        try:
            cls(route)
        except SchemeConfigError as exc:
            if all(exc.option != earlier.option for earlier in found):
                found.append(exc)
        return found

    @classmethod
    def forward_headers(cls, route: RouteConfig) -> tuple[str, ...]:
        """The header names this route copies into its records."""
        if route.forward_headers is not None:
            return route.forward_headers
        return cls.default_forward_headers

    @classmethod
    def secret_warnings(cls, secret: str) -> list[str]:
        """Why ``secret`` does not look like this provider's webhook secret (never naming
        more of it than a public prefix); empty when it does or the provider has no format."""
        for prefix, what in cls.foreign_secret_prefixes:
            if secret.startswith(prefix):
                return [f'starts with "{prefix}" like {what}, not a webhook signing secret']
        if cls.expected_secret_prefix and not secret.startswith(cls.expected_secret_prefix):
            return [
                f'does not start with "{cls.expected_secret_prefix}" as {cls.scheme} webhook '
                "signing secrets do"
            ]
        return []

    @classmethod
    def secret_key(cls, secret: str) -> bytes:
        """The key material this scheme takes from one configured secret; ``ValueError`` (its
        message names what is wrong, never the secret) when there is none to speak of.

        The config refuses a secret that is empty as a string; this refuses one whose *material*
        is empty: ``"whsec_${KEY}"`` or ``"hooks:${PASSWORD}"`` with the variable set but
        empty leaves a public string that anyone can sign or authenticate with. Pure; the one
        place per scheme where a secret is parsed (a scheme overrides it to parse differently).
        """
        material = secret.removeprefix(cls.secret_prefix) if cls.secret_prefix else secret
        if not material.strip():
            what = (
                f'nothing after the public "{cls.secret_prefix}" prefix'
                if (cls.secret_prefix and secret.startswith(cls.secret_prefix))
                else "empty"
            )
            raise ValueError(
                f"{what}: an empty secret would accept anything (is a variable empty?)"
            )
        return secret.encode()

    @abstractmethod
    def verify(self, request: Request, now: float) -> Verified:
        """Return ``Verified`` or raise ``Rejected``. Never raises anything else."""

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        """Headers that make ``verify`` accept ``body`` (first secret); for ``hookd sign``."""
        raise CannotSign(f'scheme "{self.scheme}" cannot be signed without its private key')


_SCHEME_OPTIONS = frozenset(
    {
        "header",
        "algorithm",
        "encoding",
        "prefix",
        "template",
        "timestamp_header",
        "id_header",
        "public_url",
        "public_key",
    }
)

# -- helpers shared by the HMAC schemes ---------------------------------------------------
#
# One HMAC path: a scheme keys one state per secret (``keyed_macs``) when its route is built,
# and ``mac_of`` computes every HMAC from those states, whether it verifies a request, signs
# one for ``hookd sign`` or builds a delivery for ``hookd send`` (hookd/send.py).

Mac = Any  # hmac.HMAC (OpenSSL-backed); typeshed has no name for the C type


def keyed_macs(secrets: Iterable[bytes], algorithm: str) -> tuple[Mac, ...]:
    """One keyed HMAC state per secret, built once per route and copied per request.

    Copying a keyed state skips OpenSSL's per-call digest fetch and key setup: about 40 %
    of the cost of ``hmac.digest`` for a 1 KB body (see bench/verify_bench.py)."""
    return tuple(hmac.new(secret, digestmod=algorithm) for secret in secrets)


def mac_of(mac: Mac, message: bytes) -> bytes:
    """The HMAC of ``message`` under one keyed state (the state itself is left as it was)."""
    state = mac.copy()
    state.update(message)
    return state.digest()  # type: ignore[no-any-return]


def matching_mac(macs: Sequence[Mac], message: bytes, candidates: Sequence[bytes]) -> int:
    """Index of the secret whose HMAC of ``message`` equals some candidate, else -1.

    Every candidate is compared in constant time; the index lets handshakes (Zoom) answer
    with the secret that verified."""
    for index, mac in enumerate(macs):
        expected = mac_of(mac, message)
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return index
    return -1


def any_mac_matches(macs: Sequence[Mac], message: bytes, candidates: Sequence[bytes]) -> bool:
    return matching_mac(macs, message, candidates) >= 0


def decode_hex(value: bytes) -> bytes:
    # a2b_hex, unlike bytes.fromhex, refuses embedded whitespace: one spelling per signature.
    try:
        return binascii.a2b_hex(value)
    except (binascii.Error, ValueError):
        raise Rejected("malformed signature: not hex") from None


def decode_base64(value: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("malformed signature: not base64") from None


DECODERS: dict[str, Callable[[bytes], bytes]] = {"hex": decode_hex, "base64": decode_base64}
ENCODERS: dict[str, Callable[[bytes], str]] = {
    "hex": bytes.hex,
    "base64": lambda raw: base64.b64encode(raw).decode("ascii"),
}


def strip_prefix(value: bytes, prefix: bytes) -> bytes:
    if not value.startswith(prefix):
        raise Rejected(f"malformed signature: expected the {prefix.decode()!r} prefix")
    return value[len(prefix) :]


def check_timestamp(
    sent_at: float, now: float, tolerance_s: float | None, *, reject_future: bool
) -> None:
    """Refuse a timestamp older than the tolerance (and newer, for two-sided schemes)."""
    if tolerance_s is None:
        return
    if now - sent_at > tolerance_s:
        raise Rejected(
            "timestamp outside tolerance: too old",
            f"timestamp {now - sent_at:.0f} s old, tolerance {tolerance_s:g} s (clock skew, or "
            "a delivery held back or replayed?)",
        )
    if reject_future and sent_at - now > tolerance_s:
        raise Rejected(
            "timestamp outside tolerance: in the future",
            f"timestamp {sent_at - now:.0f} s in the future, tolerance {tolerance_s:g} s "
            "(clock skew?)",
        )


def parse_int(value: bytes, what: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise Rejected(f"malformed {what}")
    return int(value)


#: Longest signature-bearing header we parse. Real ones are < 1 KB even with several
#: signatures during a rotation; anything longer is refused before any work is done on it.
MAX_SIGNATURE_HEADER_BYTES = 4096


def signature_header(headers: Headers, name: bytes) -> bytes:
    """The single value of a header that carries signature material: present, ASCII, bounded."""
    value = headers.require(name)
    if len(value) > MAX_SIGNATURE_HEADER_BYTES or not value.isascii():
        raise Rejected(f"malformed {name.decode()} header")
    return value.strip()


#: Longest delivery id taken from a header the signature does not cover (GitHub's
#: ``X-GitHub-Delivery`` is a 36-byte UUID). The id becomes the record key and enters the
#: redelivery window, and anyone holding one captured delivery can send it with any id.
MAX_DELIVERY_ID_BYTES = 200


def check_delivery_id(value: bytes, header: bytes) -> bytes:
    """Refuse an unsigned delivery id over ``MAX_DELIVERY_ID_BYTES``; return it."""
    if len(value) > MAX_DELIVERY_ID_BYTES:
        raise Rejected(
            f"malformed {header.decode()} header: longer than {MAX_DELIVERY_ID_BYTES} bytes"
        )
    return value


def delivery_id_header(headers: Headers, name: bytes) -> bytes | None:
    """A delivery id from a header the signature does not cover (first value), bounded."""
    value = headers.first(name)
    return None if value is None else check_delivery_id(value, name)


def optional_signature_header(headers: Headers, name: bytes) -> bytes | None:
    """Like ``signature_header`` for a header that may be absent."""
    if headers.get(name) is None:
        return None
    return signature_header(headers, name)


def hex_candidates(values: Iterable[bytes]) -> list[bytes]:
    """Decode hex signatures from a multi-signature header, skipping malformed entries.

    A malformed entry can never match, so dropping it is the same as comparing it; the caller
    refuses when nothing decodable is left."""
    out = []
    for value in values:
        try:
            out.append(binascii.a2b_hex(value))
        except (binascii.Error, ValueError):
            continue
    return out


def base64_candidates(values: Iterable[bytes]) -> list[bytes]:
    """Base64 twin of ``hex_candidates``."""
    out = []
    for value in values:
        try:
            out.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def parse_pairs(value: bytes, separator: bytes) -> list[tuple[bytes, bytes]]:
    """``k=v<sep>k=v`` into pairs (whitespace around items trimmed; items without ``=`` kept
    with an empty key so that callers can ignore them)."""
    pairs = []
    for item in value.split(separator):
        key, sep, val = item.strip().partition(b"=")
        pairs.append((key, val) if sep else (b"", key))
    return pairs


def only_one(pairs: Sequence[tuple[bytes, bytes]], key: bytes, header: bytes) -> bytes:
    """The value of ``key`` in ``pairs``, which must occur exactly once (no ambiguity)."""
    found = None
    for k, v in pairs:
        if k == key:
            if found is not None:
                raise Rejected(f"malformed {header.decode()} header: repeated {key.decode()}")
            found = v
    if found is None:
        raise Rejected(f"malformed {header.decode()} header: no {key.decode()}")
    return found


#: What ``parse_json`` gives for a body that is not JSON (``None`` is JSON's ``null``).
NOT_JSON: Final = object()


def parse_json(body: bytes) -> object:
    """``body`` parsed as JSON, or ``NOT_JSON``: the one place a request body is parsed (for
    what a scheme reads after its signature passed, and for ``json:`` record keys)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return NOT_JSON


def json_object(body: bytes) -> dict[str, object] | None:
    """``body`` as a JSON object; ``None`` when it is not JSON or not an object."""
    document = parse_json(body)
    return document if isinstance(document, dict) else None


def json_field(document: object, name: str) -> bytes | None:
    """A string (or integer) member of a parsed JSON object as bytes, for delivery ids and
    event types; anything else is ``None`` (the signature already passed: this never refuses)."""
    if not isinstance(document, dict):
        return None
    value = document.get(name)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return None
