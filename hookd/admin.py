"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics``, never on the public port;
its answers' text, and the views it answers from.

What it reports comes from an ``AdminSource``: one serving process answers for itself
(``ProcessView``); with several workers, the supervisor's admin process (``hookd.workers``)
answers for the whole set (``WorkerSetView``) by asking each worker over its private socket
and merging the answers.

Each listener holds at most ``ADMIN_MAX_CONNECTIONS`` connections (a new one beyond evicts the
oldest that has not sent its request yet, so probes keep working while idle connections pile
up), and every connection is aborted ``ADMIN_TIMEOUT_S`` after it opened, answered or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast

import h11

from hookd.metrics import Gauge, merge_expositions, render_gauge
from hookd.target import split_target

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_METRICS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
#: ``/readyz``'s 503 body is this, then the reason; the admin process takes it off each
#: worker's answer to name the worker instead.
_NOT_READY = "not ready: "

#: Admin connections one listener holds at once (file descriptors: see ``hookd.startup``).
ADMIN_MAX_CONNECTIONS = 64
#: An admin connection is aborted this long after it opened: one GET, answered in milliseconds.
ADMIN_TIMEOUT_S = 10.0
#: How long a worker's admin socket is waited for: by the admin process for one answer, by
#: the supervisor for a health check.
WORKER_QUERY_TIMEOUT_S = 2.0


@dataclass(eq=False)
class AdminLimits:
    """What the connections of one admin listener share."""

    max_connections: int = ADMIN_MAX_CONNECTIONS
    timeout_s: float = ADMIN_TIMEOUT_S
    #: Open connections, oldest first (a dict keeps insertion order).
    open: dict[AdminProtocol, None] = field(default_factory=dict)


class AdminSource(Protocol):
    async def not_ready(self) -> str | None:
        """Why traffic should not come here, or ``None`` when ready."""

    async def wedged(self) -> str | None:
        """Why this process should be restarted (``/healthz`` 503), or ``None``."""

    async def metrics(self) -> bytes:
        """The Prometheus text exposition."""


class AdminProtocol(asyncio.Protocol):
    """One GET per connection; the answer closes it. Admin traffic is rare and small."""

    def __init__(self, source: AdminSource, limits: AdminLimits) -> None:
        self._source = source
        self._limits = limits
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=8192)
        self._transport: asyncio.Transport | None = None
        self._raw: asyncio.Transport | None = None  # kept after the answer, for the abort
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = self._raw = cast(asyncio.Transport, transport)
        limits = self._limits
        if len(limits.open) >= limits.max_connections:
            idle = next((conn for conn in limits.open if conn._task is None), None)
            if idle is None:  # every one is being answered: this one waits its turn elsewhere
                self._abort()
                return
            idle._abort()
        limits.open[self] = None
        self._timer = asyncio.get_running_loop().call_later(limits.timeout_s, self._abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = self._raw = None
        self._limits.open.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()

    def _abort(self) -> None:
        """Drop the connection at once (too slow, or evicted)."""
        self._limits.open.pop(self, None)
        raw, self._transport, self._raw = self._raw, None, None
        if raw is not None:
            raw.abort()

    def data_received(self, data: bytes) -> None:
        if self._task is not None or self._transport is None:
            return  # one request per connection
        self._conn.receive_data(data)
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError:
            self._answer(400, b"bad request\n", _TEXT)
            return
        if isinstance(event, h11.Request):
            self._task = asyncio.ensure_future(self._serve(event))

    async def _serve(self, request: h11.Request) -> None:
        if request.method != b"GET":
            self._answer(405, b"method not allowed\n", _TEXT, (b"allow", b"GET"))
            return
        path = split_target(request.target)[0]
        if path == b"/healthz":
            problem = await self._source.wedged()
            if problem is None:
                self._answer(200, b"ok\n", _TEXT)
            else:
                self._answer(503, f"wedged: {problem}\n".encode(), _TEXT)
        elif path == b"/readyz":
            problem = await self._source.not_ready()
            if problem is None:
                self._answer(200, b"ready\n", _TEXT)
            else:
                self._answer(503, f"{_NOT_READY}{problem}\n".encode(), _TEXT)
        elif path == b"/metrics":
            self._answer(200, await self._source.metrics(), _METRICS)
        else:
            self._answer(404, b"not found\n", _TEXT)

    def _answer(self, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
        if self._transport is None:
            return
        response = h11.Response(
            status_code=status,
            reason=HTTPStatus(status).phrase.encode(),
            headers=[
                *headers,
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        )
        self._transport.write(self._conn.send(response) + self._conn.send(h11.Data(body)))
        self._transport.close()


class ProcessView:
    """A serving process, as its admin listener sees it: its own readiness, health and
    metrics."""

    def __init__(
        self,
        not_ready: Callable[[], str | None],
        wedged: Callable[[], str | None],
        metrics: Callable[[], bytes],
    ) -> None:
        self._not_ready = not_ready
        self._wedged = wedged
        self._metrics = metrics

    async def not_ready(self) -> str | None:
        return self._not_ready()

    async def wedged(self) -> str | None:
        return self._wedged()

    async def metrics(self) -> bytes:
        return self._metrics()


class WorkerSetView:
    """``/readyz`` and ``/metrics`` for every worker, asked over their unix sockets."""

    def __init__(self, sockets: list[str]) -> None:
        self._sockets = sockets

    async def wedged(self) -> str | None:
        return None  # the supervisor restarts a wedged worker itself

    async def not_ready(self) -> str | None:
        answers = await asyncio.gather(*(_ask(path, "/readyz") for path in self._sockets))
        problems = [
            f"worker {index}: {_problem(answer)}"
            for index, answer in enumerate(answers)
            if answer is None or answer[0] != 200
        ]
        return "; ".join(problems) or None

    async def metrics(self) -> bytes:
        answers = await asyncio.gather(*(_ask(path, "/metrics") for path in self._sockets))
        up = [body for answer in answers if answer is not None for body in (answer[1],)]
        return merge_expositions([*up, render_gauge(Gauge.WORKERS, len(up))])


def _problem(answer: tuple[int, bytes] | None) -> str:
    if answer is None:
        return "not answering"
    return answer[1].decode(errors="replace").strip().removeprefix(_NOT_READY)


async def _ask(path: str, target: str) -> tuple[int, bytes] | None:
    """GET ``target`` from a worker's admin socket; ``None`` if it does not answer."""
    try:
        async with asyncio.timeout(WORKER_QUERY_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(f"GET {target} HTTP/1.1\r\nHost: worker\r\n\r\n".encode())
            raw = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return None
