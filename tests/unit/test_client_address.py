"""The client's address behind trusted proxies (hookd.net.client_address), and network sets."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.net.client_address import client_address
from hookd.net.networks import NetworkSet, canonical, parse_network

LB = NetworkSet([parse_network("10.0.0.0/8"), parse_network("2001:db8:ffff::/48")])
PEER = "10.1.2.3"  # the load balancer


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", value.encode()) for value in values]


def fwd(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", value.encode()) for value in values]


def test_untrusted_peer_headers_are_ignored():
    assert client_address("198.51.100.9", xff("203.0.113.1"), LB) == "198.51.100.9"
    assert client_address("198.51.100.9", fwd("for=203.0.113.1"), LB) == "198.51.100.9"


def test_no_trusted_proxies_configured_means_the_peer():
    assert client_address(PEER, xff("203.0.113.1"), None) == PEER
    assert client_address(PEER, xff("203.0.113.1"), NetworkSet([])) == PEER


def test_trusted_peer_takes_the_rightmost_untrusted_hop():
    # the client spoofed 1.1.1.1 in front; the LB appended the address it saw
    assert client_address(PEER, xff("1.1.1.1, 203.0.113.1"), LB) == "203.0.113.1"
    # two proxies of ours: skipped
    assert client_address(PEER, xff("1.1.1.1, 203.0.113.1, 10.9.9.9"), LB) == "203.0.113.1"
    # repeated header lines are one list, in order
    assert client_address(PEER, xff("1.1.1.1", "203.0.113.1, 10.9.9.9"), LB) == "203.0.113.1"


def test_all_hops_trusted_means_the_leftmost():
    assert client_address(PEER, xff("10.5.5.5, 10.9.9.9"), LB) == "10.5.5.5"


def test_ports_and_brackets_are_dropped():
    assert client_address(PEER, xff("203.0.113.1:4711"), LB) == "203.0.113.1"
    assert client_address(PEER, xff("[2001:db8::7]:4711"), LB) == "2001:db8::7"
    assert client_address(PEER, xff("2001:db8::7"), LB) == "2001:db8::7"
    assert client_address(PEER, xff("::ffff:203.0.113.1"), LB) == "203.0.113.1"


def test_forwarded_rfc7239_examples():
    assert client_address(PEER, fwd('for="_gazonk"'), LB) == PEER  # obfuscated: the peer
    assert client_address(PEER, fwd("For=192.0.2.60;proto=http;by=203.0.113.43"), LB) == (
        "192.0.2.60"
    )
    assert client_address(PEER, fwd("for=192.0.2.43, for=198.51.100.17"), LB) == ("198.51.100.17")
    assert client_address(PEER, fwd('for="[2001:db8:cafe::17]:4711"'), LB) == "2001:db8:cafe::17"
    assert client_address(PEER, fwd('for="192.0.2.43:47011", for=10.2.2.2'), LB) == "192.0.2.43"
    # a quoted semicolon or comma does not split
    assert client_address(PEER, fwd('by="a;b,c";for=192.0.2.1'), LB) == "192.0.2.1"


@pytest.mark.parametrize(
    "headers",
    [
        xff("203.0.113.1, garbage"),  # the hop our proxy wrote is not an address
        xff("203.0.113.1,, 10.9.9.9"),  # an empty hop
        xff("unknown"),
        xff(""),
        xff("203.0.113.1:port"),
        xff("[203.0.113.1]"),  # brackets around IPv4
        xff("fe80::1%eth0"),
        fwd("for=unknown"),
        fwd("proto=https"),  # no for=
        fwd("for=192.0.2.1;for=192.0.2.2"),
        fwd('for="192.0.2.1'),  # unbalanced quote
        fwd("for=192.0.2.1,"),
        [(b"x-forwarded-for", b"203.0.113.1\xff")],
        xff(", ".join(["10.1.1.1"] * 40)),  # over 32 hops
    ],
)
def test_malformed_means_the_peer(headers):
    assert client_address(PEER, headers, LB) == PEER


def test_garbage_left_of_the_client_is_the_clients_own_business():
    assert client_address(PEER, xff("not-an-ip, 203.0.113.1"), LB) == "203.0.113.1"


def test_both_headers_must_agree():
    agree = fwd("for=203.0.113.1") + xff("203.0.113.1")
    assert client_address(PEER, agree, LB) == "203.0.113.1"
    # a proxy that manages X-Forwarded-For passes a Forwarded the client wrote
    spoofed = fwd("for=1.1.1.1") + xff("203.0.113.1")
    assert client_address(PEER, spoofed, LB) == PEER


def test_header_names_are_case_insensitive():
    assert client_address(PEER, [(b"X-Forwarded-For", b"203.0.113.1")], LB) == "203.0.113.1"


def test_a_mapped_peer_is_matched_and_recorded_as_ipv4():
    assert client_address("::ffff:10.1.2.3", xff("203.0.113.1"), LB) == "203.0.113.1"
    assert client_address("::ffff:198.51.100.9", xff("203.0.113.1"), LB) == "198.51.100.9"
    assert canonical("::ffff:198.51.100.9") == "198.51.100.9"


def test_ipv6_trusted_peer():
    assert client_address("2001:db8:ffff::2", xff("2001:db8::9"), LB) == "2001:db8::9"


def test_network_set_matches_as_ipaddress_does():
    networks = [
        parse_network(n)
        for n in ("192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "2a0a:a440::/29")
    ]
    allow = NetworkSet(networks)
    assert "192.30.253.1" in allow and "140.82.127.255" in allow and "140.82.128.0" not in allow
    assert "2a0a:a447:ffff::1" in allow and "2a0a:a448::" not in allow
    assert "::ffff:192.30.252.7" in allow
    assert "not an address" not in allow and "" not in allow


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.ip_addresses(), min_size=1, max_size=8),
    st.lists(st.integers(0, 128), min_size=8, max_size=8),
    st.ip_addresses(),
)
def test_network_set_agrees_with_ipaddress(bases, prefixes, probe):
    networks = [
        ipaddress.ip_network(f"{base}/{min(prefix, base.max_prefixlen)}", strict=False)
        for base, prefix in zip(bases, prefixes, strict=False)
    ]
    expected = any(probe in network for network in networks)
    assert (probe in NetworkSet(networks)) == expected or (
        probe.version == 6 and probe.ipv4_mapped is not None
    )


def test_parse_network_reasons():
    assert str(parse_network("10.0.0.1")) == "10.0.0.1/32"
    with pytest.raises(ValueError, match=r"host bits set: did you mean 10\.0\.0\.0/8"):
        parse_network("10.0.0.1/8")
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_network("github.com")
