"""Hostile HTTP against ``HttpProtocol``, in-process: no sockets, a fake transport, a real route
table, real metrics, and a stand-in for the durable side whose outcome hypothesis chooses.

Every scenario runs on one event loop whose clock the test moves by hand, so the protocol's
``call_later`` timers (header, body and idle timeouts) fire exactly when a scenario stalls.
The invariants checked after every scenario:

1. ``data_received`` / ``eof_received`` / ``connection_lost`` and the loop callbacks never raise;
2. everything written parses, strictly, as a sequence of HTTP/1.1 responses whose statuses are
   all in ``ALLOWED`` (never a 500 for client input);
3. a refusal (400/404/405/408/413/414/431) carries ``connection: close``, is the last response,
   and the protocol closed the transport; nothing is written after the protocol closes;
4. no leak: after ``connection_lost`` the connection set is empty, no timer is pending, and
   ``in_flight`` is back to 0 once every publish future is done.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.config import Config, validate
from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.metrics import Metrics
from hookd.publish.publisher import PublishError
from hookd.record import Record
from hookd.routing import RouteTable, build_routes

TOKEN = "fuzz-token-s3cret"
SEGMENT_SECRET = "fuzz-segment-s3cret"
#: Per-route body limit of /segment (the server-wide one applies to /token).
SEGMENT_MAX_BODY = 512

ALLOWED = frozenset({100, 200, 400, 401, 404, 405, 408, 413, 414, 431, 503})
REFUSALS = frozenset({400, 404, 405, 408, 413, 414, 431})

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_config(**server: Any) -> Config:
    routes = [
        {"path": "/token", "topic": "token-events", "verify": "token", "secrets": [TOKEN]},
        {
            "path": "/segment",
            "topic": "segment-events",
            "verify": "segment",
            "secrets": [SEGMENT_SECRET],
            "max_body_bytes": SEGMENT_MAX_BODY,
        },
    ]
    return validate({"server": server, "routes": routes}, env={})


DEFAULT = make_config()
#: Small limits, so that fuzzed input reaches 413 and 431 often.
SMALL = make_config(max_body_bytes=1024, max_header_bytes=1024)
ROUTES: dict[int, RouteTable] = {id(DEFAULT): build_routes(DEFAULT), id(SMALL): build_routes(SMALL)}


# -- the loop, the transport, the stand-in for the broker side -----------------------------


class ManualClockLoop(asyncio.SelectorEventLoop):
    """A loop whose ``time()`` moves only when a test says so: timers fire deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def time(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def loop() -> Iterator[ManualClockLoop]:
    loop = ManualClockLoop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class FakeTransport(asyncio.Transport):
    """Records what the protocol does to it; delivers ``connection_lost`` like asyncio does."""

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
        if not self._lost:
            self._lost = True
            assert self.protocol is not None
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


#: What happens to one publish: settled at once or on a later loop turn, ok or PublishError;
#: "held" stays pending until the scenario is over (a broker that does not answer).
OUTCOMES = ("ok", "fail", "ok_later", "fail_later", "held")


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class StandInPublisher:
    """Only the broker side's contract: a future per record, resolved with None or failed with
    ``PublishError``. ``commit`` is the same contract under the outbox's name."""

    def __init__(self, loop: asyncio.AbstractEventLoop, outcomes: list[str]) -> None:
        self._loop = loop
        self._outcomes = outcomes or ["ok"]
        self.records: list[Record] = []
        self.held: list[asyncio.Future[None]] = []

    def publish(self, record: Record) -> asyncio.Future[None]:
        outcome = self._outcomes[len(self.records) % len(self._outcomes)]
        self.records.append(record)
        future: asyncio.Future[None] = self._loop.create_future()
        error = PublishError("broker unavailable") if "fail" in outcome else None
        if outcome in ("ok", "fail"):
            _settle(future, error)
        elif outcome == "held":
            self.held.append(future)
        else:
            self._loop.call_soon(_settle, future, error)
        return future

    def commit(self, record: Record, mode: object = None) -> asyncio.Future[None]:
        return self.publish(record)

    def expected_statuses(self) -> list[int]:
        """The answer each published record should get, in order (for non-held outcomes)."""
        return [
            503 if "fail" in self._outcomes[i % len(self._outcomes)] else 200
            for i in range(len(self.records))
        ]


# -- driving one connection ------------------------------------------------------------------


@dataclass(frozen=True)
class Stall:
    """The client sends nothing for this long (the test's clock moves on)."""

    seconds: float


EOF = None
Action = bytes | Stall | None


@dataclass
class Outcome:
    transport: FakeTransport
    protocol: HttpProtocol
    context: ServerContext
    publisher: StandInPublisher
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Timers still pending on the loop once the connection is gone.
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


async def _turns(n: int = 4) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _connection(
    loop: ManualClockLoop, config: Config, actions: list[Action], outcomes: list[str], ending: str
) -> Outcome:
    publisher = StandInPublisher(loop, outcomes)
    context = ServerContext(config.server, ROUTES[id(config)], cast(Any, publisher), Metrics())
    transport = FakeTransport(loop)
    protocol = HttpProtocol(context)
    transport.protocol = protocol
    protocol.connection_made(transport)
    inbox: deque[bytes | None] = deque()

    def wait(seconds: float) -> None:
        """The clock moves on: call_later timers fire on the next turns; a protocol that keeps
        deadlines instead is checked the way its listener's sweeper task would."""
        loop.now += seconds
        check_deadline = getattr(protocol, "check_deadline", None)
        if check_deadline is not None:
            check_deadline(loop.now)

    async def pump() -> None:
        """Deliver what the client sent, honouring pause_reading, until nothing moves."""
        quiet = 0
        while quiet < 2:
            moved = False
            while inbox and not transport.paused and not transport.is_closing():
                item = inbox.popleft()
                moved = True
                if item is EOF:
                    if not protocol.eof_received():
                        transport.close_after_eof()
                else:
                    protocol.data_received(item)
            await _turns()
            quiet = 0 if moved else quiet + 1

    for action in actions:
        if isinstance(action, Stall):
            wait(action.seconds)
        else:
            inbox.append(action)
        await pump()
    if ending == "eof":
        inbox.append(EOF)
        await pump()
    elif ending == "idle":
        wait(config.server.idle_timeout_s + config.server.body_timeout_s + 1)
        await pump()
    if not transport.is_closing():
        transport.reset()
    await _turns()
    for future in publisher.held:
        _settle(future, None)
    await _turns()
    timers = [timer for timer in loop._scheduled if not timer.cancelled()]  # type: ignore[attr-defined]
    return Outcome(transport, protocol, context, publisher, list(loop.errors), timers)


def run_connection(
    loop: ManualClockLoop,
    actions: list[Action],
    outcomes: list[str] | None = None,
    *,
    config: Config = DEFAULT,
    ending: str = "eof",
) -> Outcome:
    loop.errors.clear()
    return loop.run_until_complete(_connection(loop, config, actions, outcomes or ["ok"], ending))


# -- a strict parser for what the protocol wrote --------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e]+")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)"
)


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get(b"connection") == b"close"


def parse_answers(stream: bytes, *, head_requests: bool = False) -> list[Answer]:
    """Split ``stream`` into responses or fail. With ``head_requests``, a response may lack the
    body its content-length announces (the answer to a HEAD request)."""
    answers: list[Answer] = []
    pos = 0
    while pos < len(stream):
        end = stream.find(b"\r\n\r\n", pos)
        assert end != -1, f"incomplete response head: {stream[pos : pos + 200]!r}"
        status_line, *header_lines = bytes(stream[pos:end]).split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        assert match, f"bad status line {status_line!r}"
        status = int(match[1])
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            header = _HEADER_LINE.fullmatch(line)
            assert header, f"bad header line {line!r}"
            name = header[1].lower()
            assert name not in headers, f"duplicate header {name!r}"
            headers[name] = header[2]
        pos = end + 4
        if status < 200:
            assert status == 100 and not headers, (status, headers)
            answers.append(Answer(status, headers, b""))
            continue
        length = headers.get(b"content-length", b"")
        assert length.isdigit(), f"no content-length in {headers}"
        size = int(length)
        rest = stream[pos:]
        if head_requests and size and (not rest or rest.startswith(b"HTTP/1.1 ")):
            body = b""
        else:
            body = bytes(stream[pos : pos + size])
            assert len(body) == size, "truncated response body"
            pos += size
            assert isinstance(orjson.loads(body), dict), body
        answers.append(Answer(status, headers, body))
    return answers


def check_invariants(outcome: Outcome, sent: bytes) -> list[Answer]:
    """Properties 1-4; returns the final (non-1xx) answers."""
    transport, context = outcome.transport, outcome.context
    assert not outcome.errors, outcome.errors
    answers = parse_answers(bytes(transport.written), head_requests=b"HEAD" in sent)
    for i, answer in enumerate(answers):
        assert answer.status in ALLOWED, answer
        if answer.status in REFUSALS:
            assert answer.closes, answer
        if answer.status == 503:
            assert answer.headers.get(b"retry-after", b"").isdigit(), answer
        if answer.status == 405:
            assert answer.headers.get(b"allow") == b"POST", answer
        if answer.closes:
            assert i == len(answers) - 1, f"answer after a closing {answer.status}: {answers}"
            assert transport.closed_by_protocol, answer
    assert transport.writes_after_close == 0
    finals = [answer for answer in answers if answer.status >= 200]
    counted: Counter[int] = Counter()
    for (_, status), n in context.metrics.requests.items():
        counted[status] += n
    assert counted == Counter(answer.status for answer in finals), (counted, finals)
    # no leak
    assert not context.connections
    assert getattr(outcome.protocol, "_timer", None) is None
    assert not outcome.timers, outcome.timers
    assert all(future.done() for future in outcome.publisher.held)
    assert context.in_flight == 0
    assert context.in_flight_bytes == 0
    assert context.receiving_bytes == 0
    return finals


# -- generating requests ---------------------------------------------------------------------

HEADER_NAMES = ("User-Agent", "Accept", "X-Request-Id", "X-Forwarded-For", "Content-Type")
_VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
header_values = st.text(_VALUE_CHARS, max_size=30).map(str.encode)
bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(
        st.text(max_size=8), st.integers(-(2**53), 2**53) | st.text(max_size=20), max_size=5
    ).map(orjson.dumps),
)


@dataclass(frozen=True)
class Req:
    raw: bytes
    body: bytes
    #: 200/503 by the publish outcome, or the status it must get without publishing.
    expect: int | None


def _case(draw: st.DrawFn, name: str) -> bytes:
    style = draw(st.sampled_from((str.lower, str.upper, str.title, str)))
    return style(name).encode()


def _chunked(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=4))))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = bytearray()
    for piece in pieces:
        if not piece:
            continue
        size = f"{len(piece):x}"
        size = draw(st.sampled_from((size, size.upper(), "00" + size)))
        ext = draw(st.sampled_from(("", ";a=b", ';name="q v"', " ")))
        out += f"{size}{ext}\r\n".encode() + piece + b"\r\n"
    out += b"0\r\n"
    if draw(st.booleans()):
        out += b"X-Trailer: " + draw(header_values) + b"\r\n"
    return bytes(out + b"\r\n")


@st.composite
def requests(draw: st.DrawFn, *, valid: bool = True, last: bool = False) -> Req:
    """A request; with ``valid``, well-formed and aimed at a route (mostly correctly signed)."""
    routes = ROUTES[id(DEFAULT)]
    method, path = b"POST", draw(st.sampled_from(("/token", "/segment")))
    if not valid:
        method = draw(st.sampled_from((b"POST", b"POST", b"GET", b"PUT", b"HEAD", b"OPTIONS")))
        path = draw(st.sampled_from((path, path, "/nope", "/token/x", "/" + "a" * 9000)))
    target = (path + draw(st.sampled_from(("", "?a=1", "?x=%20y&z")))).encode()
    body = draw(bodies)
    route = routes.lookup(target)
    signed = route is not None and draw(st.sampled_from((True, True, True, False)))
    auth: list[tuple[bytes, bytes]]
    if signed:
        assert route is not None
        auth = [(k.encode(), v.encode()) for k, v in route.verifier.sign(body, target, 0.0)]
    else:
        auth = draw(
            st.sampled_from(([], [(b"Authorization", b"Bearer nope")], [(b"X-Signature", b"00")]))
        )
    headers = [(b"Host", b"hookd.test"), *auth]
    chunked = draw(st.booleans())
    if chunked:
        headers.append((_case(draw, "Transfer-Encoding"), b"chunked"))
        payload = _chunked(draw, body)
    else:
        if body or draw(st.booleans()):
            headers.append((_case(draw, "Content-Length"), str(len(body)).encode()))
        payload = body
    if draw(st.booleans()):
        headers.append((_case(draw, "Expect"), b"100-continue"))
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=3)):
        headers.append((_case(draw, name), draw(header_values)))
    if last and draw(st.booleans()):
        headers.append((b"Connection", b"close"))
    headers = draw(st.permutations(headers))
    head = method + b" " + target + b" HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    raw = head + b"\r\n" + payload
    expect: int | None = None
    if route is None:
        expect = 404
    elif method != b"POST":
        expect = 405
    elif len(body) > route.max_body_bytes:
        expect = 413
    elif not signed:
        expect = 401
    return Req(raw, body, expect)


@st.composite
def pipelines(draw: st.DrawFn, *, valid: bool = True) -> list[Req]:
    n = draw(st.integers(1, 4))
    return [draw(requests(valid=valid, last=i == n - 1)) for i in range(n)]


@st.composite
def pieces(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=10))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]


NASTY = (
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b":",
    b",",
    b";",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 7\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 2, 2\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Expect: 100-continue\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"Connection: close\r\n",
    b"POST /token HTTP/1.1\r\n",
    b"HTTP/1.0",
    b"ffffffffffffffffffff\r\n",
    b"5;" + b"e" * 3000 + b"\r\n",
    b"A" * 1200,
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate")))
        if op == "flip" and at < len(buf):
            buf[at] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[at:at] = draw(st.sampled_from(NASTY) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del buf[at:]
    return bytes(buf)


@st.composite
def actions(draw: st.DrawFn, data: bytes) -> list[Action]:
    out: list[Action] = []
    for piece in draw(pieces(data)):
        out.append(piece)
        if draw(st.integers(0, 9)) == 0:
            out.append(Stall(draw(st.sampled_from((1.0, 11.0, 31.0, 76.0)))))
    return out


outcome_lists = st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=6)
settled_outcomes = st.lists(st.sampled_from(OUTCOMES[:4]), min_size=1, max_size=6)
endings = st.sampled_from(("eof", "reset", "idle"))

FRAGMENTS = st.sampled_from(
    (
        b"POST ",
        b"GET ",
        b"HEAD ",
        b"/token",
        b"/segment",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: h\r\n",
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n",
        *NASTY,
    )
)


# -- properties -------------------------------------------------------------------------------


@FUZZ
@given(
    stream=st.lists(st.binary(max_size=64) | FRAGMENTS, max_size=30).map(b"".join),
    data=st.data(),
    outcomes=outcome_lists,
    ending=endings,
    small=st.booleans(),
)
def test_arbitrary_bytes(
    loop: ManualClockLoop,
    stream: bytes,
    data: st.DataObject,
    outcomes: list[str],
    ending: str,
    small: bool,
) -> None:
    steps = data.draw(actions(stream))
    outcome = run_connection(
        loop, steps, outcomes, config=SMALL if small else DEFAULT, ending=ending
    )
    check_invariants(outcome, stream)


@FUZZ
@given(
    pipeline=pipelines(valid=False),
    data=st.data(),
    outcomes=outcome_lists,
    ending=endings,
    small=st.booleans(),
)
def test_mutated_requests(
    loop: ManualClockLoop,
    pipeline: list[Req],
    data: st.DataObject,
    outcomes: list[str],
    ending: str,
    small: bool,
) -> None:
    stream = data.draw(mutated(b"".join(req.raw for req in pipeline)))
    steps = data.draw(actions(stream))
    outcome = run_connection(
        loop, steps, outcomes, config=SMALL if small else DEFAULT, ending=ending
    )
    check_invariants(outcome, stream)


@settings(FUZZ, max_examples=250)
@given(pipeline=pipelines(valid=True), data=st.data(), outcomes=settled_outcomes)
def test_valid_pipelines_are_answered_in_order(
    loop: ManualClockLoop, pipeline: list[Req], data: st.DataObject, outcomes: list[str]
) -> None:
    stream = b"".join(req.raw for req in pipeline)
    outcome = run_connection(loop, list(data.draw(pieces(stream))), outcomes, ending="eof")
    finals = check_invariants(outcome, stream)
    published = outcome.publisher.records
    assert [record.value for record in published] == [r.body for r in pipeline if r.expect is None]
    expected_by_publish = iter(outcome.publisher.expected_statuses())
    expected = [r.expect if r.expect is not None else next(expected_by_publish) for r in pipeline]
    if any(s in REFUSALS for s in expected):  # a refusal closes: later requests go unanswered
        expected = expected[: next(i for i, s in enumerate(expected) if s in REFUSALS) + 1]
    assert [answer.status for answer in finals] == expected


# -- request smuggling shapes ------------------------------------------------------------------


def _post(headers: bytes, body: bytes = b"") -> bytes:
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    return b"POST /token HTTP/1.1\r\nHost: h\r\n" + auth + headers + b"\r\n" + body


_CHUNKED = b"Transfer-Encoding: chunked\r\n"

SMUGGLING: dict[str, bytes] = {
    "cl-then-te": _post(b"Content-Length: 5\r\n" + _CHUNKED, b"0\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    "te-then-cl": _post(_CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n"),
    "duplicate-cl": _post(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"),
    "cl-list": _post(b"Content-Length: 2, 2\r\n", b"{}"),
    "signed-cl": _post(b"Content-Length: +5\r\n", b"hello"),
    "negative-cl": _post(b"Content-Length: -5\r\n", b"hello"),
    "chunk-size-not-hex": _post(_CHUNKED, b"5g\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-0x": _post(_CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-negative": _post(_CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-inner-space": _post(_CHUNKED, b"5 5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-leading-space": _post(_CHUNKED, b" 5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-21-digits": _post(_CHUNKED, b"0" * 20 + b"5\r\nhello\r\n0\r\n\r\n"),
    "chunk-data-overrun": _post(_CHUNKED, b"3\r\nhello\r\n0\r\n\r\n"),
    "chunk-line-bare-lf": _post(_CHUNKED, b"5\nhello\r\n0\r\n\r\n"),
    "obs-fold": _post(b"X-Note: a\r\n b\r\nContent-Length: 0\r\n"),
    "obs-fold-te": _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "bare-lf": (
        b"POST /token HTTP/1.1\nHost: h\nAuthorization: Bearer " + TOKEN.encode() + b"\n"
        b"Content-Length: 2\n\n{}"
    ),
    "bare-lf-one-line": _post(b"X-A: 1\nContent-Length: 0\r\n"),
    "chunk-extension-20kb": _post(_CHUNKED, b"5;" + b"x" * 20_000 + b"\r\nhello\r\n0\r\n\r\n"),
    "chunk-extension-20kb-unfinished": _post(_CHUNKED, b"5;" + b"x" * 20_000),
    "chunk-extensions-everywhere": _post(
        _CHUNKED, b"".join(b"1;" + b"x" * 2000 + b"\r\na\r\n" for _ in range(12)) + b"0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_smuggling_shapes_are_refused(
    loop: ManualClockLoop, name: str, data: st.DataObject
) -> None:
    stream = SMUGGLING[name]
    ending = data.draw(st.sampled_from(("reset", "eof")))
    steps: list[Action] = list(data.draw(pieces(stream)))
    outcome = run_connection(loop, steps, ending=ending)
    finals = check_invariants(outcome, stream)
    assert not outcome.publisher.records, "a smuggling shape was published"
    assert [answer.status for answer in finals] in ([400], [431]), finals
    assert outcome.transport.closed_by_protocol


# -- focused regressions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"), [(b"/token", 405), (b"/nope", 404), (b"/" + b"a" * 9000, 414)]
)
def test_head_request_is_answered_without_a_body(
    loop: ManualClockLoop, target: bytes, status: int
) -> None:
    """h11 refuses a body in the answer to HEAD; the refusal must still go out, bodiless."""
    stream = b"HEAD " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    outcome = run_connection(loop, [stream])
    finals = check_invariants(outcome, stream)
    assert [(answer.status, answer.body) for answer in finals] == [(status, b"")]
    assert int(finals[0].headers[b"content-length"]) > 0


def test_many_pipelined_requests_refused_at_once_do_not_recurse(loop: ManualClockLoop) -> None:
    """A publish that fails at once (broker known down) for each of 1500 pipelined requests in
    one read: answered one by one, not by recursing once per request."""
    request = _post(b"Content-Length: 2\r\n", b"{}")
    outcome = run_connection(loop, [request * 1500], ["fail"])
    finals = check_invariants(outcome, request)
    assert [answer.status for answer in finals] == [503] * 1500


def test_chunk_extensions_within_reason_are_accepted(loop: ManualClockLoop) -> None:
    body = b"".join(b"5;" + b"x" * 100 + b"\r\nhello\r\n" for _ in range(40)) + b"0\r\n\r\n"
    stream = _post(_CHUNKED, body)
    outcome = run_connection(loop, [stream])
    assert [answer.status for answer in check_invariants(outcome, stream)] == [200]
    assert outcome.publisher.records[0].value == b"hello" * 40
