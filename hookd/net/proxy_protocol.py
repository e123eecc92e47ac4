"""PROXY protocol v1 and v2 (HAProxy's spec, proxy-protocol.txt), sans IO.

A load balancer that speaks it (AWS NLB, HAProxy ``send-proxy``/``send-proxy-v2``, nginx
``proxy_protocol``) writes one header first on each connection, naming the client's address.
:func:`parse` is fed the bytes received so far and answers:

- :data:`NEED_MORE`: what arrived is a valid beginning; read more (the caller bounds the time);
- :class:`ProxyHeader`: a complete header, ``consumed`` bytes long; ``source`` is the client's
  address, or ``None`` where the peer's own address stands (v2 ``LOCAL``, v1 ``UNKNOWN``,
  v2 ``UNSPEC`` or unix families): the proxy's health checks and the like;
- :class:`Malformed`: not a valid header (the connection is refused: with the option on, a
  connection without one may not speak HTTP).

Bounded: a v1 line is at most 107 bytes; a v2 header at most :data:`MAX_V2_BYTES`, and its
TLVs (AWS puts the VPC endpoint id in one) are walked within that length, never beyond it,
and never more than :data:`MAX_TLVS` of them. Their contents are not used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 line, CRLF included (the spec's own bound).
MAX_V1_BYTES = 107
#: The longest v2 header hookd takes: the 16-byte fixed part and up to 2 KiB of addresses and
#: TLVs (the spec allows 64 KiB; proxies send a few hundred bytes at most).
MAX_V2_BYTES = 16 + 2048
MAX_TLVS = 64
#: The most bytes a caller must hold before :func:`parse` decides.
MAX_HEADER_BYTES = MAX_V2_BYTES

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
#: v2 address families (high nibble) with their address block length; transport low nibble.
_V2_INET, _V2_INET6, _V2_UNIX = 0x1, 0x2, 0x3
_V2_STREAM, _V2_DGRAM = 0x1, 0x2
_V2_ADDRESS_BYTES = {_V2_INET: 12, _V2_INET6: 36, _V2_UNIX: 216}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header. ``source``/``destination``: ``(address, port)``, or ``None`` when the
    header names none (the peer's address stands)."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    consumed: int
    version: int


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str


class _NeedMore:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = _NeedMore()

Result = ProxyHeader | Malformed | _NeedMore


def parse(data: bytes) -> Result:
    """Decide what the first bytes of a connection are (see the module's docstring)."""
    if data[:1] == V2_SIGNATURE[:1]:
        if len(data) < len(V2_SIGNATURE):
            return NEED_MORE if V2_SIGNATURE.startswith(data) else _NO_HEADER
        if not data.startswith(V2_SIGNATURE):
            return _NO_HEADER
        return _parse_v2(data)
    if len(data) < len(V1_PREFIX):
        return NEED_MORE if V1_PREFIX.startswith(data) else _NO_HEADER
    if not data.startswith(V1_PREFIX):
        return _NO_HEADER
    return _parse_v1(data)


_NO_HEADER = Malformed("no PROXY protocol header")


def _parse_v1(data: bytes) -> Result:
    end = data.find(b"\r\n", 0, MAX_V1_BYTES)
    if end < 0:
        if len(data) >= MAX_V1_BYTES or b"\n" in data or b"\r" in data[:-1]:
            return Malformed("v1 line longer than 107 bytes or not ended by CRLF")
        return NEED_MORE
    line = data[:end]
    parts = line.split(b" ")
    consumed = end + 2
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        # "PROXY UNKNOWN" may carry anything up to the CRLF; the peer's address stands.
        return ProxyHeader(None, None, consumed, 1)
    if len(parts) != 6:
        return Malformed("v1 line is not PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    _, protocol, src, dst, sport, dport = parts
    version = {b"TCP4": 4, b"TCP6": 6}.get(protocol)
    if version is None:
        return Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    source = _v1_address(src, version)
    destination = _v1_address(dst, version)
    source_port, destination_port = _v1_port(sport), _v1_port(dport)
    if source is None or destination is None:
        return Malformed(f"v1 address is not an IPv{version} address")
    if source_port is None or destination_port is None:
        return Malformed("v1 port is not a number 0-65535")
    return ProxyHeader((source, source_port), (destination, destination_port), consumed, 1)


def _v1_address(raw: bytes, version: int) -> str | None:
    try:
        address = ipaddress.ip_address(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if address.version != version or "%" in str(address):
        return None
    return str(address)


def _v1_port(raw: bytes) -> int | None:
    if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
        return None
    port = int(raw)
    return port if port <= 65535 else None


def _parse_v2(data: bytes) -> Result:
    if len(data) < 16:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        return Malformed(f"v2 version {version}, not 2")
    if command not in (_V2_LOCAL, _V2_PROXY):
        return Malformed(f"v2 command {command:#x} is neither LOCAL nor PROXY")
    family, transport = data[13] >> 4, data[13] & 0x0F
    length = int.from_bytes(data[14:16], "big")
    total = 16 + length
    if total > MAX_V2_BYTES:
        return Malformed(f"v2 header of {total} bytes, over {MAX_V2_BYTES}")
    if len(data) < total:
        return NEED_MORE
    block = data[16:total]
    if command == _V2_LOCAL:
        # The proxy's own connection (health checks): the peer's address stands; the family
        # and the block are to be ignored.
        return ProxyHeader(None, None, total, 2)
    needed = _V2_ADDRESS_BYTES.get(family, 0)
    if family not in (0, *_V2_ADDRESS_BYTES) or transport not in (0, _V2_STREAM, _V2_DGRAM):
        return Malformed(f"v2 family/transport {data[13]:#04x} unknown")
    if len(block) < needed:
        return Malformed(f"v2 address block of {len(block)} bytes, family needs {needed}")
    problem = _check_tlvs(block[needed:])
    if problem is not None:
        return Malformed(problem)
    if family == 0 or family == _V2_UNIX:
        return ProxyHeader(None, None, total, 2)  # UNSPEC, or a unix socket: the peer stands
    if transport != _V2_STREAM:
        return Malformed("v2 header for a datagram or unspecified transport on a TCP stream")
    if family == _V2_INET:
        src = str(ipaddress.IPv4Address(block[0:4]))
        dst = str(ipaddress.IPv4Address(block[4:8]))
        ports = block[8:12]
    else:
        src = str(ipaddress.IPv6Address(block[0:16]))
        dst = str(ipaddress.IPv6Address(block[16:32]))
        ports = block[32:36]
    sport, dport = int.from_bytes(ports[0:2], "big"), int.from_bytes(ports[2:4], "big")
    return ProxyHeader((src, sport), (dst, dport), total, 2)


def _check_tlvs(tlvs: bytes) -> str | None:
    """Each TLV is type (1 byte), length (2 bytes), value; they must fill the rest exactly."""
    at, count = 0, 0
    while at < len(tlvs):
        count += 1
        if count > MAX_TLVS:
            return f"v2 header with more than {MAX_TLVS} TLVs"
        if at + 3 > len(tlvs):
            return "v2 TLV cut short"
        at += 3 + int.from_bytes(tlvs[at + 1 : at + 3], "big")
        if at > len(tlvs):
            return "v2 TLV longer than the header"
    return None
