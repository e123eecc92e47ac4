"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics``, never on the public port.

What it reports comes from an ``AdminSource``: one serving process answers for itself; with
several workers, the supervisor's admin process answers for the whole set by asking each
worker over its private socket (``hookd.workers``).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Protocol, cast

import h11

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_METRICS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")


class AdminSource(Protocol):
    async def not_ready(self) -> str | None:
        """Why traffic should not come here, or ``None`` when ready."""

    async def wedged(self) -> str | None:
        """Why this process should be restarted (``/healthz`` 503), or ``None``."""

    async def metrics(self) -> bytes:
        """The Prometheus text exposition."""


class AdminProtocol(asyncio.Protocol):
    """One GET per connection; the answer closes it. Admin traffic is rare and small."""

    def __init__(self, source: AdminSource) -> None:
        self._source = source
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=8192)
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._task is not None:
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
