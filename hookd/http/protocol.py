"""One connection: transport, flow control and deadlines around a sans-IO parser.

What a byte means is :mod:`hookd.http.framing`'s to say; what a complete request gets is
:mod:`hookd.http.intake`'s; what the listener may hold is :mod:`hookd.http.admission`'s.
This module moves bytes between them and the socket, and keeps time.

One request is handled at a time. While it waits to be durable, reading is paused, so
pipelined requests stay in the parser's buffer and are answered in order. A request lives in
one :class:`_Exchange` from its head to its answer, then is dropped. The connection moves
between states only through :meth:`HttpProtocol._enter`, which also sets the state's deadline.

Timeouts are deadlines on the connection, enforced by one task per listener
(:func:`enforce_timeouts`), so the hot path sets a float instead of scheduling timers. The
answer to a request is due within its route's ``respond_within_s`` after its head arrived (a
margin under the provider's delivery timeout): the outbox is given that instant and stops
waiting for Kafka in time, and each answer's share of it is observed in
``hookd_answer_deadline_used_ratio``.

Limits (issue 12): a body is counted against ``max_in_flight_bytes`` as its bytes arrive
(``receiving_bytes``), whatever its framing, so a head that announces a large body and sends
nothing holds nothing; a chunked body is bounded in chunks and framing by the parser. A
connection is counted from its TLS handshake until its socket is gone: after its last answer it
closes, and is aborted when that answer is not read within ``write_timeout_s``, as is one whose
client stops reading for that long.
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

from hookd.config import ServerConfig
from hookd.http import responses
from hookd.http.admission import Admission
from hookd.http.framing import (
    END,
    MAX_TARGET_BYTES,
    NEED_DATA,
    Body,
    Head,
    Malformed,
    RequestParser,
)
from hookd.http.intake import Publish, intake
from hookd.http.responses import Canned
from hookd.logs import request_path
from hookd.metrics import Metrics
from hookd.net import proxy_protocol
from hookd.net.client_address import client_address
from hookd.net.networks import NetworkSet, canonical
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import PublishError
from hookd.rejects import Rejects
from hookd.routing import Route, RouteTable, network_set
from hookd.verify import Headers, Request

log = logging.getLogger("hookd.http")

#: How often deadlines are checked; timeouts fire up to this much late.
TIMEOUT_RESOLUTION_S = 0.25
_HEAD_END = b"\r\n\r\n"
_NO_ROUTE = "-"


class _State(enum.IntEnum):
    """Where a connection is; an int, so that it indexes the deadlines without hashing."""

    FRESH = 0  # connected, no byte yet
    IDLE = 1  # keep-alive, no byte of the next request yet
    HEAD = 2  # receiving a request head
    BODY = 3  # receiving a body, either framing
    WAITING = 4  # the request is in; waiting for it to be durable
    CLOSING = 5  # closed by hookd, its last answer still being written; still counted
    CLOSED = 6


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
    #: Backstop for a request waiting to be durable; the outbox answers well before it.
    commit_timeout_s: float = 60.0
    #: ``[kafka] rejects_topic``: refusals on known routes are recorded there (hookd.rejects).
    rejects: Rejects | None = None
    admission: Admission = field(init=False)
    #: ``trusted_proxies``: peers whose Forwarded / X-Forwarded-For name the client.
    trusted: NetworkSet | None = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.config.max_in_flight, self.config.max_in_flight_bytes)
        self.trusted = network_set(self.config.trusted_proxies or None)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def in_flight_bytes(self) -> int:
        return self.admission.in_flight_bytes

    @property
    def receiving_bytes(self) -> int:
        return self.admission.receiving_bytes

    @property
    def open_connections(self) -> int:
        """Connections counted against max_connections: established (closing ones until their
        socket is gone) and TLS handshakes in progress."""
        return len(self.connections) + len(self.handshaking)

    def budget_spent(self) -> str | None:
        """Why new requests would get 503 here now (for ``/readyz``), or ``None``."""
        return self.admission.spent(self.config.max_body_bytes)


@dataclass(slots=True, eq=False)
class _Exchange:
    """One request, from its head to its answer."""

    head: Head
    head_at: float  # loop time the head was taken: the start of the answer's deadline
    client: str  # the client's address (hookd.net.client_address): record, logs, allow_from
    route: Route | None = None  # once routed and taken
    parts: list[bytes] = field(default_factory=list)  # the body as it arrived
    reserved: int = 0  # body bytes counted in the listener's receiving_bytes
    committed: int = 0  # body bytes counted in flight, while waiting to be durable
    publish: Publish | None = None  # what waits to be durable
    timing: bool = False  # the request is in: its answer counts toward the deadline

    @property
    def path(self) -> str:
        return self.route.path if self.route is not None else _NO_ROUTE


class HttpProtocol(asyncio.Protocol):
    """The public listener's connections."""

    def __init__(self, context: ServerContext) -> None:
        self._ctx = context
        self._admission = context.admission
        config = context.config
        self._timeouts = (  # seconds each state may last, indexed by _State
            config.header_timeout_s,  # FRESH
            config.idle_timeout_s,  # IDLE
            config.header_timeout_s,  # HEAD
            config.body_timeout_s,  # BODY
            context.commit_timeout_s,  # WAITING
            config.write_timeout_s,  # CLOSING
            float("inf"),  # CLOSED
        )
        self._loop = asyncio.get_running_loop()
        self._parser = RequestParser(config.max_header_bytes)
        self._transport: asyncio.Transport | None = None
        self._closing: asyncio.Transport | None = None  # closed by hookd, not yet gone
        self._source_ip = ""  # the peer's address, or the one its PROXY header named
        #: ``proxy_protocol``: the bytes of the PROXY header received so far; ``None`` once it
        #: is taken (or without the option).
        self._proxy_header: bytes | None = b"" if config.proxy_protocol else None
        self._state = _State.FRESH
        self._deadline = 0.0
        self._exchange: _Exchange | None = None
        self._keep_alive = True
        self._expects_continue = False
        self._write_paused = False
        self._write_paused_at = 0.0
        if context.tls:  # counted from now: connection_made comes after the handshake
            context.handshaking[self] = self._loop.time()

    def _enter(self, state: _State) -> None:
        """The one place the connection changes state; the state's deadline starts now."""
        self._state = state
        self._deadline = self._loop.time() + self._timeouts[state]

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        ctx = self._ctx
        ctx.handshaking.pop(self, None)
        if ctx.open_connections >= ctx.config.max_connections:
            ctx.metrics.request(_NO_ROUTE, 503)
            self._transport.write(responses.OVER_CAPACITY.closing_bytes)
            ctx.connections.add(self)  # counted, and swept, until its socket is gone
            self._close()
            return
        ctx.connections.add(self)
        peer = self._transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else ""
        self._source_ip = canonical(address) if ":" in address else address  # ::ffff:a.b.c.d
        self._enter(_State.FRESH)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_reservation()
        self._state = _State.CLOSED
        self._transport = None
        self._closing = None
        self._ctx.connections.discard(self)
        self._ctx.handshaking.pop(self, None)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state is _State.CLOSED or state is _State.CLOSING:
            return
        if self._proxy_header is not None:
            data = self._take_proxy_header(data)
            if not data:
                return
        if state is _State.IDLE or state is _State.FRESH:
            self._enter(_State.HEAD)
        self._parser.feed(data)
        self._advance()

    def _take_proxy_header(self, data: bytes) -> bytes:
        """``proxy_protocol``: the connection starts with a PROXY header, all of it within
        ``header_timeout_s`` (the FRESH deadline). Keep its bytes until it is complete; then its
        address is the peer's, and what follows is HTTP (returned). A connection without a
        valid header gets 400 and is closed."""
        buffered = self._proxy_header + data if self._proxy_header else data
        result = proxy_protocol.parse(buffered)
        if result is proxy_protocol.NEED_MORE:
            self._proxy_header = buffered
            return b""
        self._proxy_header = None
        if isinstance(result, proxy_protocol.Malformed):
            self._ctx.metrics.client_refused(_NO_ROUTE, "proxy_protocol")
            self._respond(_NO_ROUTE, responses.malformed(result.reason))
            return b""
        assert isinstance(result, proxy_protocol.ProxyHeader)
        if result.source is not None:  # LOCAL / UNKNOWN: the peer stands
            self._source_ip = canonical(result.source[0])
        self._enter(_State.FRESH)  # the request head gets its own header_timeout_s
        return buffered[result.consumed :]

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

    # -- events from the parser -----------------------------------------------------------

    def _advance(self) -> None:
        """Act on the parser's events until it needs bytes, or the connection must not go on:
        a request waits to be durable, the client is not reading, or the connection closed."""
        parser = self._parser
        while self._transport is not None and not self._write_paused:
            state = self._state
            if state is not _State.HEAD and state is not _State.BODY:
                return  # IDLE with nothing buffered, WAITING, CLOSING or CLOSED
            event = parser.next_event()
            kind = type(event)
            if kind is Body:
                self._on_body(cast(Body, event).data)
            elif event is NEED_DATA:
                if state is _State.BODY:
                    self._await_body()
                return
            elif event is END:
                self._on_request()
            elif kind is Head:
                self._on_head(cast(Head, event))
            else:
                malformed = cast(Malformed, event)
                exchange = self._exchange
                answer = responses.refusal(malformed.status, malformed.reason)
                if exchange is not None and exchange.route is not None:
                    self._refuse(exchange.route, answer)  # after routing
                else:
                    self._respond(_NO_ROUTE, answer)

    def _on_head(self, head: Head) -> None:
        """Route the request and decide, before reading its body, whether to take it."""
        trusted = self._ctx.trusted
        client = (
            self._source_ip
            if trusted is None
            else client_address(self._source_ip, head.headers, trusted)
        )
        exchange = self._exchange = _Exchange(head, self._loop.time(), client)
        if len(head.target) > MAX_TARGET_BYTES:
            self._respond(_NO_ROUTE, responses.URI_TOO_LONG)
            return
        route = self._ctx.routes.lookup(head.target)
        if route is None:
            self._respond(_NO_ROUTE, responses.NOT_FOUND)
            return
        if route.allow is not None and client not in route.allow:
            self._ctx.metrics.client_refused(route.path, "allow_from")
            self._refuse(route, responses.FORBIDDEN)
            return
        if head.method != b"POST":
            self._respond(route.path, responses.METHOD_NOT_ALLOWED)
            return
        if self._ctx.draining:
            self._respond(route.path, responses.SHUTTING_DOWN)
            return
        if head.content_length > route.max_body_bytes:
            self._refuse(route, responses.BODY_TOO_LARGE)
            return
        if head.content_length > self._admission.budget_left():
            # A body that cannot fit now is refused before it is sent (100-continue). Only
            # bytes received are counted, never a length merely announced: heads alone hold
            # nothing. Each body is counted as it arrives (_await_body), whatever its framing.
            self._respond(route.path, responses.OVERLOADED_CLOSE)
            return
        exchange.route = route
        self._keep_alive = head.keep_alive
        self._expects_continue = head.expects_continue
        if head.body is not None:  # the body came with the head: the request is complete
            exchange.parts.append(head.body)
            self._on_request()
            return
        self._enter(_State.BODY)

    def _on_body(self, data: bytes) -> None:
        """Keep a piece of the body; a chunked body learns its size only as it arrives, so
        the route's limit is checked here too (a Content-Length one was checked at its head)."""
        exchange = self._exchange
        assert exchange is not None and exchange.route is not None
        if self._parser.body_received > exchange.route.max_body_bytes:
            self._refuse(exchange.route, responses.BODY_TOO_LARGE)
            return
        exchange.parts.append(data)

    def _await_body(self) -> None:
        """The body is partly in: count what arrived against ``max_in_flight_bytes`` (503 and
        close when it does not fit), and ask for the rest if the client waits to be asked."""
        exchange = self._exchange
        assert exchange is not None and exchange.route is not None
        grow = self._parser.body_received - exchange.reserved
        if grow > 0:
            if not self._admission.reserve(grow):
                self._respond(exchange.route.path, responses.OVERLOADED_CLOSE)
                return
            exchange.reserved += grow
        if self._expects_continue:  # the client waits for this before sending the body
            self._expects_continue = False
            self._write(responses.CONTINUE)

    # -- a complete request ---------------------------------------------------------------

    def _on_request(self) -> None:
        """The whole request is in: decide what it gets, then make it durable or answer."""
        self._release_reservation()
        exchange = self._exchange
        assert exchange is not None and exchange.route is not None
        route, head, parts = exchange.route, exchange.head, exchange.parts
        exchange.timing = True
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(head.method, head.target, Headers(head.headers), body)
        try:
            verdict = intake(route, request, exchange.client, time.time_ns(), self._loop.time())
        except Exception:
            self._internal_error(route)
            return
        if not isinstance(verdict, Publish):
            if verdict.verify_failed is not None:
                self._ctx.metrics.verify_failed(route.path, verdict.verify_failed)
                self._refuse(route, verdict.answer, complete=True, detail=verdict.detail)
                return
            if verdict.duplicate:
                self._ctx.metrics.dedup_hit(route.path)
            self._respond(route.path, verdict.answer)
            return
        if self._ctx.rejects is not None:
            self._ctx.rejects.accepted(route, head)
        try:
            self._commit(exchange, route, verdict, len(body))
        except Exception:
            self._internal_error(route)

    def _commit(self, exchange: _Exchange, route: Route, publish: Publish, size: int) -> None:
        """Hand the record to the outbox and wait, reading paused, for it to be durable."""
        if not self._admission.commit(size):
            self._respond(route.path, responses.OVERLOADED)
            return
        # The deadline counts from the request head: the provider's clock started earlier
        # still, which the route's default respond_within_s leaves a margin for.
        answer_by = exchange.head_at + route.respond_within_s
        try:
            future = self._ctx.outbox.commit(publish.record, route.ack_mode, answer_by)
        except Exception:
            self._admission.release(size)
            raise
        exchange.publish = publish
        if future.done():  # refused at once: broker known down, shutting down
            self._admission.release(size)
            self._answer_commit(exchange, future)
            return
        exchange.committed = size
        self._enter(_State.WAITING)
        if self._transport is not None:
            self._transport.pause_reading()
        future.add_done_callback(lambda done: self._on_committed(exchange, done))

    def _on_committed(self, exchange: _Exchange, future: asyncio.Future[None]) -> None:
        """The awaited commit finished: answer, then go on with pipelined requests."""
        self._admission.release(exchange.committed)
        self._answer_commit(exchange, future)
        if self._transport is not None and not self._write_paused:
            self._transport.resume_reading()
            self._advance()

    def _answer_commit(self, exchange: _Exchange, future: asyncio.Future[None]) -> None:
        route, publish = exchange.route, exchange.publish
        assert route is not None and publish is not None
        error = future.exception()
        if error is None and route.dedup is not None and publish.delivery_id is not None:
            route.dedup.add(publish.delivery_id, publish.fingerprint, self._loop.time())
        if self._transport is None or exchange is not self._exchange:
            return  # the client left, or was answered by the backstop; the record's fate is set
        if error is None:
            self._respond(route.path, responses.ACCEPTED)
        elif isinstance(error, PublishError):  # the reason is logged, never sent
            self._respond(route.path, responses.publish_failed(str(error)))
        else:
            log.error("commit failed unexpectedly", exc_info=error)
            self._internal_error(route)

    # -- answers --------------------------------------------------------------------------

    def _refuse(
        self, route: Route, answer: Canned, *, complete: bool = False, detail: str | None = None
    ) -> None:
        """Answer a refusal on a known route (401, 403, 413, 400); with a rejects topic, also
        record the request there first (rate-limited, never waited for: hookd.rejects)."""
        rejects, exchange = self._ctx.rejects, self._exchange
        if rejects is not None and exchange is not None:
            rejects.refused(
                route,
                answer.status,
                answer.reason,
                exchange.head,
                exchange.parts,
                exchange.client,
                received_at_ms=time.time_ns() // 1_000_000,
                complete=complete,
                detail=detail,
            )
        self._respond(route.path, answer)

    def _respond(self, route: str, answer: Canned) -> None:
        """Send a complete response; then close, or get ready for the next request."""
        ctx = self._ctx
        ctx.metrics.request(route, answer.status)
        self._release_reservation()
        exchange = self._exchange
        self._exchange = None
        if exchange is not None and exchange.timing:
            # how much of the route's respond_within_s this answer used
            assert exchange.route is not None
            used = (self._loop.time() - exchange.head_at) / exchange.route.respond_within_s
            ctx.metrics.deadline_used(route, used)
        if answer.status >= 400:
            self._log_refusal(route, answer, exchange)
        elif ctx.config.access_log:
            log.info(
                "answered",
                extra={
                    "route": route,
                    "status": answer.status,
                    "source_ip": exchange.client if exchange is not None else self._source_ip,
                },
            )
        closing = answer.ends_connection or not self._keep_alive or ctx.draining
        data = answer.closing_bytes if closing else answer.keeping_bytes
        if exchange is not None and exchange.head.method == b"HEAD":
            data = data[: data.index(_HEAD_END) + len(_HEAD_END)]  # no content (RFC 9110 9.3.2)
        self._write(data)
        if closing:
            self._close()
            return
        self._expects_continue = False
        self._enter(_State.HEAD if self._parser.buffered else _State.IDLE)

    def _log_refusal(self, route: str, answer: Canned, exchange: _Exchange | None) -> None:
        """One line per refused request, with an id to find it by (500s log their own); a 404
        names the path asked for (sanitised, no query), to find a mistyped provider URL."""
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
                "path": request_path(exchange.head.target)
                if answer.status == 404 and exchange is not None
                else None,
                "source_ip": exchange.client if exchange is not None else self._source_ip,
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
        exchange = self._exchange
        if exchange is not None and exchange.reserved:
            self._admission.unreserve(exchange.reserved)
            exchange.reserved = 0

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
        self._enter(_State.CLOSING)
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
        state = self._state
        if now < self._deadline or state is _State.CLOSED:
            return
        path = self._exchange.path if self._exchange is not None else _NO_ROUTE
        if state is _State.CLOSING:  # its last answer was not read in time
            self._abort()
        elif state is _State.IDLE or state is _State.FRESH:
            self._close()
        elif state is _State.WAITING:  # never expected: the outbox lost track of it
            log.error("request not durable after %.0fs; answering 503", self._ctx.commit_timeout_s)
            self._respond(path, responses.NOT_DURABLE)
        else:
            self._respond(path, responses.REQUEST_TIMEOUT)

    @property
    def busy(self) -> bool:
        """A request has started arriving: it gets an answer before the connection closes."""
        state = self._state
        if state is _State.CLOSING or state is _State.CLOSED:
            return False
        return (state is not _State.IDLE and state is not _State.FRESH) or bool(
            self._parser.buffered
        )

    def close_if_idle(self) -> None:
        if not self.busy:
            self._close()

    def shut_down(self) -> None:
        """Past the drain deadline: a request still owed an answer gets 503, then close."""
        if self._state in (_State.HEAD, _State.BODY) and (
            self._parser.buffered or self._exchange is not None
        ):
            path = self._exchange.path if self._exchange is not None else _NO_ROUTE
            self._respond(path, responses.SHUTTING_DOWN)
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
