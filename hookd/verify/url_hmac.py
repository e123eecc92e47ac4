"""Schemes that sign the URL the provider called: Twilio, HubSpot (v3), Square.

Behind a proxy the URL hookd sees differs from the one the provider was given, so the route
names it in ``public_url`` (no query string); the query string hookd received is appended
(``?a=1``) before signing, as the provider signed the full URL it called.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from hookd.settings import RouteConfig
from hookd.target import split_target
from hookd.verify.base import (
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
    any_mac_matches,
    check_timestamp,
    decode_base64,
    delivery_id_header,
    keyed_macs,
    mac_of,
    parse_int,
    signature_header,
)


def parse_public_url(route: RouteConfig, scheme: str) -> str:
    """Validate ``public_url``: an absolute http(s) URL with a host and no query/fragment."""
    url = route.public_url
    if not url:
        raise SchemeConfigError("public_url", f'scheme "{scheme}" needs the URL the provider calls')
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise SchemeConfigError("public_url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SchemeConfigError("public_url", "must be an absolute http:// or https:// URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise SchemeConfigError("public_url", "must not hold a query string or fragment")
    if not url.isascii():
        raise SchemeConfigError("public_url", "must be ASCII (percent-encode it)")
    return url


def with_query(url: bytes, query: bytes | None) -> bytes:
    """``url`` with the query string as received (see ``split_target``), as the provider
    signed the full URL it called."""
    return url if query is None else url + b"?" + query


class UrlHmac(Verifier):
    """Common part: a ``public_url`` option, precomputed as bytes."""

    options = frozenset({"public_url"})

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self.public_url = parse_public_url(route, self.scheme).encode("ascii")
        self._sha256 = keyed_macs(self.secrets, "sha256")

    def signed_url(self, target: bytes) -> bytes:
        """``public_url`` with the query string of ``target``: the URL the provider called."""
        return with_query(self.public_url, split_target(target)[1])


# -- Twilio -------------------------------------------------------------------------------

_TWILIO_ALGORITHMS: dict[bytes, str] = {b"HMAC_SHA1": "sha1", b"HMAC_SHA256": "sha256"}
_BODY_SHA256 = b"bodySHA256="


def _port_variants(url: str) -> tuple[bytes, ...]:
    """The URL with and without its port: Twilio signs either (twilio-python tries both)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.port is not None:
        other = netloc[: netloc.rfind(":")]
    else:
        other = f"{netloc}:{443 if parts.scheme == 'https' else 80}"
    return (url.encode(), parts._replace(netloc=other).geturl().encode())


class Twilio(UrlHmac):
    """Twilio: ``X-Twilio-Signature`` = base64 HMAC-SHA1 of the URL + sorted form parameters.

    Form bodies: each name (sorted) followed by each of its distinct values (sorted). JSON
    bodies: the URL carries ``bodySHA256=<hex sha256 of body>`` and only the URL is signed.
    Requests signed with a SharedKey name ``algorithm=HMAC_SHA256`` in
    ``X-Twilio-Webhooks-Signature-Settings`` (as twilio-python 9.13 reads it)."""

    scheme = "twilio"
    default_respond_within_s = 12.0
    header: ClassVar[bytes] = b"x-twilio-signature"
    settings_header: ClassVar[bytes] = b"x-twilio-webhooks-signature-settings"

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        self._urls = _port_variants(self.public_url.decode())
        self._macs = {
            name: keyed_macs(self.secrets, algorithm)
            for name, algorithm in _TWILIO_ALGORITHMS.items()
        }

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        candidate = decode_base64(signature_header(headers, self.header))
        macs = self._macs[self._algorithm(request)]
        query = split_target(request.target)[1]
        tail = with_query(b"", query) + _signed_params(query or b"", request.body)
        for url in self._urls:
            if any_mac_matches(macs, url + tail, (candidate,)):
                return Verified(
                    delivery_id=delivery_id_header(headers, b"i-twilio-idempotency-token")
                )
        raise Rejected("signature mismatch")

    def _algorithm(self, request: Request) -> bytes:
        settings = request.headers.get(self.settings_header)
        if settings is None:
            return b"HMAC_SHA1"
        for part in settings.split(b","):
            name, sep, value = part.partition(b"=")
            if sep and name.strip() == b"algorithm" and value.strip():
                algorithm = value.strip().upper()
                if algorithm not in _TWILIO_ALGORITHMS:
                    raise Rejected("unsupported signature algorithm")
                return algorithm
        return b"HMAC_SHA1"

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        query = split_target(target)[1]
        message = with_query(self.public_url, query) + _signed_params(query or b"", body)
        signature = base64.b64encode(mac_of(self._macs[b"HMAC_SHA1"][0], message)).decode()
        return [("X-Twilio-Signature", signature)]


def _signed_params(query: bytes, body: bytes) -> bytes:
    """What Twilio appends to the URL: nothing for JSON bodies (after checking bodySHA256),
    else the form parameters, names and distinct values sorted."""
    if _BODY_SHA256 in query:
        sent = _query_value(query, "bodySHA256")
        if sent is not None:
            actual = hashlib.sha256(body).hexdigest()
            if not hmac.compare_digest(actual.encode(), sent.encode("utf-8", "replace")):
                raise Rejected("bodySHA256 mismatch")
            return b""
    if not body:
        return b""
    values: dict[str, set[str]] = {}
    for name, value in form_params(body):
        values.setdefault(name, set()).add(value)
    signed = "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return signed.encode()


def form_params(body: bytes) -> list[tuple[str, str]]:
    """Parse a form body as ``parse_qsl(keep_blank_values=True)`` does, refusing what makes
    two different parameter lists sign alike and what Twilio never sends: an empty name
    (``=Bodyx`` signs as ``Body=x``) and a percent-escape that is not UTF-8 (``%FF`` and
    ``%FE`` would both decode to U+FFFD, as werkzeug and Django decode them). ``a`` reads as
    ``a=``, as form parsers read it. Twilio's own re-split weakness (``Body=helloFrom%2B1555``
    signs as ``From=%2B1555&Body=hello``) is not detectable here: see docs/providers.md."""
    try:
        text = body.decode("utf-8")
    except UnicodeError:
        raise Rejected("malformed form body: not UTF-8") from None
    params = []
    for item in text.split("&"):
        if not item:
            continue  # "a=1&&b=2": the same parameters, as every form parser reads them
        name, _, value = item.partition("=")
        try:
            params.append((_unquote(name), _unquote(value)))
        except UnicodeError:
            raise Rejected("malformed form body: a percent-escape that is not UTF-8") from None
        if not params[-1][0]:
            raise Rejected("malformed form body: a parameter without a name")
    return params


def _unquote(text: str) -> str:
    return unquote(text.replace("+", " "), errors="strict")


def _query_value(query: bytes, name: str) -> str | None:
    try:
        for key, value in parse_qsl(query.decode("ascii"), keep_blank_values=True):
            if key == name:
                return value
    except (UnicodeError, ValueError):
        raise Rejected("malformed query string") from None
    return None


# -- HubSpot, Square -----------------------------------------------------------------------


class HubSpot(UrlHmac):
    """HubSpot v3: base64 HMAC-SHA256 of ``{method}{url}{body}{timestamp}``, timestamp in ms.

    Older than 300 s is refused; a future timestamp is not (hubspot-api-python)."""

    scheme = "hubspot"
    foreign_secret_prefixes = (("pat-", "a HubSpot private app access token"),)
    default_respond_within_s = 0.8
    default_tolerance_s = 300.0

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        candidate = decode_base64(signature_header(headers, b"x-hubspot-signature-v3"))
        timestamp = signature_header(headers, b"x-hubspot-request-timestamp")
        sent_ms = parse_int(timestamp, "x-hubspot-request-timestamp header")
        check_timestamp(sent_ms / 1000, now, self.tolerance_s, reject_future=False)
        url = self.signed_url(request.target)
        message = request.method + url + request.body + timestamp
        if not any_mac_matches(self._sha256, message, (candidate,)):
            raise Rejected("signature mismatch")
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        timestamp = str(int(now * 1000)).encode()
        message = b"POST" + self.signed_url(target) + body + timestamp
        signature = base64.b64encode(mac_of(self._sha256[0], message)).decode()
        return [
            ("X-HubSpot-Signature-v3", signature),
            ("X-HubSpot-Request-Timestamp", timestamp.decode()),
        ]


class Square(UrlHmac):
    """Square: ``x-square-hmacsha256-signature`` = base64 HMAC-SHA256 of ``{url}{body}``."""

    scheme = "square"
    foreign_secret_prefixes = (("EAAA", "a Square access token"),)
    default_respond_within_s = 8.0

    def verify(self, request: Request, now: float) -> Verified:
        candidate = decode_base64(
            signature_header(request.headers, b"x-square-hmacsha256-signature")
        )
        message = self.signed_url(request.target) + request.body
        if not any_mac_matches(self._sha256, message, (candidate,)):
            raise Rejected("signature mismatch")
        return Verified()

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        message = self.signed_url(target) + body
        signature = base64.b64encode(mac_of(self._sha256[0], message)).decode()
        return [("x-square-hmacsha256-signature", signature)]
