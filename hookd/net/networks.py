"""Sets of IP networks (``10.0.0.0/8``, ``2001:db8::/32``, a bare address) and fast membership.

An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports for an
IPv4 client) is the IPv4 address it maps, both for matching and in the record.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> IPNetwork:
    """``ADDRESS`` or ``ADDRESS/PREFIX``; raise ``ValueError`` with a readable reason. Host
    bits set (``10.1.2.3/8``) are refused: usually a typo for a different network."""
    value = text.strip()
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from exc
        raise ValueError(f"{text!r} has host bits set: did you mean {loose}?") from None


def parse_address(text: str) -> IPAddress | None:
    """An address as a header or a socket names it, IPv4-mapped ones as IPv4; ``None`` if
    it is not one. A zone (``fe80::1%eth0``) is dropped."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical(text: str) -> str:
    """The address the record and the logs carry for a peer: IPv4-mapped as IPv4."""
    address = parse_address(text)
    return text if address is None else str(address)


class NetworkSet:
    """Networks grouped by prefix length: a lookup is one mask and one set probe per distinct
    prefix length present (a few, even for a provider's list of hundreds)."""

    __slots__ = ("_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)
        self._v4: list[tuple[int, frozenset[int]]] = _by_prefix(self.networks, 4)
        self._v6: list[tuple[int, frozenset[int]]] = _by_prefix(self.networks, 6)

    def __len__(self) -> int:
        return len(self.networks)

    def __contains__(self, address: object) -> bool:
        if isinstance(address, str):
            address = parse_address(address)
            if address is None:
                return False
        if isinstance(address, ipaddress.IPv4Address):
            groups = self._v4
        elif isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return address.ipv4_mapped in self
            groups = self._v6
        else:
            return False
        number = int(address)
        return any(number & mask in members for mask, members in groups)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkSet) and set(self.networks) == set(other.networks)

    def __hash__(self) -> int:
        return hash(frozenset(self.networks))

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self.networks]})"


def _by_prefix(networks: Iterable[IPNetwork], version: int) -> list[tuple[int, frozenset[int]]]:
    groups: dict[int, set[int]] = {}
    for network in networks:
        if network.version == version:
            groups.setdefault(int(network.netmask), set()).add(int(network.network_address))
    return [(mask, frozenset(members)) for mask, members in sorted(groups.items(), reverse=True)]
