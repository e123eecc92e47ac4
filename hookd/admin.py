"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics``, never on the public port.

What it reports comes from an ``AdminSource``: one serving process answers for itself; with
several workers, the supervisor's admin process answers for the whole set by asking each
worker over its private socket (``hookd.workers``).

Each listener holds at most ``ADMIN_MAX_CONNECTIONS`` connections (a new one beyond evicts the
oldest that has not sent its request yet, so probes keep working while idle connections pile
up), and every connection is aborted ``ADMIN_TIMEOUT_S`` after it opened, answered or not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast

import h11

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_METRICS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")

#: Admin connections one listener holds at once (file descriptors: see ``hookd.app``).
ADMIN_MAX_CONNECTIONS = 64
#: An admin connection is aborted this long after it opened: one GET, answered in milliseconds.
ADMIN_TIMEOUT_S = 10.0


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
        path = request.target.partition(b"?")[0]
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
                self._answer(503, f"not ready: {problem}\n".encode(), _TEXT)
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
