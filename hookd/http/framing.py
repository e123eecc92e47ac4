"""Request framing, sans-IO: bytes in, events out; no sockets, no clocks, no routes.

The law of this module:

* :class:`RequestParser` is fed bytes (:meth:`~RequestParser.feed`) and asked for events
  (:meth:`~RequestParser.next_event`). Each request yields one :class:`Head`, then zero or more
  :class:`Body` pieces, then :data:`END`; the next request's head follows on the same parser.
  :data:`NEED_DATA` means nothing more can be said until more bytes arrive.
* A request whose whole Content-Length body is buffered with its head (the common case: a
  small request in one read) yields one :class:`Head` that holds it (``Head.body``), and no
  :class:`Body` or :data:`END`: the same request, in one event instead of three.
* A :class:`Malformed` event (a status and a reason that never quotes the request) is final:
  the parser is in error and answers the same event for good. Nothing after a framing error can
  be trusted, so the connection answers it and closes.
* A head is judged whole, once its blank line is in. hookd's rules judge the raw
  bytes: the head fits ``max_head_bytes`` (else 431, or 414 when the request line alone is
  too long), every line ends in CRLF, no header line is folded, Content-Length appears once,
  is not a list, and never with Transfer-Encoding. A fast path (:func:`fast_head`) takes the
  common shape, which none of those rules refuses; h11 (:func:`h11_head`) stays the parser of
  record for anything off it, after the rules. The fast path takes nothing that h11 or the
  rules refuse, and yields the same fields (``tests/unit/test_fast_path_differential.py``).
  Last, versions other than HTTP/1.0 and 1.1 get 505, and a transfer coding other than
  ``chunked`` gets 501.
* Chunked bodies are decoded here, to RFC 9112 7.1 and no looser: a chunk-size line is
  ``1*HEXDIG *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) CRLF`` (at
  most 20 digits, no trailing whitespace), chunk data ends in CRLF, trailer lines are header
  fields and are dropped. A body may use ``CHUNKS_FREE`` chunks plus one per
  ``CHUNK_MIN_AVERAGE_BYTES`` of its data (the chunk just announced included), and spend on
  framing (size lines, extensions, CRLFs, trailers, counted as they arrive, complete or not)
  ``CHUNK_FRAMING_ALLOWANCE`` plus ``CHUNK_FRAMING_BYTES`` per chunk; beyond either, 400.
* The request the events describe does not depend on how the bytes were cut into reads
  (only whether its body comes in the head's event or after it). Body pieces are yielded as
  soon as their bytes are in; how large a body may grow is the caller's to decide (it knows
  the route), as is what a request may hold while it arrives.
* Body bytes are copied at most once here: a read that falls inside a Content-Length body
  (the pieces of a large body) is yielded as the same object, and bytes taken out of the
  buffer are copied out once.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import h11

#: Longest request target accepted (414 beyond).
MAX_TARGET_BYTES = 8192
#: What a chunked body may spend on framing: this much per chunk plus a fixed allowance.
CHUNK_FRAMING_BYTES = 64
CHUNK_FRAMING_ALLOWANCE = 4096
#: How many chunks a body may use: this many, plus one per ``CHUNK_MIN_AVERAGE_BYTES`` of its
#: data. Each chunk costs an event, so this bounds the CPU a body costs by its size: a million
#: one-byte chunks are refused after about a thousand.
CHUNKS_FREE = 1024
CHUNK_MIN_AVERAGE_BYTES = 64
#: The versions served; any other well-formed one gets 505.
VERSIONS = (b"1.1", b"1.0")

Headers = list[tuple[bytes, bytes]]
#: method, target, version (``b"1.1"``), header fields with lower-cased names, in order
ParsedHead = tuple[bytes, bytes, bytes, Headers]

_HEAD_END = b"\r\n\r\n"
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VCHAR = rb"[^\x00\s]"
# The grammar h11 0.16 parses by (h11/_abnf.py), restricted to the versions served.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_FIELD_LINE = re.compile(
    rb"("
    + _TOKEN
    + rb"):[ \t]*((?:"
    + _FIELD_VCHAR
    + rb"+(?:[ \t]+"
    + _FIELD_VCHAR
    + rb"+)*)?)[ \t]*"
)
#: A whole head the grammar takes, its blank line included: a field line is a token, a colon,
#: and bytes other than NUL, CR, LF, VT and FF (spaces and tabs around a value of field-vchars,
#: as ``_FIELD_LINE`` has it).
_HEAD = re.compile(
    _REQUEST_LINE.pattern + rb"\r\n(?:" + _TOKEN + rb":[^\x00\n\r\x0b\x0c]*\r\n)*\r\n"
)
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,20})(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED_STRING
    + rb"))?)*"
)


@dataclass(slots=True)
class Head:
    """A request head, parsed and judged; the framing of its body is decided."""

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    content_length: int
    chunked: bool
    keep_alive: bool
    expects_continue: bool
    #: The whole body, when it was buffered with the head: the request is complete, and no
    #: ``Body`` or ``END`` follows. ``None``: the body follows in events.
    body: bytes | None = None


@dataclass(slots=True)
class Body:
    """Body bytes of the current request, in order, as they arrived."""

    data: bytes


@dataclass(slots=True, frozen=True)
class Malformed:
    """The request cannot be taken: answer ``status`` and close."""

    status: int
    reason: str


class _Signal(enum.Enum):
    NEED_DATA = "need-data"
    END = "end"


NEED_DATA = _Signal.NEED_DATA
END = _Signal.END
Event = Head | Body | Malformed | _Signal


class _Reading(enum.Enum):
    HEAD = "head"
    LENGTH = "length"  # a Content-Length body
    CHUNK_LINE = "chunk-line"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"  # the CRLF after chunk data
    TRAILERS = "trailers"
    ERROR = "error"


class RequestParser:
    """One connection's request stream, cut into events (see the module's law)."""

    __slots__ = (
        "_buffer",
        "_chunks",
        "_error",
        "_framing",
        "_max_head",
        "_reading",
        "_remaining",
        "_whole",
        "body_received",
    )

    def __init__(self, max_head_bytes: int) -> None:
        self._max_head = max_head_bytes
        self._buffer = bytearray()
        #: A read that arrived inside a Content-Length body while nothing else was buffered,
        #: kept as it came (it precedes ``_buffer``): a large body's pieces are then not copied
        #: into the buffer and out again, only joined once at the end.
        self._whole: bytes | None = None
        self._reading = _Reading.HEAD
        self._error: Malformed | None = None
        self._remaining = 0  # body or chunk bytes still to come
        self._chunks = 0  # of the current chunked body
        self._framing = 0  # framing bytes of the current chunked body, complete lines
        #: Body bytes of the current request yielded so far.
        self.body_received = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        whole = self._whole
        return len(self._buffer) + (len(whole) if whole is not None else 0)

    def feed(self, data: bytes) -> None:
        reading = self._reading
        # After an error bytes mean nothing; an empty read says nothing either.
        if reading is _Reading.ERROR or not data:
            return
        if (
            reading is _Reading.LENGTH
            and self._remaining
            and self._whole is None
            and not self._buffer
            and type(data) is bytes  # immutable: safe to keep without a copy
        ):
            self._whole = data  # the next _length_body takes it, whatever it holds
        else:
            self._buffer += data

    def next_event(self) -> Event:
        reading = self._reading
        if reading is _Reading.HEAD:
            return self._head()
        if reading is _Reading.LENGTH:
            return self._length_body()
        if reading is _Reading.ERROR:
            assert self._error is not None
            return self._error
        return self._chunked_body()

    # -- heads ----------------------------------------------------------------------------

    def _head(self) -> Event:
        buffer = self._buffer
        while buffer[:2] == b"\r\n":  # empty lines before a request are ignored (RFC 9112 2.2)
            del buffer[:2]
        if not buffer:
            return NEED_DATA
        end = buffer.find(_HEAD_END)
        # Judged the same however the bytes were cut: a bare LF pair first, then the size
        # (an incomplete head is over the limit once even its blank line could not save it).
        if buffer.find(b"\n\n", 0, len(buffer) if end == -1 else end + 4) != -1:
            return self._fail(400, "bare LF line ending")
        if end == -1:
            if len(buffer) > self._max_head + 3:
                return self._oversized()
            return NEED_DATA
        if end > self._max_head:
            return self._oversized()
        raw = bytes(buffer[: end + 4])
        del buffer[: end + 4]
        head = decode_head(raw)
        if type(head) is Malformed:
            return self._fail(head.status, head.reason)
        assert type(head) is Head
        self.body_received = 0
        if head.chunked:
            self._reading = _Reading.CHUNK_LINE
            self._chunks = 0
            self._framing = 0
        elif len(buffer) >= head.content_length:  # the whole body is in: the request is complete
            head.body = _take(buffer, head.content_length)
            self.body_received = head.content_length
        else:
            self._reading = _Reading.LENGTH
            self._remaining = head.content_length
        return head

    def _oversized(self) -> Malformed:
        first_line_end = self._buffer.find(b"\n")
        if first_line_end == -1 or first_line_end > MAX_TARGET_BYTES:
            return self._fail(414, "request target too long")
        return self._fail(431, "request headers too large")

    def _fail(self, status: int, reason: str) -> Malformed:
        self._error = Malformed(status, reason)
        self._reading = _Reading.ERROR
        self._buffer.clear()
        self._whole = None
        return self._error

    # -- bodies ---------------------------------------------------------------------------

    def _length_body(self) -> Event:
        remaining = self._remaining
        if not remaining:
            self._reading = _Reading.HEAD
            return END
        buffer, whole = self._buffer, self._whole
        if whole is not None:
            self._whole = None
            if len(whole) <= remaining:
                data = whole
            else:  # the body ends inside this read: what follows precedes any later read
                data = whole[:remaining]
                buffer[:0] = memoryview(whole)[remaining:]
        elif not buffer:
            return NEED_DATA
        else:
            data = _take(buffer, remaining)
        self._remaining = remaining - len(data)
        self.body_received += len(data)
        return Body(data)

    def _chunked_body(self) -> Event:
        buffer = self._buffer
        while True:
            reading = self._reading
            if reading is _Reading.CHUNK_DATA:
                if not buffer:
                    return NEED_DATA
                data = _take(buffer, self._remaining)
                take = len(data)
                self._remaining -= take
                if not self._remaining:
                    self._reading = _Reading.CHUNK_END
                self.body_received += take
                return Body(data)
            if reading is _Reading.CHUNK_END:
                if len(buffer) < 2:
                    if buffer[:1] not in (bytearray(), bytearray(b"\r")):
                        return self._fail(400, "chunk data not followed by CRLF")
                    return NEED_DATA
                if buffer[:2] != b"\r\n":
                    return self._fail(400, "chunk data not followed by CRLF")
                del buffer[:2]
                self._framing += 2
                self._reading = _Reading.CHUNK_LINE
                continue
            line_end = buffer.find(b"\r\n")
            if line_end == -1:
                return self._framing_check(len(buffer)) or NEED_DATA
            line = bytes(buffer[:line_end])
            del buffer[: line_end + 2]
            self._framing += line_end + 2
            problem = self._framing_check(0)
            if problem is not None:
                return problem
            if reading is _Reading.TRAILERS:
                if not line:
                    self._reading = _Reading.HEAD
                    return END
                if _FIELD_LINE.fullmatch(line) is None:
                    return self._fail(400, "illegal trailer line")
                continue
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                return self._fail(400, "illegal chunk-size line")
            size = int(match[1], 16)
            if size:
                self._chunks += 1
                announced = self.body_received + size  # counted as announced: cuts do not matter
                if self._chunks > CHUNKS_FREE + announced // CHUNK_MIN_AVERAGE_BYTES:
                    return self._fail(400, "too many chunks")
                self._remaining = size
                self._reading = _Reading.CHUNK_DATA
            else:
                self._reading = _Reading.TRAILERS

    def _framing_check(self, pending: int) -> Malformed | None:
        """Refuse a chunked body whose framing outgrew its data (a 20 KB chunk extension, say);
        ``pending``: bytes of framing received but not yet complete."""
        allowed = CHUNK_FRAMING_ALLOWANCE + CHUNK_FRAMING_BYTES * self._chunks
        if self._framing + pending <= allowed:
            return None
        return self._fail(400, "chunk framing too large")


def _take(buffer: bytearray, limit: int) -> bytes:
    """Up to ``limit`` bytes from the front of ``buffer``, removed from it: copied once (a
    bytearray slice and then ``bytes`` would copy them twice)."""
    if len(buffer) <= limit:
        data = bytes(buffer)
        buffer.clear()
        return data
    with memoryview(buffer) as view:
        data = view[:limit].tobytes()
    del buffer[:limit]
    return data


# -- judging a whole head ---------------------------------------------------------------------


def decode_head(raw: bytes) -> Head | Malformed:
    """A complete head (ending in a blank line) judged by hookd's rules and parsed."""
    parsed: ParsedHead | Malformed | None = fast_head(raw)  # declines what hookd's rules refuse
    if parsed is None:
        problem = head_problem(raw)
        if problem is not None:
            return Malformed(400, problem)
        parsed = h11_head(raw)
    if isinstance(parsed, Malformed):
        return parsed
    method, target, version, headers = parsed
    if version not in VERSIONS:
        return Malformed(505, "HTTP version not supported")
    content_length = 0
    chunked = False
    keep_alive = version == b"1.1"
    expects_continue = False
    for name, value in headers:
        if name == b"content-length":
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = True  # the parsers accept "chunked" alone
        elif name == b"connection":
            keep_alive &= b"close" not in _tokens(value)
        elif name == b"expect":
            expects_continue = value.lower() == b"100-continue"
    expects_continue &= version == b"1.1"
    return Head(
        method, target, version, headers, content_length, chunked, keep_alive, expects_continue
    )


def head_problem(raw: bytes) -> str | None:
    """What h11 lets through but hookd refuses, judged on the raw head (CRLF-terminated)."""
    if raw.count(b"\n") != raw.count(b"\r\n"):
        return "bare LF line ending"
    if b"\r\n " in raw or b"\r\n\t" in raw:
        return "obs-fold header line"
    lowered = raw.lower()
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


def fast_head(raw: bytes) -> ParsedHead | None:
    """The common head, parsed by h11's grammar without h11's machinery; ``None`` for anything
    off the common shape (h11 then decides). Off it: another version, a line the grammar
    refuses, Content-Length that is not plain digits, Transfer-Encoding other than one
    ``chunked``, a Host count h11 refuses, Content-Length and Transfer-Encoding together.
    Every head :func:`head_problem` refuses is off it too (a bare LF or a folded line fails
    the grammar; a repeated, listed or doubled framing header is declined), so a head taken
    here needs no other judgement.

    One match judges the whole head (a pattern per line costs a match set-up per line); the
    fields are then cut out of it by bytes operations: a line the grammar took is its name,
    a colon, and its value between optional spaces and tabs."""
    head = _HEAD.fullmatch(raw)
    if head is None:
        return None
    version = head[3]
    headers: Headers = []
    hosts = 0
    framing = 0
    for line in raw[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if not value.isdigit() or len(value) > 20:
                return None
            framing += 1
        elif name == b"transfer-encoding":
            if value.lower() != b"chunked":
                return None
            value = b"chunked"
            framing += 1
        headers.append((name, value))
    if hosts > 1 or (hosts == 0 and version == b"1.1") or framing > 1:
        return None
    return head[1], head[2], version, headers


def h11_head(raw: bytes) -> ParsedHead | Malformed:
    """The head as h11, the parser of record, reads it. A transfer coding h11 does not
    support is 501 (its hint); anything else it refuses is 400."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    try:
        request = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return Malformed(501 if exc.error_status_hint == 501 else 400, _h11_reason(exc))
    if not isinstance(request, h11.Request):
        return Malformed(400, "no request line")
    headers = [(name.lower(), value) for name, value in request.headers.raw_items()]
    return request.method, request.target, request.http_version, headers


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    """h11's message without the bytes it quotes: those can hold a token, a query string or
    part of a body, and the reason goes to the client and the log."""
    return str(exc).split(":", 1)[0]


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]
