"""Flow control of one connection: a client that does not read its answers stops being read."""

from __future__ import annotations

import asyncio

from fakes import FakeTransport, StandInOutbox, connect, server_context

from hookd.config import validate
from hookd.http.protocol import HttpProtocol
from hookd.routing import build_routes

REQUEST = (
    b"POST /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 2\r\n\r\n{}"
)


def test_paused_writing_stops_reading_and_answering_until_resumed():
    async def scenario() -> None:
        config = validate(
            {"routes": [{"path": "/t", "topic": "t", "verify": "token", "secrets": ["right"]}]}, {}
        )
        loop = asyncio.get_running_loop()
        ctx = server_context(config, build_routes(config), StandInOutbox(loop))
        protocol, transport = connect(ctx, loop)
        protocol.data_received(REQUEST)
        assert transport.written.count(b"HTTP/1.1 401") == 1
        protocol.pause_writing()  # the kernel buffer is full: the client is not reading
        assert transport.paused
        protocol.data_received(REQUEST * 50)  # what was already in flight
        assert transport.written.count(b"HTTP/1.1 401") == 1  # nothing more is answered
        protocol.resume_writing()
        assert not transport.paused
        assert transport.written.count(b"HTTP/1.1 401") == 51  # answered in order, none lost
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_bodies_still_arriving_count_against_the_in_flight_budget():
    async def scenario() -> None:
        config = validate(
            {
                "server": {"max_in_flight_bytes": 1000},
                "routes": [{"path": "/t", "topic": "t", "verify": "token", "secrets": ["right"]}],
            },
            {},
        )
        loop = asyncio.get_running_loop()
        ctx = server_context(config, build_routes(config), StandInOutbox(loop))
        head = (
            b"POST /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer right\r\n"
            b"Content-Length: 800\r\n\r\n"
        )

        def sender() -> tuple[HttpProtocol, FakeTransport]:
            protocol, transport = connect(ctx, loop)
            protocol.data_received(head + b"x" * 600)  # the rest of the body never comes (yet)
            return protocol, transport

        slow, _ = sender()
        assert ctx.receiving_bytes == 600  # the bytes received, not the length announced
        _, refused = sender()
        assert refused.written.startswith(b"HTTP/1.1 503 ")
        assert refused.closed
        slow.connection_lost(None)  # the slow sender goes away: its reservation is released
        assert ctx.receiving_bytes == 0
        again, accepted = sender()
        assert accepted.written == b"" and ctx.receiving_bytes == 600
        again.connection_lost(None)
        assert ctx.receiving_bytes == 0

    asyncio.run(scenario())


def test_a_commit_that_never_settles_gets_a_backstop_503():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        config = validate(
            {"routes": [{"path": "/t", "topic": "t", "verify": "token", "secrets": ["right"]}]}, {}
        )
        outbox = StandInOutbox(loop, ["held"])  # the commit never settles
        ctx = server_context(config, build_routes(config), outbox, commit_timeout_s=5)
        protocol, transport = connect(ctx, loop)
        protocol.data_received(REQUEST.replace(b"Bearer wrong", b"Bearer right"))
        assert transport.written == b"" and ctx.in_flight == 1
        protocol.check_deadline(loop.time() + 1)
        assert transport.written == b""  # not yet
        protocol.check_deadline(loop.time() + 6)
        assert transport.written.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 5" in transport.written and transport.closed
        outbox.held[0].set_result(None)  # settles late: no second answer, counters balance
        await asyncio.sleep(0)
        assert transport.written.count(b"HTTP/1.1") == 1
        assert ctx.in_flight == 0 and ctx.in_flight_bytes == 0

    asyncio.run(scenario())
