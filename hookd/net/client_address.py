"""The client's address behind trusted proxies: ``Forwarded`` (RFC 7239) and ``X-Forwarded-For``.

A proxy appends the address it received a connection from to the right of these headers, so
only their right end is written by proxies: everything to the left of the first address a
trusted proxy did not write came from the client and proves nothing. Hence:

- the TCP peer (or the address a PROXY protocol header named) is not in ``trusted_proxies``:
  it is the client, and the headers are ignored (anyone can send them);
- otherwise the list is walked from the right, skipping addresses in ``trusted_proxies``
  (further proxies of the chain); the first one not in it is the client;
- every address on the list is trusted: the leftmost is the client (a request from inside);
- no header, or the walk meets something that is not an address (``unknown``, an obfuscated
  ``_hidden`` identifier, garbage, ``for=`` missing): the peer, which is honest if not useful;
- both headers are present and name different clients: the peer. A proxy that manages one of
  them passes the other on as the client wrote it, and nothing tells which one it manages.

Addresses may carry a port (``192.0.2.1:4711``, ``[2001:db8::1]:4711``: Azure does); it is
dropped. IPv4-mapped IPv6 addresses are given as IPv4.
"""

from __future__ import annotations

from collections.abc import Sequence

from hookd.net.networks import IPAddress, NetworkSet, canonical, parse_address

_FORWARDED = b"forwarded"
_X_FORWARDED_FOR = b"x-forwarded-for"
#: Past this many hops (or header bytes) the headers are not read: the peer stands.
MAX_HOPS = 32
MAX_HEADER_BYTES = 8192


class _Malformed(Exception):
    pass


def client_address(
    peer: str, headers: Sequence[tuple[bytes, bytes]], trusted: NetworkSet | None
) -> str:
    """The client's address as the record's ``hookd-source-ip`` carries it (see the module)."""
    if not trusted or peer not in trusted:
        return canonical(peer)
    forwarded: list[bytes] = []
    x_forwarded_for: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == _FORWARDED:
            forwarded.append(value)
        elif lower == _X_FORWARDED_FOR:
            x_forwarded_for.append(value)
    try:
        by_forwarded = _walk(_forwarded_hops(forwarded), trusted) if forwarded else None
        by_xff = _walk(_xff_hops(x_forwarded_for), trusted) if x_forwarded_for else None
    except _Malformed:
        return canonical(peer)
    if by_forwarded is not None and by_xff is not None and by_forwarded != by_xff:
        return canonical(peer)
    found = by_forwarded or by_xff
    return canonical(peer) if found is None else str(found)


def _walk(hops: list[str], trusted: NetworkSet) -> IPAddress | None:
    """From the right: the first hop not trusted; the leftmost when all are. A hop that is not
    an address, met before that, is malformed."""
    if not hops:
        raise _Malformed
    address = None
    for hop in reversed(hops):
        address = _hop_address(hop)
        if address is None:
            raise _Malformed
        if address not in trusted:
            return address
    return address


def _hop_address(hop: str) -> IPAddress | None:
    """``ADDR``, ``ADDR:PORT`` (IPv4), ``[ADDR]`` or ``[ADDR]:PORT`` (IPv6)."""
    if hop.startswith("["):
        inside, sep, rest = hop[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        address = parse_address(inside)
        return address if address is not None and address.version == 6 else None
    if hop.count(":") == 1:  # IPv4 with a port
        host, _, port = hop.partition(":")
        if not port.isdigit():
            return None
        address = parse_address(host)
        return address if address is not None and address.version == 4 else None
    if "%" in hop:
        return None
    return parse_address(hop)


def _joined(values: list[bytes]) -> str:
    """Repeated header lines are one comma-separated list (RFC 9110, 5.3)."""
    raw = b",".join(values)
    if len(raw) > MAX_HEADER_BYTES:
        raise _Malformed
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Malformed from None


def _xff_hops(values: list[bytes]) -> list[str]:
    hops = [hop.strip() for hop in _joined(values).split(",")]
    if len(hops) > MAX_HOPS or any(not hop for hop in hops):
        raise _Malformed
    return hops


def _forwarded_hops(values: list[bytes]) -> list[str]:
    """Each element's ``for`` value, unquoted. An element without one is malformed."""
    hops = []
    for element in _split_outside_quotes(_joined(values), ","):
        found = None
        for pair in _split_outside_quotes(element, ";"):
            name, sep, value = pair.strip().partition("=")
            if not sep or not name:
                raise _Malformed
            if name.strip().lower() == "for":
                if found is not None:
                    raise _Malformed
                found = _unquote(value.strip())
        if found is None:
            raise _Malformed
        hops.append(found)
        if len(hops) > MAX_HOPS:
            raise _Malformed
    return hops


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise _Malformed
    parts.append("".join(current))
    if any(not part.strip() for part in parts):
        raise _Malformed
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out, escaped = [], False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    if '"' in value:
        raise _Malformed
    return value
