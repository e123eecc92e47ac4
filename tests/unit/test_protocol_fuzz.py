"""Hostile HTTP against ``HttpProtocol``, in-process: no sockets, a fake transport, a real route
table, real metrics, and a stand-in outbox whose outcome hypothesis chooses (``fakes.py``).

Every scenario runs on one event loop whose clock the test moves by hand. hookd keeps a deadline
per connection (no timers); when a scenario stalls, the test moves the clock and calls
``check_deadline`` the way the listener's sweeper task does. The invariants checked after every
scenario:

1. ``data_received`` / ``eof_received`` / ``connection_lost`` and the loop callbacks never raise;
2. everything written parses, strictly, as a sequence of HTTP/1.1 responses whose statuses are
   all in ``ALLOWED`` (never a 500 for client input), each counted once in the metrics;
3. a refusal (400/404/405/408/413/414/431) carries ``connection: close``, is the last response,
   and the protocol closed the transport; nothing is written after the protocol closes;
4. a stall at least as long as the deadline of the connection's state ends it: a partial
   request gets 408 and close, a request waiting to be durable gets 503 and close, an idle
   connection closes without a word;
5. no leak: after ``connection_lost`` the connection set is empty, every commit settled, and
   ``in_flight``, ``in_flight_bytes`` and ``receiving_bytes`` are back to 0.

Each property also counts where its examples went (statuses, publishing, stalls that fired) and
fails when a strategy stops reaching a branch it is there to reach: a generator that no longer
produces a 413, a signed request or a stall past a deadline fails the test, not only the fuzzing.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fakes import OUTCOMES, FakeTransport, ManualClockLoop, StandInOutbox, connect
from fakes import server_context as make_context
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.config import Config, validate
from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.routing import RouteTable, build_routes

TOKEN = "fuzz-token-s3cret"
SEGMENT_SECRET = "fuzz-segment-s3cret"
#: Per-route body limit of /segment (the server-wide one applies to /token).
SEGMENT_MAX_BODY = 512

ALLOWED = frozenset({100, 200, 400, 401, 404, 405, 408, 413, 414, 431, 501, 503, 505})
REFUSALS = frozenset({400, 404, 405, 408, 413, 414, 431, 501, 505})

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
#: The backstop for a request waiting to be durable (the app derives it from ack_timeout_s).
COMMIT_TIMEOUT_S = 60.0

# The deadlines must differ, or a test could not tell which one fired.
_server = DEFAULT.server
assert len({_server.header_timeout_s, _server.body_timeout_s, _server.idle_timeout_s}) == 3


@pytest.fixture(scope="module")
def loop(manual_loop: ManualClockLoop) -> ManualClockLoop:
    return manual_loop


def assert_reached(seen: Counter[str], minimums: dict[str, float]) -> None:
    """Each label was seen in at least this share of the examples: of ``seen["examples"]``, or
    for a label ``small-…`` of ``seen["small-examples"]`` (those run with SMALL)."""
    assert seen["examples"] >= 50, seen
    short = {}
    for label, share in minimums.items():
        examples = seen["small-examples" if label.startswith("small-") else "examples"]
        if seen[label] < share * examples:
            short[label] = f"{seen[label]} of {examples}, need {share:.0%}"
    assert not short, f"the strategy stopped reaching: {short}; all: {dict(seen)}"


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
    outbox: StandInOutbox
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: What each stall past its state's deadline ended: "head-408", "waiting-503", "idle-close"…
    fired: list[str] = field(default_factory=list)


def state_deadline(protocol: HttpProtocol, config: Config) -> tuple[str, float]:
    """The connection's state and the longest it may wait in that state."""
    state = protocol._state.name.lower()
    server = config.server
    return state, {
        # a fresh connection waits header_timeout_s for its first byte, a kept-alive one
        # idle_timeout_s for the next request
        "fresh": server.header_timeout_s,
        "idle": server.idle_timeout_s,
        "head": server.header_timeout_s,
        "body": server.body_timeout_s,
        "waiting": COMMIT_TIMEOUT_S,
        "closing": server.write_timeout_s,
        "closed": float("inf"),
    }[state]


async def _turns(n: int = 4) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _connection(
    loop: ManualClockLoop, config: Config, actions: list[Action], outcomes: list[str], ending: str
) -> Outcome:
    outbox = StandInOutbox(loop, outcomes)
    context = make_context(config, ROUTES[id(config)], outbox, commit_timeout_s=COMMIT_TIMEOUT_S)
    protocol, transport = connect(context, loop)
    inbox: deque[bytes | None] = deque()
    fired: list[str] = []

    def wait(seconds: float) -> None:
        """The clock moves on; the deadline is checked the way the listener's sweeper does.
        A stall as long as the state's deadline must end the connection (invariant 4)."""
        state, deadline = state_deadline(protocol, config)
        written = len(transport.written)
        closing = transport.is_closing()
        loop.now += seconds
        protocol.check_deadline(loop.now)
        if closing or seconds < deadline:
            return
        new = bytes(transport.written[written:])
        assert transport.closed_by_protocol, f"{state}: still open after a {seconds}s stall"
        if state in ("fresh", "idle"):
            assert new == b"", new
            fired.append("idle-close")
        elif state == "waiting":
            assert new.startswith(b"HTTP/1.1 503 ") and b"connection: close" in new, new
            fired.append("waiting-503")
        else:
            assert new.startswith(b"HTTP/1.1 408 ") and b"connection: close" in new, new
            fired.append(f"{state}-408")

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
        wait(config.server.idle_timeout_s + config.server.body_timeout_s + COMMIT_TIMEOUT_S)
        await pump()
    if not transport.is_closing():
        transport.reset()
    await _turns()
    for future in outbox.held:
        if not future.done():
            future.set_result(None)
    await _turns()
    return Outcome(transport, protocol, context, outbox, list(loop.errors), fired)


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
    """Properties 1-3 and 5 (4 is checked as each stall happens); returns the final (non-1xx)
    answers."""
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
    assert not outcome.outbox.waiting
    assert context.in_flight == 0
    assert context.in_flight_bytes == 0
    assert context.receiving_bytes == 0
    return finals


def labels(outcome: Outcome, finals: list[Answer], *, small: bool = False) -> list[str]:
    """Where one example went, for the distribution checks; with ``small`` (the example ran
    with SMALL) every label is counted once more as ``small-<label>``."""
    out = ["examples", *{f"status-{answer.status}" for answer in finals}, *set(outcome.fired)]
    if finals:
        out.append("answered")
    if outcome.outbox.records:
        out.append("published")
    if any(answer.status == 401 and b"mismatch" in answer.body for answer in finals):
        out.append("signature-checked")
    return [*out, *(f"small-{label}" for label in out)] if small else out


# -- generating requests ---------------------------------------------------------------------

HEADER_NAMES = ("User-Agent", "Accept", "X-Request-Id", "X-Forwarded-For", "Content-Type")
_VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
header_values = st.text(_VALUE_CHARS, max_size=30).map(str.encode)
bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(
        st.text(max_size=8), st.integers(-(2**53), 2**53) | st.text(max_size=20), max_size=5
    ).map(orjson.dumps),
    # around the limits of SMALL (/segment 512, /token 1024) and of /segment everywhere
    st.integers(480, 1100).map(lambda n: b"b" * n),
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
        ext = draw(st.sampled_from(("", ";a=b", ';name="q v"', ' ; a = "b\\"" ;c')))
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
    if draw(st.integers(0, 5)) == 0:  # a head over SMALL's 1024 bytes, or nearly
        headers.append((b"X-Pad", b"p" * draw(st.sampled_from((900, 1100)))))
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
        b"/nope",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: h\r\n",
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n",
        *NASTY,
    )
)


def signed_request(path: str, body: bytes, *, chunked: bool = False, pad: int = 0) -> bytes:
    """A well-formed POST that ``path``'s verifier accepts (Content-Length or chunked)."""
    route = ROUTES[id(DEFAULT)].lookup(path.encode())
    assert route is not None
    head = f"POST {path} HTTP/1.1\r\nHost: hookd.test\r\n".encode()
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in route.verifier.sign(body, b"", 0.0))
    if pad:
        head += b"X-Pad: " + b"p" * pad + b"\r\n"
    if chunked:
        framed = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + framed
    return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


#: Whole requests among the arbitrary bytes: a stream that starts with one reaches routing,
#: verification and publishing; the last three go over SMALL's limits (413, 413, 431).
#: The shares the properties assert are a quarter or less of the lowest seen over repeated
#: runs: hypothesis's mix varies a lot from run to run. Statuses too rare here to assert on
#: their own (404, 503, a 413 or a 431 alone) are asserted by the properties aimed at them.
WHOLE_REQUESTS = (
    signed_request("/token", b'{"whole":1}'),
    signed_request("/segment", b'{"whole":2}'),
    signed_request("/segment", b'{"whole":3}', chunked=True),
    signed_request("/token", b"{}").replace(b"Bearer " + TOKEN.encode(), b"Bearer wrong"),
    signed_request("/segment", b"s" * 600),
    b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /token HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n",
    b"POST /token HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 1100 + b"\r\n",
)


@st.composite
def over_limit_requests(draw: st.DrawFn) -> tuple[bytes, set[int]]:
    """A signed request for SMALL whose body or head is near its limit (either side), and the
    statuses it may get: 431 for a head over max_header_bytes, else 413 for a body over the
    route's limit, else 200. A head within 3 bytes of the limit may get either: the head is
    refused once the buffer outgrows the limit before its blank line is complete."""
    path = draw(st.sampled_from(("/token", "/segment")))
    route = ROUTES[id(SMALL)].lookup(path.encode())
    assert route is not None
    limit = route.max_body_bytes
    size = draw(st.sampled_from((limit - 1, limit, limit + 1)) | st.integers(0, 2 * limit))
    chunked = draw(st.booleans())
    body = draw(st.binary(min_size=size, max_size=size))
    bare = signed_request(path, body, chunked=chunked, pad=1)
    end = bare.index(b"\r\n\r\n") - 1  # the head's length without the pad's one byte
    max_head = SMALL.server.max_header_bytes
    pad = draw(st.sampled_from((1, 0)) | st.integers(max_head - 8 - end, max_head + 8 - end))
    raw = signed_request(path, body, chunked=chunked, pad=max(pad, 0))
    end = raw.index(b"\r\n\r\n")
    normal = 413 if size > limit else 200
    if end > max_head:
        return raw, {431}
    if end + 3 > max_head:
        return raw, {431, normal}
    return raw, {normal}


@dataclass(frozen=True)
class StallCase:
    """``sent`` bytes of a request, then nothing for ``seconds``; ``state`` is what the client
    knows it left the server in, ``deadline`` how long that state may last."""

    sent: bytes
    state: str
    deadline: float
    seconds: float
    held: bool


@st.composite
def stall_cases(draw: st.DrawFn) -> StallCase:
    server = DEFAULT.server
    raw = signed_request(
        draw(st.sampled_from(("/token", "/segment"))),
        draw(st.binary(max_size=100)),
        chunked=draw(st.booleans()),
    )
    head_end = raw.index(b"\r\n\r\n") + 4
    cuts = [st.just(0), st.integers(1, head_end - 1), st.just(len(raw))]
    if head_end < len(raw):
        cuts.append(st.integers(head_end, len(raw) - 1))
    cut = draw(st.one_of(cuts))
    held = cut == len(raw) and draw(st.booleans())
    if cut == 0:  # connected, nothing sent
        state, deadline = "fresh", server.header_timeout_s
    elif cut < head_end:
        state, deadline = "head", server.header_timeout_s
    elif cut < len(raw):
        state, deadline = "body", server.body_timeout_s
    elif held:  # the request is in, its commit never settles
        state, deadline = "waiting", COMMIT_TIMEOUT_S
    else:  # answered; the connection is kept alive
        state, deadline = "idle", server.idle_timeout_s
    near = st.sampled_from((deadline - 0.5, deadline, deadline + 0.5))
    seconds = draw(near | st.floats(0.1, 2 * COMMIT_TIMEOUT_S))
    return StallCase(raw[:cut], state, deadline, seconds, held)


# -- properties -------------------------------------------------------------------------------

JUNK = st.binary(max_size=64) | FRAGMENTS
#: A third of the streams start with a whole request, so that they get past the framing.
WHOLE = st.sampled_from(WHOLE_REQUESTS)


def test_arbitrary_bytes(loop: ManualClockLoop) -> None:
    seen: Counter[str] = Counter()

    @FUZZ
    @given(
        stream=st.tuples(WHOLE | JUNK, st.lists(WHOLE | JUNK | JUNK, max_size=20)).map(
            lambda parts: parts[0] + b"".join(parts[1])
        ),
        data=st.data(),
        outcomes=outcome_lists,
        ending=endings,
        small=st.booleans(),
    )
    def prop(
        stream: bytes, data: st.DataObject, outcomes: list[str], ending: str, small: bool
    ) -> None:
        steps = data.draw(actions(stream))
        outcome = run_connection(
            loop, steps, outcomes, config=SMALL if small else DEFAULT, ending=ending
        )
        finals = check_invariants(outcome, stream)
        seen.update(labels(outcome, finals, small=small))
        if small and {413, 431} & {answer.status for answer in finals}:
            seen["small-over-limit"] += 1

    prop()
    assert_reached(
        seen,
        {
            "answered": 0.5,
            "published": 0.015,
            "status-400": 0.06,
            "head-408": 0.04,
            "small-over-limit": 0.01,
        },
    )


def test_mutated_requests(loop: ManualClockLoop) -> None:
    seen: Counter[str] = Counter()

    @FUZZ
    @given(
        pipeline=pipelines(valid=False),
        data=st.data(),
        outcomes=outcome_lists,
        ending=endings,
        small=st.booleans(),
    )
    def prop(
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
        finals = check_invariants(outcome, stream)
        seen.update(labels(outcome, finals, small=small))

    prop()
    assert_reached(
        seen,
        {
            "answered": 0.6,
            "published": 0.01,
            "status-400": 0.025,
            "status-404": 0.08,
            "status-405": 0.025,
            "status-414": 0.02,
        },
    )


def test_valid_pipelines_are_answered_in_order(loop: ManualClockLoop) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=250)
    @given(pipeline=pipelines(valid=True), data=st.data(), outcomes=settled_outcomes)
    def prop(pipeline: list[Req], data: st.DataObject, outcomes: list[str]) -> None:
        stream = b"".join(req.raw for req in pipeline)
        outcome = run_connection(loop, list(data.draw(pieces(stream))), outcomes, ending="eof")
        finals = check_invariants(outcome, stream)
        published = outcome.outbox.records
        by_publish = iter(outcome.outbox.expected_statuses())
        expected: list[int | None] = []
        expected_values = []
        for req in pipeline:
            if req.expect is None:
                expected.append(next(by_publish, None))
                expected_values.append(req.body)
            else:
                expected.append(req.expect)
            if expected[-1] in REFUSALS:  # a refusal closes: later requests go unanswered
                break
        assert [record.value for record in published] == expected_values
        assert [answer.status for answer in finals] == expected
        seen.update(labels(outcome, finals))
        if len(published) > 1:
            seen["pipelined-publishes"] += 1

    prop()
    assert_reached(
        seen,
        {
            "published": 0.25,
            "pipelined-publishes": 0.1,
            "signature-checked": 0.015,
            "status-200": 0.12,
            "status-503": 0.07,
            "status-413": 0.05,
        },
    )


def test_bodies_and_heads_over_the_limits_are_refused(loop: ManualClockLoop) -> None:
    """SMALL's limits, approached from both sides, by Content-Length and chunked bodies: a body
    over the route's limit gets 413, a head over max_header_bytes 431, and neither is
    published; one within both is accepted."""
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=200)
    @given(case=over_limit_requests(), data=st.data())
    def prop(case: tuple[bytes, set[int]], data: st.DataObject) -> None:
        raw, allowed = case
        outcome = run_connection(loop, list(data.draw(pieces(raw))), config=SMALL)
        finals = check_invariants(outcome, raw)
        assert len(finals) == 1 and finals[0].status in allowed, (finals, allowed)
        status = finals[0].status
        assert bool(outcome.outbox.records) == (status == 200)
        if status != 200:
            assert finals[0].closes and outcome.transport.closed_by_protocol
        framing = "chunked" if b"Transfer-Encoding: chunked" in raw else "length"
        seen.update(["examples", f"{status}-{framing}"])

    prop()
    assert_reached(
        seen,
        {
            "413-length": 0.01,
            "413-chunked": 0.02,
            "431-length": 0.008,
            "431-chunked": 0.02,
            "200-length": 0.04,
            "200-chunked": 0.05,
        },
    )


def test_a_stall_past_its_deadline_ends_the_connection(loop: ManualClockLoop) -> None:
    """Header, body, idle and commit deadlines each fire when due, not before, with what the
    client is owed: 408 for a partial request, 503 for one never made durable, a silent close
    for a connection with nothing pending."""
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=200)
    @given(case=stall_cases())
    def prop(case: StallCase) -> None:
        steps: list[Action] = (
            [case.sent, Stall(case.seconds)] if case.sent else [Stall(case.seconds)]
        )
        outcome = run_connection(loop, steps, ["held" if case.held else "ok"], ending="reset")
        finals = check_invariants(outcome, case.sent)
        fired = case.seconds >= case.deadline
        statuses = [answer.status for answer in finals]
        before = [200] if case.state == "idle" else []  # the answer to the complete request
        owed = {"head": [408], "body": [408], "waiting": [503]}.get(case.state, [])
        assert statuses == before + (owed if fired else []), (case, statuses)
        assert outcome.transport.closed_by_protocol == fired, case
        seen.update(["examples", f"{case.state}-{'fired' if fired else 'quiet'}"])

    prop()
    assert_reached(
        seen,
        {
            f"{state}-{result}": 0.01
            for state in ("fresh", "head", "body", "idle", "waiting")
            for result in ("fired", "quiet")
        },
    )


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
    assert not outcome.outbox.records, "a smuggling shape was published"
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
    assert outcome.outbox.records[0].value == b"hello" * 40
