"""The unit tests' stand-ins for what surrounds ``HttpProtocol``: one fake transport, one outbox
stand-in, and an event loop whose clock moves only when a test says so.

They live in this module rather than in ``conftest.py`` because every ``conftest.py`` of this
suite is imported under the one module name ``conftest``: ``from conftest import ...`` gets
whichever was imported last. ``tests/unit/conftest.py`` provides the fixtures built on these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, cast

from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.metrics import Metrics
from hookd.publish.publisher import PublishError
from hookd.record import Record


class ManualClockLoop(asyncio.SelectorEventLoop):
    """A loop whose ``time()`` moves only when a test says so: deadlines are deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def time(self) -> float:
        return self.now


class FakeTransport(asyncio.Transport):
    """Records what the protocol does to it; delivers ``connection_lost`` (on the next loop turn)
    like asyncio does once the transport closes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.protocol: HttpProtocol | None = None
        self.written = bytearray()
        self.closed = False  # close() called (by the protocol, or by us after EOF)
        self.closed_by_protocol = False
        self.peer_gone = False  # the peer reset the connection
        self.paused = False
        self.writes_after_close = 0
        self.aborted = False
        self._lost = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            self.writes_after_close += 1
        self.written += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_by_protocol = True
            self._lose(None)

    def abort(self) -> None:
        """Closed at once, unsent data dropped (a client that did not read)."""
        self.aborted = True
        if not self.closed:
            self.closed = True
            self.closed_by_protocol = True
        self._lose(None)

    def close_after_eof(self) -> None:
        """What asyncio does when ``eof_received`` returns a false value."""
        if not self.closed:
            self.closed = True
            self._lose(None)

    def reset(self) -> None:
        """The peer went away abruptly."""
        self.peer_gone = True
        self._lose(ConnectionResetError())

    def _lose(self, exc: Exception | None) -> None:
        if not self._lost and self.protocol is not None:
            self._lost = True
            self._loop.call_soon(self.protocol.connection_lost, exc)

    def is_closing(self) -> bool:
        return self.closed or self.peer_gone

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_reading(self) -> bool:
        return not self.paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("203.0.113.9", 40001) if name == "peername" else default


#: What happens to one commit: settled at once or on a later loop turn, ok or PublishError;
#: "held" stays pending until the test settles it (a broker that does not answer).
OUTCOMES = ("ok", "fail", "ok_later", "fail_later", "held")


def settle(future: asyncio.Future[None], error: Exception | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class StandInOutbox:
    """Only the outbox's contract as the protocol sees it: ``commit`` returns a future per
    record, resolved with None (durable) or failed with ``PublishError``. The outcome of the
    n-th commit is ``outcomes[n % len(outcomes)]``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, outcomes: Iterable[str] = ("ok",)) -> None:
        self._loop = loop
        self._outcomes = list(outcomes) or ["ok"]
        assert set(self._outcomes) <= set(OUTCOMES), self._outcomes
        self.records: list[Record] = []
        self.held: list[asyncio.Future[None]] = []

    def commit(
        self, record: Record, mode: object = None, answer_by: float | None = None
    ) -> asyncio.Future[None]:
        outcome = self._outcomes[len(self.records) % len(self._outcomes)]
        self.records.append(record)
        future: asyncio.Future[None] = self._loop.create_future()
        error = PublishError("broker unavailable") if "fail" in outcome else None
        if outcome in ("ok", "fail"):
            settle(future, error)
        elif outcome == "held":
            self.held.append(future)
        else:
            self._loop.call_soon(settle, future, error)
        return future

    @property
    def waiting(self) -> bool:
        """A held commit is still pending: its request waits to be durable."""
        return any(not future.done() for future in self.held)

    def expected_statuses(self) -> list[int]:
        """The answer each committed record should get, in order (for non-held outcomes)."""
        return [
            503 if "fail" in self._outcomes[i % len(self._outcomes)] else 200
            for i in range(len(self.records))
        ]


def connect(
    context: ServerContext, loop: asyncio.AbstractEventLoop
) -> tuple[HttpProtocol, FakeTransport]:
    """A new connection of ``context``'s listener (call inside the running ``loop``)."""
    transport = FakeTransport(loop)
    protocol = HttpProtocol(context)
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


def server_context(config: Any, routes: Any, outbox: StandInOutbox, **extra: Any) -> ServerContext:
    """A listener's shared state around the stand-in outbox, with fresh metrics."""
    return ServerContext(config.server, routes, cast(Any, outbox), Metrics(), **extra)


async def until(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    """Wait (polling) until ``predicate()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
