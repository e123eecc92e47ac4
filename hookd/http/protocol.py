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

Limits (issue 12): a body is counted against ``max_in_flight_bytes`` as its bytes arrive
(``receiving_bytes``), whatever its framing, so a head that announces a large body and sends
nothing holds nothing; a chunked body is gathered into one bytearray and may use at most
``CHUNKS_FREE`` chunks plus one per ``CHUNK_MIN_AVERAGE_BYTES`` of its data. A connection is
counted from its TLS handshake until its socket is gone: after its last answer it closes, and
is aborted when that answer is not read within ``write_timeout_s``, as is one whose client
stops reading for that long.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
import weakref
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
#: How many chunks a body may use: this many, plus one per ``CHUNK_MIN_AVERAGE_BYTES`` of its
#: data; beyond, 400. Each chunk costs an h11 event (a few microseconds), so this bounds the
#: CPU a body costs by its size: a million one-byte chunks are refused after about a thousand.
CHUNKS_FREE = 1024
CHUNK_MIN_AVERAGE_BYTES = 64
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
    CLOSING = "closing"  # closed by hookd, its last answer still being written; still counted
    CLOSED = "closed"


@dataclass(eq=False)
class ServerContext:
    """What every connection of one listener shares."""

    config: ServerConfig
    routes: RouteTable
    outbox: Outbox
    metrics: Metrics
    connections: set[HttpProtocol] = field(default_factory=set)
    #: TLS connections accepted whose handshake has not finished (with when they were accepted):
    #: they count against max_connections. Weak: a failed handshake drops the protocol.
    handshaking: weakref.WeakKeyDictionary[HttpProtocol, float] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    tls: bool = False  # the listener does TLS: count connections from the handshake
    draining: bool = False
    in_flight: int = 0
    in_flight_bytes: int = 0
    receiving_bytes: int = 0  # body bytes received of requests still arriving
    #: Backstop for a request waiting to be durable; the outbox answers well before it.
    commit_timeout_s: float = 60.0

    @property
    def open_connections(self) -> int:
        """Connections counted against max_connections: established (closing ones until their
        socket is gone) and TLS handshakes in progress."""
        return len(self.connections) + len(self.handshaking)

    def budget_left(self) -> int:
        """Bytes of ``max_in_flight_bytes`` not held by bodies arriving or waiting."""
        return self.config.max_in_flight_bytes - self.in_flight_bytes - self.receiving_bytes

    def budget_spent(self) -> str | None:
        """Why new requests would get 503 here now (for ``/readyz``), or ``None``: the in-flight
        budget is spent when ``max_in_flight`` requests wait to be durable, or when less room
        is left in ``max_in_flight_bytes`` than one body of ``max_body_bytes`` or a sixteenth
        of the budget, whichever is less."""
        config = self.config
        if self.in_flight >= config.max_in_flight:
            return f"in-flight budget spent: {self.in_flight} requests waiting to be durable"
        room = min(config.max_body_bytes, config.max_in_flight_bytes // 16)
        if self.budget_left() < room:
            held = self.in_flight_bytes + self.receiving_bytes
            return f"in-flight budget spent: {held} of {config.max_in_flight_bytes} bytes held"
        return None


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
        self._body = bytearray()  # of a chunked body, as it is decoded
        self._chunked_fed = 0  # bytes given to h11 for the chunked body, framing included
        self._chunk_count = 0
        self._h11: h11.Connection | None = None  # in state CHUNKED
        self._head_request = False  # a HEAD request: its answer carries no body
        self._expects_continue = False
        self._write_paused = False
        self._write_paused_at = 0.0
        self._closing: asyncio.Transport | None = None  # closed by hookd, not yet gone
        self._delivery_id: bytes | None = None  # of the request being committed
        self._body_size = 0  # of the request being committed
        self._reserved = 0  # body bytes received, counted in the context's receiving_bytes
        self._fingerprint = 0  # of its body, for the redelivery window
        self._head_at = 0.0  # loop time the current request's head was taken: its deadline's start
        self._timing = False  # the current request is in: its answer counts toward the deadline
        if context.tls:  # counted from now: connection_made comes after the handshake
            context.handshaking[self] = self._loop.time()

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._ctx.handshaking.pop(self, None)
        if self._ctx.open_connections >= self._ctx.config.max_connections:
            self._ctx.metrics.request(_NO_ROUTE, 503)
            self._transport.write(responses.OVER_CAPACITY.close)
            self._ctx.connections.add(self)  # counted, and swept, until its socket is gone
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
        self._closing = None
        self._ctx.connections.discard(self)
        self._ctx.handshaking.pop(self, None)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.CLOSED or self._state is _State.CLOSING:
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
        self._write_paused_at = self._loop.time()
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
                    if self._reserve(len(self._buffer)):
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
        if length > ctx.budget_left():
            # A body that cannot fit now is refused before it is sent (100-continue). Only
            # bytes received are counted, never a length merely announced: heads alone hold
            # nothing. Each body is counted as it arrives (_reserve), whatever its framing.
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
            self._body = bytearray()
            self._chunked_fed = 0
            self._chunk_count = 0
        else:
            self._state = _State.BODY
            self._body_length = length

    def _reserve(self, received: int) -> bool:
        """Count ``received`` bytes of the body arriving (all of it so far) against
        ``max_in_flight_bytes``; False, after a 503 and close, when they do not fit."""
        grow = received - self._reserved
        if grow <= 0:
            return True
        ctx = self._ctx
        if grow > ctx.budget_left():
            assert self._route is not None
            self._respond(self._route.path, responses.OVERLOADED_CLOSE)
            return False
        ctx.receiving_bytes += grow
        self._reserved = received
        return True

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
                size = len(self._body) + len(event.data)
                if size > route.max_body_bytes:
                    self._respond(route.path, responses.BODY_TOO_LARGE)
                    return False
                if self._chunk_count > CHUNKS_FREE + size // CHUNK_MIN_AVERAGE_BYTES:
                    self._respond(route.path, responses.malformed("too many chunks"))
                    return False
                if not self._reserve(size):
                    return False
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                rest = conn.trailing_data[0]  # the next pipelined request, if any
                if self._framing_exceeded(len(rest)):
                    return False
                self._buffer += rest
                self._h11 = None
                body = bytes(self._body)
                self._body = bytearray()
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
        framing = self._chunked_fed - unread - len(self._body)
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
        if ctx.in_flight >= ctx.config.max_in_flight or size > ctx.budget_left():
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
        elif isinstance(error, PublishError):  # the reason is logged, never sent
            self._respond(route.path, responses.publish_failed(str(error)))
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
        """Close once the answers written are sent. The connection stays counted until its
        socket is gone (``connection_lost``); one whose client does not read them within
        ``write_timeout_s`` is aborted by ``check_deadline``."""
        self._release_reservation()
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        self._closing = transport
        self._state = _State.CLOSING
        self._deadline = self._loop.time() + self._ctx.config.write_timeout_s
        transport.close()

    def _abort(self) -> None:
        """Drop the connection now, unsent answers and all: the socket goes at once."""
        self._release_reservation()
        transport = self._transport or self._closing
        self._transport = self._closing = None
        if transport is None:  # nothing left to wait for
            self._state = _State.CLOSED
            self._ctx.connections.discard(self)
            return
        self._state = _State.CLOSING  # counted until connection_lost
        transport.abort()

    # -- timeouts and draining ------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Past the deadline: an idle keep-alive connection just closes; a request that did
        not arrive in time gets 408 and close; one that waited to be durable past the
        backstop gets 503 and close (its record may still land: at-least-once)."""
        if self._write_paused and now >= self._write_paused_at + self._ctx.config.write_timeout_s:
            if self._transport is not None or self._closing is not None:
                log.info("client not reading its answers; aborting the connection")
            self._abort()
            return
        if now < self._deadline or self._state is _State.CLOSED:
            return
        if self._state is _State.CLOSING:  # its last answer was not read in time
            self._abort()
        elif self._state is _State.IDLE:
            self._close()
        elif self._state is _State.WAITING:  # never expected: the outbox lost track of it
            log.error("request not durable after %.0fs; answering 503", self._ctx.commit_timeout_s)
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.NOT_DURABLE)
        else:
            self._respond(self._route.path if self._route else _NO_ROUTE, responses.REQUEST_TIMEOUT)

    @property
    def busy(self) -> bool:
        """A request has started arriving: it gets an answer before the connection closes."""
        if self._state is _State.CLOSING or self._state is _State.CLOSED:
            return False
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
    lives (cancel to stop). A TLS handshake is aborted by the transport after
    ``header_timeout_s`` (``ssl_handshake_timeout``) without telling the protocol; its count
    is dropped a second later, if a failed handshake's protocol was not freed before."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(TIMEOUT_RESOLUTION_S)
        now = loop.time()
        for conn in list(context.connections):
            conn.check_deadline(now)
        if context.handshaking:
            expired = now - context.config.header_timeout_s - 1.0
            for conn, accepted_at in list(context.handshaking.items()):
                if accepted_at < expired:
                    context.handshaking.pop(conn, None)


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
