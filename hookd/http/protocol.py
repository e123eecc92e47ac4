"""One connection: bytes in, a verdict per request, prebuilt bytes out.

The protocol keeps its own receive buffer and cuts it into requests. Each request head is
parsed and validated by a fresh ``h11.Connection``; a Content-Length body is then taken from
the buffer by its length, and a chunked body is decoded by that same h11 connection. Answers
are prebuilt bytes. Per request, h11 thus runs one event through its state machine instead of
a whole request/response cycle (see bench/protocol_bench.py).

One request is handled at a time. While it waits to be durable, reading is paused, so
pipelined requests stay in the buffer and are answered in order. On top of h11's checks, the
raw head is refused when it is too large (decided before h11 sees it), repeats
Content-Length or gives it as a list, carries both Content-Length and Transfer-Encoding,
folds a header line (obs-fold), or ends lines with a bare LF.

Timeouts are deadlines on the connection, enforced by one task per listener
(:func:`enforce_timeouts`), so the hot path sets a float instead of scheduling timers. The
answer to a request is due within its route's ``respond_within_s`` after its head arrived (a
margin under the provider's delivery timeout): the outbox is given that instant and stops
waiting for Kafka in time, and each answer's share of it is observed in
``hookd_answer_deadline_used_ratio``.
"""

from __future__ import annotations

import asyncio
import enum
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
#: What a chunked body may spend on framing (size lines, extensions, CRLFs, trailers): this
#: much per chunk plus a fixed allowance; beyond, 400. h11 discards chunk extensions but accepts
#: any length of them when the line arrives whole.
CHUNK_FRAMING_BYTES = 64
CHUNK_FRAMING_ALLOWANCE = 4096
#: How often deadlines are checked; timeouts fire up to this much late.
TIMEOUT_RESOLUTION_S = 0.25
_HEAD_END = b"\r\n\r\n"
_NO_ROUTE = "-"


class _State(enum.Enum):
    IDLE = "idle"  # keep-alive, no byte of the next request yet
    HEAD = "head"  # receiving a request head
    BODY = "body"  # receiving a Content-Length body
    CHUNKED = "chunked"  # receiving a chunked body, decoded by h11
    WAITING = "waiting"  # the request is in; waiting for it to be durable
    CLOSED = "closed"


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
    receiving_bytes: int = 0  # Content-Length of bodies still arriving
    #: Backstop for a request waiting to be durable; the outbox answers well before it.
    commit_timeout_s: float = 60.0


class HttpProtocol(asyncio.Protocol):
    """The public listener's connections."""

    def __init__(self, context: ServerContext) -> None:
        self._ctx = context
        self._loop = asyncio.get_running_loop()
        self._max_head = context.config.max_header_bytes
        self._transport: asyncio.Transport | None = None
        self._source_ip = ""
        self._state = _State.IDLE  # until the first byte; then the header timeout runs
        self._deadline = 0.0
        self._buffer = bytearray()
        self._route: Route | None = None
        self._request: h11.Request | None = None
        self._headers: list[tuple[bytes, bytes]] = []  # of self._request, names lower-cased
        self._keep_alive = True
        self._body_length = 0  # Content-Length still to come, in state BODY
        self._chunks: list[bytes] = []
        self._chunked_size = 0
        self._chunked_fed = 0  # bytes given to h11 for the chunked body, framing included
        self._chunk_count = 0
        self._h11: h11.Connection | None = None  # in state CHUNKED
        self._head_request = False  # a HEAD request: its answer carries no body
        self._expects_continue = False
        self._write_paused = False
        self._delivery_id: bytes | None = None  # of the request being committed
        self._body_size = 0  # of the request being committed
        self._reserved = 0  # Content-Length counted in the context's receiving_bytes
        self._fingerprint = 0  # of its body, for the redelivery window
        self._head_at = 0.0  # loop time the current request's head was taken: its deadline's start
        self._timing = False  # the current request is in: its answer counts toward the deadline

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if len(self._ctx.connections) >= self._ctx.config.max_connections:
            self._ctx.metrics.request(_NO_ROUTE, 503)
            self._transport.write(responses.OVER_CAPACITY.close)
            self._close()
            return
        self._ctx.connections.add(self)
        peer = self._transport.get_extra_info("peername")
        self._source_ip = peer[0] if isinstance(peer, tuple) else ""
        self._deadline = self._loop.time() + self._ctx.config.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_reservation()
        self._state = _State.CLOSED
        self._transport = None
        self._ctx.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.CLOSED:
            return
        if self._state is _State.IDLE:
            self._state = _State.HEAD
            self._deadline = self._loop.time() + self._ctx.config.header_timeout_s
        self._buffer += data
        self._advance()

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading its requests until it does,
        so a client cannot grow hookd's write buffer without bound."""
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and self._state is not _State.WAITING:
            self._transport.resume_reading()
            self._advance()

    def eof_received(self) -> bool:
        """The client stopped sending. A request already in is still answered; a partial one
        never can be, so the connection closes."""
        if self._state is _State.WAITING:
            self._keep_alive = False
            return True
        self._close()
        return False

    # -- cutting the buffer into requests -------------------------------------------------

    def _advance(self) -> None:
        while self._transport is not None and not self._write_paused:
            state = self._state
            if state is _State.HEAD:
                if not self._take_head():
                    return
            elif state is _State.BODY:
                if len(self._buffer) < self._body_length:
                    self._maybe_continue()
                    return
                body = bytes(self._buffer[: self._body_length])
                del self._buffer[: self._body_length]
                self._on_body(body)
            elif state is _State.CHUNKED:
                if not self._take_chunks():
                    return
            else:  # IDLE with nothing buffered, WAITING or CLOSED
                return

    def _take_head(self) -> bool:
        """Parse the next request head if it is complete; False when more bytes are needed."""
        buffer = self._buffer
        while buffer[:2] == b"\r\n":  # empty lines before a request are ignored (RFC 9112 2.2)
            del buffer[:2]
        if not buffer:
            return False
        end = buffer.find(_HEAD_END)
        if end == -1:
            if b"\n\n" in buffer:
                self._respond(_NO_ROUTE, responses.malformed("bare LF line ending"))
            elif len(buffer) > self._max_head:
                self._respond(_NO_ROUTE, self._oversized_head())
            return False
        if end > self._max_head:
            self._respond(_NO_ROUTE, self._oversized_head())
            return False
        head = bytes(buffer[: end + 4])
        del buffer[: end + 4]
        problem = _head_problem(head)
        if problem is not None:
            self._respond(_NO_ROUTE, responses.malformed(problem))
            return False
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        try:
            request = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._respond(_NO_ROUTE, responses.malformed(_h11_reason(exc)))
            return False
        if not isinstance(request, h11.Request):
            self._respond(_NO_ROUTE, responses.malformed("no request line"))
            return False
        self._on_head(request, conn)
        return True

    def _oversized_head(self) -> Canned:
        first_line_end = self._buffer.find(b"\n")
        if first_line_end == -1 or first_line_end > MAX_TARGET_BYTES:
            return responses.URI_TOO_LONG
        return responses.HEADERS_TOO_LARGE

    def _on_head(self, request: h11.Request, conn: h11.Connection) -> None:
        """Route the request and decide, before reading its body, whether to take it."""
        self._head_at = self._loop.time()
        self._head_request = request.method == b"HEAD"
        if len(request.target) > MAX_TARGET_BYTES:
            self._respond(_NO_ROUTE, responses.URI_TOO_LONG)
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
        chunked = False
        length = 0
        keep_alive = request.http_version == b"1.1"
        expects_continue = False
        # h11's Headers is a Sequence whose iteration indexes item by item; one list of
        # lower-cased pairs serves the framing below, the verifier and the record.
        headers = [(name.lower(), value) for name, value in request.headers.raw_items()]
        self._headers = headers
        for name, value in headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True  # h11 accepts "chunked" alone
            elif name == b"connection":
                keep_alive &= b"close" not in _tokens(value)
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if length > route.max_body_bytes:
            self._respond(route.path, responses.BODY_TOO_LARGE)
            return
        ctx = self._ctx
        if ctx.in_flight_bytes + ctx.receiving_bytes + length > ctx.config.max_in_flight_bytes:
            # bodies still arriving count too, or slow senders could hold memory unbounded
            self._respond(route.path, responses.OVERLOADED_CLOSE)
            return
        self._route = route
        self._request = request
        self._keep_alive = keep_alive
        self._expects_continue = expects_continue and request.http_version == b"1.1"
        self._deadline = self._loop.time() + self._ctx.config.body_timeout_s
        if chunked:
            self._state = _State.CHUNKED
            self._h11 = conn
            self._chunks = []
            self._chunked_size = 0
            self._chunked_fed = 0
            self._chunk_count = 0
        else:
            self._state = _State.BODY
            self._body_length = length
            self._reserved = length
            ctx.receiving_bytes += length

    def _maybe_continue(self) -> None:
        """``Expect: 100-continue``: the client waits for this before sending the body."""
        if self._expects_continue:
            self._expects_continue = False
            self._write(responses.CONTINUE)

    def _take_chunks(self) -> bool:
        """Decode chunks with h11; True once the body is complete (and handled)."""
        conn = self._h11
        route = self._route
        assert conn is not None and route is not None
        if self._buffer:
            self._chunked_fed += len(self._buffer)
            conn.receive_data(bytes(self._buffer))
            self._buffer.clear()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._respond(route.path, responses.malformed(_h11_reason(exc)))
                return False
            if isinstance(event, h11.Data):
                self._chunk_count += event.chunk_start
                self._chunked_size += len(event.data)
                if self._chunked_size > route.max_body_bytes:
                    self._respond(route.path, responses.BODY_TOO_LARGE)
                    return False
                self._chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                rest = conn.trailing_data[0]  # the next pipelined request, if any
                if self._framing_exceeded(len(rest)):
                    return False
                self._buffer += rest
                self._h11 = None
                body = b"".join(self._chunks)
                self._chunks = []
                self._on_body(body)
                return True
            else:  # NEED_DATA
                if self._framing_exceeded(0):  # what h11 holds back is all framing
                    return False
                self._maybe_continue()
                return False

    def _framing_exceeded(self, unread: int) -> bool:
        """Refuse a chunked body whose framing outgrew its data (a 20 KB chunk extension, say);
        ``unread``: bytes h11 holds that belong to what follows the body."""
        framing = self._chunked_fed - unread - self._chunked_size
        if framing <= CHUNK_FRAMING_ALLOWANCE + CHUNK_FRAMING_BYTES * self._chunk_count:
            return False
        assert self._route is not None
        self._respond(self._route.path, responses.malformed("chunk framing too large"))
        return True

    # -- a complete request ---------------------------------------------------------------

    def _on_body(self, body: bytes) -> None:
        """The whole request is in: verify it, then make it durable (or answer at once)."""
        self._release_reservation()
        route, request = self._route, self._request
        assert route is not None and request is not None
        self._timing = True
        verify_request = Request(request.method, request.target, Headers(self._headers), body)
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
            and route.dedup.seen(delivery_id, hash(body), time.monotonic())
        ):
            self._ctx.metrics.dedup_hit(route.path)
            self._respond(route.path, responses.DUPLICATE)
            return
        try:
            self._commit(route, verify_request, verified)
        except Exception:
            self._internal_error(route)

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
        # The deadline counts from the request head: the provider's clock started earlier
        # still, which the route's default respond_within_s leaves a margin for.
        answer_by = self._head_at + route.respond_within_s
        future = ctx.outbox.commit(record, route.ack_mode, answer_by)
        self._delivery_id = verified.delivery_id
        if route.dedup is not None and verified.delivery_id is not None:
            self._fingerprint = hash(request.body)
        if future.done():  # refused at once: broker known down, shutting down
            self._answer_commit(future)
            return
        self._state = _State.WAITING
        self._deadline = self._loop.time() + ctx.commit_timeout_s
        self._body_size = size
        ctx.in_flight += 1
        ctx.in_flight_bytes += size
        if self._transport is not None:
            self._transport.pause_reading()
        future.add_done_callback(self._on_committed)

    def _on_committed(self, future: asyncio.Future[None]) -> None:
        """The awaited commit finished: answer, then go on with pipelined requests."""
        self._ctx.in_flight -= 1
        self._ctx.in_flight_bytes -= self._body_size
        self._answer_commit(future)
        if self._transport is not None and not self._write_paused:
            self._transport.resume_reading()
            self._advance()

    def _answer_commit(self, future: asyncio.Future[None]) -> None:
        route = self._route
        assert route is not None
        error = future.exception()
        if error is None and route.dedup is not None and self._delivery_id is not None:
            route.dedup.add(self._delivery_id, self._fingerprint, time.monotonic())
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
        self._ctx.metrics.request(route, answer.status)
        if self._timing:  # how much of the route's respond_within_s this answer used
            self._timing = False
            assert self._route is not None
            used = (self._loop.time() - self._head_at) / self._route.respond_within_s
            self._ctx.metrics.deadline_used(route, used)
        if answer.status >= 400:
            self._log_refusal(route, answer)
        elif self._ctx.config.access_log:
            log.info(
                "answered",
                extra={"route": route, "status": answer.status, "source_ip": self._source_ip},
            )
        closing = answer.closes or not self._keep_alive or self._ctx.draining
        data = answer.close if closing else answer.keep_alive
        if self._head_request:  # the answer to HEAD has no content (RFC 9110, 9.3.2)
            data = data[: data.index(_HEAD_END) + len(_HEAD_END)]
        self._write(data)
        if closing:
            self._close()
            return
        self._route = None
        self._request = None
        self._head_request = False
        if self._buffer:
            self._state = _State.HEAD
            self._deadline = self._loop.time() + self._ctx.config.header_timeout_s
        else:
            self._state = _State.IDLE
            self._deadline = self._loop.time() + self._ctx.config.idle_timeout_s

    def _log_refusal(self, route: str, answer: Canned) -> None:
        """One line per refused request, with an id to find it by (500s log their own)."""
        if answer.status == 500:
            return
        log.log(
            logging.WARNING if answer.status >= 500 else logging.INFO,
            "refused",
            extra={
                "request_id": secrets.token_hex(8),
                "route": route,
                "status": answer.status,
                "reason": answer.reason,
                "source_ip": self._source_ip,
            },
        )

    def _internal_error(self, route: Route) -> None:
        request_id = secrets.token_hex(8)
        log.exception("unexpected error on %s, request id %s", route.path, request_id)
        self._respond(route.path, responses.error(500, f"internal error, request id {request_id}"))

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _release_reservation(self) -> None:
        self._ctx.receiving_bytes -= self._reserved
        self._reserved = 0

    def _close(self) -> None:
        self._release_reservation()
        self._state = _State.CLOSED
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._ctx.connections.discard(self)

    # -- timeouts and draining ------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Past the deadline: an idle keep-alive connection just closes; a request that did
        not arrive in time gets 408 and close; one that waited to be durable past the
        backstop gets 503 and close (its record may still land: at-least-once)."""
        if now < self._deadline or self._state is _State.CLOSED:
            return
        if self._state is _State.IDLE:
            self._close()
        elif self._state is _State.WAITING:  # never expected: the outbox lost track of it
            log.error("request not durable after %.0fs; answering 503", self._ctx.commit_timeout_s)
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.NOT_DURABLE)
        else:
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.REQUEST_TIMEOUT)

    @property
    def busy(self) -> bool:
        """A request has started arriving: it gets an answer before the connection closes."""
        return self._state is not _State.IDLE or bool(self._buffer)

    def close_if_idle(self) -> None:
        if not self.busy:
            self._close()

    def shut_down(self) -> None:
        """Past the drain deadline: a request still owed an answer gets 503, then close."""
        if self._state in (_State.HEAD, _State.BODY, _State.CHUNKED) and (
            self._buffer or self._route is not None
        ):
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.SHUTTING_DOWN)
        self._close()


async def enforce_timeouts(context: ServerContext) -> None:
    """Check every connection's deadline a few times a second, for as long as the listener
    lives (cancel to stop)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(TIMEOUT_RESOLUTION_S)
        now = loop.time()
        for conn in list(context.connections):
            conn.check_deadline(now)


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    """h11's message without the bytes it quotes: those can hold a token, a query string or
    part of a body, and the reason goes to the client and the log."""
    return str(exc).split(":", 1)[0]


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]


def _head_problem(head: bytes) -> str | None:
    """What h11 lets through but hookd refuses, judged on the raw head (CRLF-terminated)."""
    if head.count(b"\n") != head.count(b"\r\n"):
        return "bare LF line ending"
    if b"\r\n " in head or b"\r\n\t" in head:
        return "obs-fold header line"
    lowered = head.lower()
    lengths = lowered.count(b"\ncontent-length:")
    if lengths > 1:
        return "duplicate Content-Length"
    if lengths == 1:
        start = lowered.index(b"\ncontent-length:")
        if b"," in lowered[start : lowered.index(b"\r\n", start + 1)]:
            return "list in Content-Length"
        if b"\ntransfer-encoding:" in lowered:
            return "both Content-Length and Transfer-Encoding"
    return None
