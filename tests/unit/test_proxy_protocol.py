"""PROXY protocol v1/v2 parsing (hookd.net.proxy_protocol), fed real headers built by hand."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.net.proxy_protocol import (
    MAX_V2_BYTES,
    NEED_MORE,
    V2_SIGNATURE,
    Malformed,
    ProxyHeader,
    parse,
)

REQUEST = b"POST /in HTTP/1.1\r\nHost: x\r\n\r\n"
SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # the spec's 12 bytes, spelled out


def v2(command: int, family: int, block: bytes) -> bytes:
    """version 2 in the high nibble, then family/transport, then the block's length."""
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def inet(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    return src + dst + struct.pack("!HH", sport, dport)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def test_signature_constant_is_the_spec_one():
    assert V2_SIGNATURE == SIG


def test_v1_tcp4():
    data = b"PROXY TCP4 203.0.113.7 10.0.0.5 56324 8080\r\n" + REQUEST
    header = parse(data)
    assert header == ProxyHeader(("203.0.113.7", 56324), ("10.0.0.5", 8080), 44, 1)
    assert data[header.consumed :] == REQUEST


def test_v1_tcp6():
    line = b"PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n"
    header = parse(line + REQUEST)
    assert isinstance(header, ProxyHeader)
    assert header.source == ("2001:db8::7", 443) and header.consumed == len(line)


def test_v1_unknown_means_the_peer():
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        assert parse(line + REQUEST) == ProxyHeader(None, None, len(line), 1)


def test_v1_arrives_byte_by_byte():
    line = b"PROXY TCP4 198.51.100.1 10.0.0.5 1 2\r\n"
    for end in range(len(line)):
        assert parse(line[:end]) is NEED_MORE, line[:end]
    assert isinstance(parse(line), ProxyHeader)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 10.0.0.5 56324\r\n",  # a field missing
        b"PROXY TCP4 2001:db8::1 10.0.0.5 1 2\r\n",  # family mismatch
        b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 203.0.113.999 10.0.0.5 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.5 65536 2\r\n",  # port out of range
        b"PROXY TCP4 203.0.113.7 10.0.0.5 01 2\r\n",  # leading zero
        b"PROXY TCP4 203.0.113.7 10.0.0.5 -1 2\r\n",
        b"PROXY TCP4  203.0.113.7 10.0.0.5 1 2\r\n",  # two spaces
        b"PROXY UDP4 203.0.113.7 10.0.0.5 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.5 1 2\n",  # LF only
        b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n",  # a zone
        b"PROXY " + b"x" * 120 + b"\r\n",  # over 107 bytes
        b"GET / HTTP/1.1\r\n\r\n",  # no header at all
        b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
    ],
)
def test_v1_malformed(line):
    assert isinstance(parse(line + REQUEST), Malformed)


def test_no_header_is_decided_on_the_first_byte_that_differs():
    assert isinstance(parse(b"POST"), Malformed)
    assert isinstance(parse(b"PRO"), type(NEED_MORE))
    assert isinstance(parse(b"PROXX"), Malformed)
    assert isinstance(parse(b"\r\n\r\n\x01"), Malformed)
    assert parse(b"") is NEED_MORE


def test_v2_proxy_tcp4_with_aws_tlvs():
    block = inet(bytes([198, 51, 100, 23]), bytes([10, 0, 1, 9]), 40000, 8080)
    # AWS NLB: PP2_TYPE_AWS (0xEA) with subtype 0x01 and the VPC endpoint id; a NOOP too.
    block += tlv(0xEA, b"\x01vpce-08d2bf15fac5001c9") + tlv(0x04, b"")
    data = v2(0x1, 0x11, block)
    header = parse(data + REQUEST)
    assert header == ProxyHeader(("198.51.100.23", 40000), ("10.0.1.9", 8080), len(data), 2)


def test_v2_proxy_tcp6():
    src = bytes.fromhex("20010db8000000000000000000000007")
    dst = bytes.fromhex("20010db8000000000000000000000001")
    data = v2(0x1, 0x21, src + dst + struct.pack("!HH", 5555, 8080))
    header = parse(data + REQUEST)
    assert isinstance(header, ProxyHeader)
    assert header.source == ("2001:db8::7", 5555) and header.consumed == 16 + 36


def test_v2_local_means_the_peer_whatever_the_block():
    data = v2(0x0, 0x00, b"")
    assert parse(data + REQUEST) == ProxyHeader(None, None, 16, 2)
    data = v2(0x0, 0x11, inet(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 1, 2))
    assert parse(data) == ProxyHeader(None, None, 28, 2)


def test_v2_unspec_and_unix_mean_the_peer():
    assert parse(v2(0x1, 0x00, b"")) == ProxyHeader(None, None, 16, 2)
    assert parse(v2(0x1, 0x31, b"\x00" * 216)) == ProxyHeader(None, None, 16 + 216, 2)


def test_v2_arrives_byte_by_byte():
    data = v2(0x1, 0x11, inet(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 1, 2) + tlv(1, b"h2"))
    for end in range(len(data)):
        assert parse(data[:end]) is NEED_MORE, end
    assert isinstance(parse(data), ProxyHeader)


@pytest.mark.parametrize(
    "data",
    [
        SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in the v2 format
        SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
        v2(0x1, 0x11, b"\x00" * 11),  # address block short
        v2(0x1, 0x21, b"\x00" * 35),
        v2(0x1, 0x12, b"\x00" * 12),  # UDP on a TCP listener
        v2(0x1, 0x41, b"\x00" * 12),  # unknown family
        v2(0x1, 0x13, b"\x00" * 12),  # unknown transport
        v2(0x1, 0x11, b"\x00" * 12 + b"\x01\x00"),  # TLV cut short
        v2(0x1, 0x11, b"\x00" * 12 + b"\x01\x00\x05ab"),  # TLV longer than the header
        v2(0x1, 0x11, b"\x00" * 12 + tlv(0x04, b"") * 65),  # too many TLVs
    ],
)
def test_v2_malformed(data):
    assert isinstance(parse(data + REQUEST), Malformed)


def test_v2_length_is_bounded_before_waiting_for_it():
    # announces 64 KiB: refused at once, not waited for
    data = SIG + b"\x21\x11\xff\xff" + b"\x00" * 12
    result = parse(data)
    assert isinstance(result, Malformed) and str(MAX_V2_BYTES) in result.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_get_an_answer_within_bounds(data):
    result = parse(data)
    assert result is NEED_MORE or isinstance(result, Malformed | ProxyHeader)
    if isinstance(result, ProxyHeader):
        assert 0 < result.consumed <= len(data)
    if result is NEED_MORE:
        assert len(data) < MAX_V2_BYTES


@settings(max_examples=200, deadline=None)
@given(
    st.ip_addresses(v=4),
    st.ip_addresses(v=4),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=5),
)
def test_v2_round_trip(src, dst, sport, dport, tlvs):
    block = inet(src.packed, dst.packed, sport, dport) + b"".join(tlv(k, v) for k, v in tlvs)
    data = v2(0x1, 0x11, block)
    assert parse(data + REQUEST) == ProxyHeader((str(src), sport), (str(dst), dport), len(data), 2)
