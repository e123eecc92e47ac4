"""Flow control of one connection: a client that does not read its answers stops being read."""

from __future__ import annotations

import asyncio

from hookd.config import validate
from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.metrics import Metrics
from hookd.routing import build_routes


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1) if name == "peername" else None


REQUEST = (
    b"POST /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 2\r\n\r\n{}"
)


def test_paused_writing_stops_reading_and_answering_until_resumed():
    async def scenario() -> None:
        config = validate(
            {"routes": [{"path": "/t", "topic": "t", "verify": "token", "secrets": ["right"]}]}, {}
        )
        ctx = ServerContext(config.server, build_routes(config), None, Metrics())  # type: ignore[arg-type]
        protocol = HttpProtocol(ctx)
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(REQUEST)
        assert transport.written.count(b"HTTP/1.1 401") == 1
        protocol.pause_writing()  # the kernel buffer is full: the client is not reading
        assert not transport.reading
        protocol.data_received(REQUEST * 50)  # what was already in flight
        assert transport.written.count(b"HTTP/1.1 401") == 1  # nothing more is answered
        protocol.resume_writing()
        assert transport.reading
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
        ctx = ServerContext(config.server, build_routes(config), None, Metrics())  # type: ignore[arg-type]
        head = (
            b"POST /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer right\r\n"
            b"Content-Length: 800\r\n\r\n"
        )

        def connect() -> tuple[HttpProtocol, Transport]:
            protocol, transport = HttpProtocol(ctx), Transport()
            protocol.connection_made(transport)  # type: ignore[arg-type]
            protocol.data_received(head)  # the body never comes (yet)
            return protocol, transport

        slow, _ = connect()
        assert ctx.receiving_bytes == 800
        _, refused = connect()
        assert refused.written.startswith(b"HTTP/1.1 503 ")
        assert refused.closed
        slow.connection_lost(None)  # the slow sender goes away: its reservation is released
        assert ctx.receiving_bytes == 0
        again, accepted = connect()
        assert accepted.written == b"" and ctx.receiving_bytes == 800
        again.connection_lost(None)
        assert ctx.receiving_bytes == 0

    asyncio.run(scenario())


def test_a_commit_that_never_settles_gets_a_backstop_503():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] = loop.create_future()

        class StuckOutbox:
            def commit(self, record: object, mode: object) -> asyncio.Future[None]:
                return pending

        config = validate(
            {"routes": [{"path": "/t", "topic": "t", "verify": "token", "secrets": ["right"]}]}, {}
        )
        ctx = ServerContext(
            config.server,
            build_routes(config),
            StuckOutbox(),
            Metrics(),
            commit_timeout_s=5,  # type: ignore[arg-type]
        )
        protocol, transport = HttpProtocol(ctx), Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(REQUEST.replace(b"Bearer wrong", b"Bearer right"))
        assert transport.written == b"" and ctx.in_flight == 1
        protocol.check_deadline(loop.time() + 1)
        assert transport.written == b""  # not yet
        protocol.check_deadline(loop.time() + 6)
        assert transport.written.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 5" in transport.written and transport.closed
        pending.set_result(None)  # settles late: no second answer, counters balance
        await asyncio.sleep(0)
        assert transport.written.count(b"HTTP/1.1") == 1
        assert ctx.in_flight == 0 and ctx.in_flight_bytes == 0

    asyncio.run(scenario())
