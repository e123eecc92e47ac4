"""``hmac``: a configurable HMAC for senders with no scheme of their own.

Options: ``header`` (required), ``algorithm`` (sha256), ``encoding`` (hex), ``prefix`` (""),
``template`` ("{body}") over ``{body}``, ``{ts}``, ``{id}``, ``{method}``, ``{url}`` (the
request target as received, path and query), ``timestamp_header`` (integer seconds, ±tolerance,
300 s by default) and ``id_header`` (reported as the delivery id).
"""

from __future__ import annotations

import string
import uuid

from hookd.settings import RouteConfig
from hookd.verify.base import (
    DECODERS,
    ENCODERS,
    Rejected,
    Request,
    SchemeConfigError,
    Verified,
    Verifier,
    any_mac_matches,
    check_delivery_id,
    check_timestamp,
    keyed_macs,
    mac_of,
    parse_int,
    signature_header,
    strip_prefix,
)

_FIELDS = frozenset({"body", "ts", "id", "method", "url"})


def compile_template(template: str) -> tuple[str | bytes, ...]:
    """Split a template into literal ``bytes`` and field names (``str``); ``{{``/``}}`` escape."""
    parts: list[str | bytes] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SchemeConfigError("template", str(exc)) from None
    for literal, field, spec, conversion in parsed:
        if literal:
            parts.append(literal.encode())
        if field is None:
            continue
        if field not in _FIELDS or spec or conversion:
            raise SchemeConfigError(
                "template",
                f"unknown placeholder {{{field}}}; use {{body}} {{ts}} {{id}} {{method}} {{url}}",
            )
        parts.append(field)
    if "body" not in parts:
        raise SchemeConfigError("template", "must include {body}: an unsigned body is forgeable")
    if parts.count("body") > 1:
        raise SchemeConfigError("template", "must include {body} once")
    return tuple(parts)


def field_separators(parts: tuple[str | bytes, ...]) -> tuple[tuple[str, bytes], ...]:
    """For each placeholder other than ``{body}``: the byte its value may not contain.

    The signed message is the template filled in, and the header values that fill it are the
    sender's to choose. So that one message has one reading, every field must be closed off
    from ``{body}``'s side by a literal: a field before ``{body}`` by the literal after it, a
    field after ``{body}`` by the literal before it, and its value may not contain that
    literal's first (resp. last) byte. Then each field ends at the first such byte, and
    ``{body}`` is what is left: with ``{ts}.{id}.{body}``, an id ``abc.{"amount":1`` can no
    longer move the start of the body. Raises ``SchemeConfigError`` for a template whose field
    has no such literal (``{ts}{body}``, ``{id}{ts}.{body}``)."""
    at = parts.index("body")
    out: list[tuple[str, bytes]] = []
    for index, part in enumerate(parts):
        if isinstance(part, bytes) or part == "body":
            continue
        neighbour = parts[index + 1] if index < at else parts[index - 1]
        if not isinstance(neighbour, bytes):
            side = "followed" if index < at else "preceded"
            raise SchemeConfigError(
                "template",
                f"{{{part}}} must be {side} by a separator such as '.', or its value could "
                "move the boundary of the signed body",
            )
        out.append((part, neighbour[:1] if index < at else neighbour[-1:]))
    return tuple(out)


class Hmac(Verifier):
    """Generic HMAC; everything about it comes from the route."""

    scheme = "hmac"
    options = frozenset(
        {"header", "algorithm", "encoding", "prefix", "template", "timestamp_header", "id_header"}
    )
    default_tolerance_s = 300.0

    def __init__(self, route: RouteConfig) -> None:
        super().__init__(route)
        if not route.header:
            raise SchemeConfigError("header", 'scheme "hmac" needs the signature header name')
        self.header = _header_name(route.header, "header")
        self.algorithm = route.algorithm or "sha256"
        self.encoding = route.encoding or "hex"
        self._decode = DECODERS[self.encoding]
        self._macs = keyed_macs(self.secrets, self.algorithm)
        prefix = route.prefix or ""
        if not prefix.isascii():
            raise SchemeConfigError("prefix", "must be ASCII")
        self.prefix = prefix.encode()
        self.parts = compile_template(route.template or "{body}")
        self.timestamp_header = (
            _header_name(route.timestamp_header, "timestamp_header")
            if route.timestamp_header
            else None
        )
        self.id_header = _header_name(route.id_header, "id_header") if route.id_header else None
        if "ts" in self.parts and self.timestamp_header is None:
            raise SchemeConfigError("template", "{ts} needs timestamp_header")
        if "id" in self.parts and self.id_header is None:
            raise SchemeConfigError("template", "{id} needs id_header")
        #: An id the template does not sign is bounded like every unsigned delivery id.
        self._id_signed = "id" in self.parts
        sources = {
            "ts": f"{route.timestamp_header} header",
            "id": f"{route.id_header} header",
            "method": "request method",
            "url": "request target",
        }
        checks = []
        for field, separator in field_separators(self.parts):
            fixed = {"method": "POST", "url": route.path}.get(field)
            if fixed is not None and separator.decode() in fixed:
                raise SchemeConfigError(
                    "template",
                    f"{{{field}}} is closed by {separator.decode()!r}, which its value "
                    f"{fixed!r} contains: pick another separator",
                )
            reason = (
                f"malformed {sources[field].lower()}: contains {separator.decode()!r}, which "
                f"closes {{{field}}} in the signed template"
            )
            checks.append((field, separator, reason))
        self._field_checks: tuple[tuple[str, bytes, str], ...] = tuple(checks)
        if self.timestamp_header is None:
            if route.tolerance_s is not None:
                raise SchemeConfigError("tolerance_s", "needs timestamp_header")
            self.tolerance_s = None

    def verify(self, request: Request, now: float) -> Verified:
        headers = request.headers
        candidate = self._decode(strip_prefix(signature_header(headers, self.header), self.prefix))
        ts = msg_id = b""
        if self.timestamp_header is not None:
            ts = signature_header(headers, self.timestamp_header)
            what = f"{self.timestamp_header.decode()} header"
            check_timestamp(parse_int(ts, what), now, self.tolerance_s, reject_future=True)
        if self.id_header is not None:
            msg_id = signature_header(headers, self.id_header)
            if not self._id_signed:
                check_delivery_id(msg_id, self.id_header)
        self._check_fields(ts, msg_id, request.method, request.target)
        message = self._message(request.body, ts, msg_id, request.method, request.target)
        if not any_mac_matches(self._macs, message, (candidate,)):
            raise Rejected("signature mismatch")
        return Verified(delivery_id=msg_id or None)

    def _check_fields(self, ts: bytes, msg_id: bytes, method: bytes, url: bytes) -> None:
        """Refuse a field value that holds its separator (see ``field_separators``)."""
        for field, separator, reason in self._field_checks:
            value = (
                ts
                if field == "ts"
                else msg_id
                if field == "id"
                else (method if field == "method" else url)
            )
            if separator in value:
                raise Rejected(reason)

    def _message(self, body: bytes, ts: bytes, msg_id: bytes, method: bytes, url: bytes) -> bytes:
        if len(self.parts) == 1:  # the default "{body}": no copy
            return body
        fields = {"body": body, "ts": ts, "id": msg_id, "method": method, "url": url}
        return b"".join(p if isinstance(p, bytes) else fields[p] for p in self.parts)

    def sign(self, body: bytes, target: bytes, now: float) -> list[tuple[str, str]]:
        ts = str(int(now)).encode()
        msg_id = uuid.uuid4().hex.encode()
        message = self._message(body, ts, msg_id, b"POST", target)
        raw = mac_of(self._macs[0], message)
        headers = [(self.header.decode(), self.prefix.decode() + ENCODERS[self.encoding](raw))]
        if self.timestamp_header is not None:
            headers.append((self.timestamp_header.decode(), ts.decode()))
        if self.id_header is not None:
            headers.append((self.id_header.decode(), msg_id.decode()))
        return headers


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def _header_name(name: str, option: str) -> bytes:
    lowered = name.strip().lower()
    if not lowered or not set(lowered) <= _TOKEN_CHARS:
        raise SchemeConfigError(option, f"not a valid header name: {name!r}")
    return lowered.encode("ascii")
