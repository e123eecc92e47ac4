"""One connection: bytes in, h11 events, a verdict per request, bytes out.

The protocol reads one request at a time. While a request waits for its Kafka ack, reading is
paused, so pipelined requests stay in h11's buffer and are answered in order. Limits h11 does
not enforce itself are checked here against the raw head: its total size (a complete head in
one read passes h11's own bound), duplicate or list-valued Content-Length, Content-Length with
Transfer-Encoding, obs-fold continuation lines and bare-LF line endings.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import cast

import h11

from hookd.config import ServerConfig
from hookd.http import responses
from hookd.http.responses import Canned
from hookd.metrics import Metrics
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import PublishError
from hookd.record import build_record
from hookd.routing import Route, RouteTable
from hookd.verify import Headers, Rejected, Request, Verified

log = logging.getLogger("hookd.http")

#: Longest request target accepted (414 beyond).
MAX_TARGET_BYTES = 8192
_HEAD_END = b"\r\n\r\n"
_NO_ROUTE = "-"


@dataclass(eq=False)
class ServerContext:
    """What every connection of one listener shares."""

    config: ServerConfig
    routes: RouteTable
    outbox: Outbox
    metrics: Metrics
    connections: set[HttpProtocol] = field(default_factory=set)
    draining: bool = False
    in_flight: int = 0
    in_flight_bytes: int = 0


class HttpProtocol(asyncio.Protocol):
    """Drives ``h11.Connection`` from asyncio callbacks for the public listener."""

    def __init__(self, context: ServerContext) -> None:
        self._ctx = context
        self._loop = asyncio.get_running_loop()
        config = context.config
        self._max_head = config.max_header_bytes
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=config.max_header_bytes + MAX_TARGET_BYTES
        )
        self._transport: asyncio.Transport | None = None
        self._source_ip = ""
        self._timer: asyncio.TimerHandle | None = None
        self._idle = False  # between requests, no byte of the next one yet
        self._head = bytearray()  # raw bytes of the request head being received
        self._reading_head = True
        self._route: Route | None = None
        self._request: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._waiting: asyncio.Future[None] | None = None  # the publish we are waiting on
        self._delivery_id: bytes | None = None  # of the request being published

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if len(self._ctx.connections) >= self._ctx.config.max_connections:
            self._transport.write(responses.OVER_CAPACITY_BYTES)
            self._transport.close()
            self._transport = None
            self._ctx.metrics.request(_NO_ROUTE, 503)
            return
        self._ctx.connections.add(self)
        peer = self._transport.get_extra_info("peername")
        self._source_ip = peer[0] if isinstance(peer, tuple) else ""
        self._arm(self._ctx.config.header_timeout_s, self._on_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ctx.connections.discard(self)
        self._cancel_timer()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if self._idle:
            self._idle = False
            self._arm(self._ctx.config.header_timeout_s, self._on_timeout)
        if self._reading_head:
            self._head += data
            if len(self._head) > self._max_head and self._head.find(_HEAD_END) == -1:
                self._refuse_oversized_head()
                return
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._process()
        return None

    # -- h11 events -----------------------------------------------------------------------

    def _process(self) -> None:
        conn = self._conn
        while self._waiting is None and self._transport is not None:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue and self._route is not None:
                    self._write(conn.send(responses.CONTINUE))
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                self._on_data(event.data)
            elif isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.EndOfMessage):
                self._on_end()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _on_request(self, request: h11.Request) -> None:
        self._reading_head = False
        self._arm(self._ctx.config.body_timeout_s, self._on_timeout)
        problem = self._head_problem(request)
        if problem is not None:
            self._respond(_NO_ROUTE, problem)
            return
        route = self._ctx.routes.lookup(request.target)
        if route is None:
            self._respond(_NO_ROUTE, responses.NOT_FOUND)
            return
        if request.method != b"POST":
            self._respond(route.path, responses.METHOD_NOT_ALLOWED)
            return
        if self._ctx.draining:
            self._respond(route.path, responses.SHUTTING_DOWN)
            return
        length = _content_length(request)
        if length is not None and length > route.max_body_bytes:
            self._respond(route.path, responses.BODY_TOO_LARGE)
            return
        self._route = route
        self._request = request

    def _on_data(self, data: bytes) -> None:
        if self._route is None:
            return
        self._body_size += len(data)
        if self._body_size > self._route.max_body_bytes:
            self._respond(self._route.path, responses.BODY_TOO_LARGE)
            return
        self._body.append(data)

    def _on_end(self) -> None:
        """The whole request is in: verify it, then make it durable (or answer at once)."""
        route, request = self._route, self._request
        if route is None or request is None:
            return
        self._cancel_timer()
        body = b"".join(self._body)
        self._body.clear()
        verify_request = Request(request.method, request.target, Headers(request.headers), body)
        try:
            verified = route.verifier.verify(verify_request, time.time())
        except Rejected as exc:
            reason = str(exc)
            self._ctx.metrics.verify_failed(route.path, reason)
            self._respond(route.path, responses.error(401, reason))
            return
        except Exception:
            self._internal_error(route)
            return
        if verified.reply is not None:
            self._respond(route.path, responses.canned(200, verified.reply))
            return
        delivery_id = verified.delivery_id
        if (
            route.dedup is not None
            and delivery_id is not None
            and route.dedup.seen(delivery_id, time.monotonic())
        ):
            self._ctx.metrics.dedup_hit(route.path)
            self._respond(route.path, responses.DUPLICATE)
            return
        self._commit(route, verify_request, verified)

    def _commit(self, route: Route, request: Request, verified: Verified) -> None:
        """Hand the record to the outbox and wait, reading paused, for it to be durable."""
        ctx = self._ctx
        size = len(request.body)
        if (
            ctx.in_flight >= ctx.config.max_in_flight
            or ctx.in_flight_bytes + size > ctx.config.max_in_flight_bytes
        ):
            self._respond(route.path, responses.OVERLOADED)
            return
        record = build_record(
            topic=route.topic,
            route_path=route.path,
            scheme=route.scheme,
            key_rule=route.key_rule,
            request=request,
            verified=verified,
            received_at_ms=time.time_ns() // 1_000_000,
            source_ip=self._source_ip,
        )
        future = ctx.outbox.commit(record, route.ack_mode)
        self._delivery_id = verified.delivery_id
        if future.done():  # refused at once: broker known down, shutting down
            self._answer_commit(future)
            return
        self._waiting = future
        ctx.in_flight += 1
        ctx.in_flight_bytes += size
        self._pause_reading()
        future.add_done_callback(self._on_published)

    def _on_published(self, future: asyncio.Future[None]) -> None:
        """The awaited commit finished: answer, then read on (pipelined requests wait)."""
        self._waiting = None
        self._ctx.in_flight -= 1
        self._ctx.in_flight_bytes -= self._body_size
        self._answer_commit(future)
        self._resume_reading()
        self._process()

    def _answer_commit(self, future: asyncio.Future[None]) -> None:
        route = self._route
        assert route is not None
        error = future.exception()
        if error is None and route.dedup is not None and self._delivery_id is not None:
            route.dedup.add(self._delivery_id, time.monotonic())
        if self._transport is None:  # the client left; its record's fate is already decided
            return
        if error is None:
            self._respond(route.path, responses.ACCEPTED)
        elif isinstance(error, PublishError):
            self._respond(route.path, responses.unavailable(str(error)))
        else:
            log.error("commit failed unexpectedly", exc_info=error)
            self._internal_error(route)

    # -- answers --------------------------------------------------------------------------

    def _respond(self, route: str, answer: Canned) -> None:
        """Send a complete response; then close, or get ready for the next request."""
        conn = self._conn
        self._ctx.metrics.request(route, answer.status)
        self._write(
            conn.send(answer.response) + conn.send(answer.data) + conn.send(h11.EndOfMessage())
        )
        if answer.closes or conn.our_state is h11.MUST_CLOSE or self._ctx.draining:
            self._close()
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:  # the request body was not read to its end
            self._close()
            return
        self._route = None
        self._request = None
        self._body_size = 0
        self._reading_head = True
        self._head = bytearray(conn.trailing_data[0])
        if self._head:
            self._arm(self._ctx.config.header_timeout_s, self._on_timeout)
        else:
            self._idle = True
            self._arm(self._ctx.config.idle_timeout_s, self._close)

    def _internal_error(self, route: Route) -> None:
        request_id = secrets.token_hex(8)
        log.exception("unexpected error on %s, request id %s", route.path, request_id)
        self._respond(route.path, responses.error(500, responses.INTERNAL_ERROR.format(request_id)))

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        """Malformed HTTP: 400 (431 for an oversized head) and close, if we still can answer."""
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = 431 if exc.error_status_hint == 431 else 400
            answer = (
                responses.HEADERS_TOO_LARGE
                if status == 431
                else responses.error(400, f"malformed request: {exc}", close=True)
            )
            self._respond(self._route.path if self._route else _NO_ROUTE, answer)
        else:
            self._close()

    def _head_problem(self, request: h11.Request) -> Canned | None:
        """What h11 let through but hookd refuses, judged on the raw head."""
        end = self._head.find(_HEAD_END)
        head = self._head if end == -1 else self._head[:end]
        if len(request.target) > MAX_TARGET_BYTES:
            return responses.URI_TOO_LONG
        if len(head) > self._max_head:
            return responses.HEADERS_TOO_LARGE
        if end == -1 or head.count(b"\n") != head.count(b"\r\n"):
            return responses.error(400, "malformed request: bare LF line ending", close=True)
        if b"\r\n " in head or b"\r\n\t" in head:
            return responses.error(400, "malformed request: obs-fold header line", close=True)
        lowered = head.lower()
        lengths = lowered.count(b"\ncontent-length:")
        if lengths > 1:
            return responses.error(400, "malformed request: duplicate Content-Length", close=True)
        if lengths == 1:
            start = lowered.index(b"\ncontent-length:")
            line_end = lowered.find(b"\r\n", start + 1)
            if b"," in lowered[start : line_end if line_end != -1 else len(lowered)]:
                return responses.error(400, "malformed request: list in Content-Length", close=True)
            if b"\ntransfer-encoding:" in lowered:
                return responses.error(
                    400, "malformed request: both Content-Length and Transfer-Encoding", close=True
                )
        return None

    def _refuse_oversized_head(self) -> None:
        first_line_end = self._head.find(b"\n")
        too_long_target = first_line_end == -1 or first_line_end > MAX_TARGET_BYTES
        answer = responses.URI_TOO_LONG if too_long_target else responses.HEADERS_TOO_LARGE
        self._reading_head = False
        self._respond(_NO_ROUTE, answer)

    # -- timers and transport -------------------------------------------------------------

    def _on_timeout(self) -> None:
        """The head or body did not arrive in time: 408 and close."""
        self._timer = None
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.REQUEST_TIMEOUT)
        else:
            self._close()

    def _arm(self, delay: float, callback: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, callback)  # type: ignore[arg-type]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _close(self) -> None:
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._ctx.connections.discard(self)

    # -- draining -------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A request is past its head: it gets an answer before the connection closes."""
        return not self._reading_head or bool(self._head) or self._waiting is not None

    def close_if_idle(self) -> None:
        if not self.busy:
            self._close()

    def shut_down(self) -> None:
        """Past the drain deadline: a request still owed an answer gets 503, then close."""
        if self._transport is None:
            return
        if self.busy and self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.SHUTTING_DOWN)
        self._close()


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None
