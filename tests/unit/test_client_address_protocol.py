"""The listener's side of issue 14's client address, without sockets: a PROXY header cut at
every byte, the header's deadline, allow_from decided at the head, the address in the record.
(The fake transport's peer is 203.0.113.9.)"""

from __future__ import annotations

import asyncio
import struct

from fakes import StandInOutbox, connect, server_context

from hookd.config import validate
from hookd.routing import build_routes

ROUTE = {"path": "/t", "topic": "t", "verify": "token", "secrets": ["right"]}
REQUEST = (
    b"POST /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer right\r\nContent-Length: 2\r\n\r\n{}"
)
V2 = b"\r\n\r\n\x00\r\nQUIT\n"
PEER = b"203.0.113.9"


def v2_tcp4(source: bytes, sport: int) -> bytes:
    block = source + bytes([10, 0, 0, 1]) + struct.pack("!HH", sport, 8080) + b"\x04\x00\x00"
    return V2 + b"\x21\x11" + struct.pack("!H", len(block)) + block


def source_ip(record) -> bytes:
    return dict(record.headers)["hookd-source-ip"]


def run(server: dict, scenario) -> None:
    async def main() -> None:
        config = validate({"server": server, "routes": [ROUTE]}, {})
        loop = asyncio.get_running_loop()
        outbox = StandInOutbox(loop)
        ctx = server_context(config, build_routes(config), outbox)
        await scenario(ctx, outbox, loop)

    asyncio.run(main())


def test_a_proxy_header_cut_anywhere_names_the_client():
    async def scenario(ctx, outbox, loop) -> None:
        stream = v2_tcp4(bytes([198, 51, 100, 7]), 5000) + REQUEST
        header_end = len(stream) - len(REQUEST)
        for cut in range(1, header_end + 2):
            protocol, transport = connect(ctx, loop)
            protocol.data_received(stream[:cut])
            protocol.data_received(stream[cut:])
            assert transport.written.startswith(b"HTTP/1.1 200 "), (cut, transport.written)
            protocol.connection_lost(None)
        assert {source_ip(record) for record in outbox.records} == {b"198.51.100.7"}

    run({"proxy_protocol": True}, scenario)


def test_v1_header_and_local_and_no_header():
    async def scenario(ctx, outbox, loop) -> None:
        protocol, transport = connect(ctx, loop)
        protocol.data_received(b"PROXY TCP4 192.0.2.44 10.0.0.1 4000 8080\r\n" + REQUEST)
        assert transport.written.startswith(b"HTTP/1.1 200 ")
        protocol, transport = connect(ctx, loop)
        protocol.data_received(V2 + b"\x20\x00\x00\x00" + REQUEST)  # LOCAL: the peer
        assert transport.written.startswith(b"HTTP/1.1 200 ")
        assert [source_ip(record) for record in outbox.records] == [b"192.0.2.44", PEER]
        protocol, transport = connect(ctx, loop)
        protocol.data_received(REQUEST)  # plain HTTP on a PROXY listener
        assert transport.written.startswith(b"HTTP/1.1 400 ")
        assert b"no PROXY protocol header" in transport.written and transport.closed
        assert len(outbox.records) == 2
        assert ctx.metrics.client_refusals == {("-", "proxy_protocol"): 1}

    run({"proxy_protocol": True}, scenario)


def test_half_a_header_is_closed_at_the_header_deadline_without_an_answer():
    async def scenario(ctx, outbox, loop) -> None:
        protocol, transport = connect(ctx, loop)
        protocol.data_received(b"PROXY TCP4 192.0")
        protocol.check_deadline(loop.time() + 1.5)
        assert not transport.closed
        protocol.check_deadline(loop.time() + 2.5)
        assert transport.closed and transport.written == b""

    run({"proxy_protocol": True, "header_timeout_s": 2}, scenario)


def test_without_the_option_a_proxy_header_is_not_http():
    async def scenario(ctx, outbox, loop) -> None:
        protocol, transport = connect(ctx, loop)
        protocol.data_received(b"PROXY TCP4 192.0.2.44 10.0.0.1 4000 8080\r\n" + REQUEST)
        assert transport.written.startswith(b"HTTP/1.1 400 ") and not outbox.records

    run({}, scenario)


def test_trusted_peer_and_allow_from_decided_at_the_head():
    async def main() -> None:
        route = {**ROUTE, "allow_from": ["198.51.100.0/24"]}
        config = validate(
            {"server": {"trusted_proxies": ["203.0.113.0/24"]}, "routes": [route]}, {}
        )
        loop = asyncio.get_running_loop()
        outbox = StandInOutbox(loop)
        ctx = server_context(config, build_routes(config), outbox)
        allowed = REQUEST.replace(b"Host: x\r\n", b"Host: x\r\nX-Forwarded-For: 198.51.100.1\r\n")
        protocol, transport = connect(ctx, loop)
        protocol.data_received(allowed)
        assert transport.written.startswith(b"HTTP/1.1 200 ")
        assert [source_ip(record) for record in outbox.records] == [b"198.51.100.1"]
        # the head alone decides: the body is never waited for
        head = b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n"
        protocol, transport = connect(ctx, loop)
        protocol.data_received(head)  # no X-Forwarded-For: the peer, which is not allowed
        assert transport.written.startswith(b"HTTP/1.1 403 ") and transport.closed
        assert ctx.metrics.client_refusals == {("/t", "allow_from"): 1}
        assert ctx.metrics.requests[("/t", 403)] == 1
        assert len(outbox.records) == 1

    asyncio.run(main())
