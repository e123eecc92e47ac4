"""The sans-IO request parser on its own: no loop, no transport, no routes.

Strict framing (issue 11): chunk-size lines to RFC 9112 7.1.1, 505 for versions other than
HTTP/1.0 and 1.1, 501 for transfer codings other than chunked. And the properties the
connection relies on: the events do not depend on how the bytes were cut, a valid request
comes back whole, and hostile bytes end in a refusal that stays, never in an exception.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.http.framing import (
    CHUNK_FRAMING_ALLOWANCE,
    CHUNKS_FREE,
    END,
    NEED_DATA,
    Body,
    Event,
    Head,
    Malformed,
    RequestParser,
)

MAX_HEAD = 4096
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def events(*reads: bytes, max_head: int = MAX_HEAD) -> list[Event]:
    """Every event the parser yields for ``reads`` fed one after the other; body pieces are
    merged, a head holding its whole body is spelled as the head, the body and END, and
    NEED_DATA is dropped, so that the list does not depend on where reads were cut. Stops at
    the first Malformed."""
    parser = RequestParser(max_head)
    out: list[Event] = []
    for data in reads:
        parser.feed(data)
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, Head) and event.body is not None:
                out.append(dataclasses.replace(event, body=None))
                out.extend([Body(event.body), END] if event.body else [END])
            elif isinstance(event, Body) and out and isinstance(out[-1], Body):
                out[-1] = Body(out[-1].data + event.data)
            else:
                out.append(event)
            if isinstance(event, Malformed):
                return out
    return out


def chunked_post(body: bytes) -> bytes:
    return b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body


# -- strict framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"2;",  # an empty extension name
        b'2;a="b',  # an unbalanced quote
        b"2 ",  # whitespace after the size
        b"2\t",
        b"2;a=b ",  # whitespace after the extension
        b"2;a=",  # an empty value
        b"2;=b",
        b"2;a b",
        b'2;a="b"c',
        b'2;a="\\\x01"',  # a control character quoted
        b" 2",
        b"0x2",
        b"",
        b"2;a=b;",
        b"0" * 20 + b"2",  # 21 digits
    ],
)
def test_chunk_size_lines_off_the_grammar_are_400(line: bytes) -> None:
    got = events(chunked_post(line + b"\r\n{}\r\n0\r\n\r\n"))
    assert isinstance(got[-1], Malformed) and got[-1].status == 400, got
    assert not any(isinstance(event, Body) for event in got)


@pytest.mark.parametrize(
    "line",
    [
        b"2",
        b"02",
        b"2;a",
        b"2;a=b",
        b"2 ; a = b",
        b"2\t;\ta\t=\tb",
        b'2;a="q \\" v"',
        b'2;a="";b;c=d',
        b"0" * 19 + b"2",
    ],
)
def test_chunk_size_lines_on_the_grammar_are_taken(line: bytes) -> None:
    got = events(chunked_post(line + b"\r\n{}\r\n0;x=y\r\nTrailer-A: 1\r\n\r\n"))
    assert [type(event) for event in got] == [Head, Body, type(END)], got
    assert got[1] == Body(b"{}")


@pytest.mark.parametrize(
    ("version", "status"),
    [(b"HTTP/5.6", 505), (b"HTTP/1.2", 505), (b"HTTP/2.0", 505), (b"HTTP/0.9", 505)],
)
def test_versions_other_than_1_0_and_1_1_are_505(version: bytes, status: int) -> None:
    got = events(b"POST /t " + version + b"\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert got == [Malformed(status, "HTTP version not supported")]


@pytest.mark.parametrize("version", [b"HTTP/11", b"HTTP/1", b"http/1.1", b"HTTP/1.1 "])
def test_malformed_versions_are_400(version: bytes) -> None:
    got = events(b"POST /t " + version + b"\r\nHost: h\r\n\r\n")
    assert isinstance(got[0], Malformed) and got[0].status == 400, got


@pytest.mark.parametrize(
    "codings",
    [
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
    ],
)
def test_transfer_codings_other_than_chunked_are_501(codings: bytes) -> None:
    got = events(b"POST /t HTTP/1.1\r\nHost: h\r\n" + codings + b"\r\n")
    assert isinstance(got[0], Malformed) and got[0].status == 501, got


def test_both_versions_served_and_keep_alive_follows_them() -> None:
    for version, keep_alive in ((b"1.1", True), (b"1.0", False)):
        head = events(b"POST /t HTTP/" + version + b"\r\nHost: h\r\nContent-Length: 0\r\n\r\n")[0]
        assert isinstance(head, Head) and head.version == version
        assert head.keep_alive is keep_alive


def test_too_many_chunks_and_too_much_framing_are_400() -> None:
    tiny = b"1\r\na\r\n" * (CHUNKS_FREE + 40) + b"0\r\n\r\n"
    assert events(chunked_post(tiny))[-1] == Malformed(400, "too many chunks")
    padded = b"1;" + b"x" * CHUNK_FRAMING_ALLOWANCE + b"\r\na\r\n0\r\n\r\n"
    assert events(chunked_post(padded))[-1] == Malformed(400, "chunk framing too large")
    unfinished = b"1;" + b"x" * (CHUNK_FRAMING_ALLOWANCE + 100)  # no CRLF yet
    assert events(chunked_post(unfinished))[-1] == Malformed(400, "chunk framing too large")


def test_many_trailer_lines_end_in_a_refusal_not_a_recursion_error() -> None:
    trailers = b"a:\r\n" * 2000
    assert events(chunked_post(b"0\r\n" + trailers + b"\r\n"))[-1] == Malformed(
        400, "chunk framing too large"
    )


def test_an_error_is_final() -> None:
    parser = RequestParser(MAX_HEAD)
    parser.feed(b"POST /t HTTP/9.9\r\nHost: h\r\n\r\nPOST /t HTTP/1.1\r\nHost: h\r\n\r\n")
    first = parser.next_event()
    assert isinstance(first, Malformed)
    parser.feed(b"more")
    assert parser.next_event() == first and parser.buffered == 0


def test_a_read_inside_a_body_is_yielded_as_it_came_and_counted_until_taken() -> None:
    """A large body arrives in many reads; each read inside it is handed on as the same bytes
    object (no copy in, no copy out), and what follows the body in the same read stays first
    in line for the next request."""
    parser = RequestParser(MAX_HEAD)
    parser.feed(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123")
    head = parser.next_event()
    assert isinstance(head, Head) and head.body is None
    assert parser.next_event() == Body(b"0123")
    assert parser.next_event() is NEED_DATA
    inside = b"456"
    parser.feed(inside)
    assert parser.buffered == 3
    piece = parser.next_event()
    assert isinstance(piece, Body) and piece.data is inside
    end_and_next = b"789POST /b HTTP/1.1\r\n"  # the body's end, then the next head's start
    rest_of_next = b"Host: h\r\nContent-Length: 0\r\n\r\n"
    parser.feed(end_and_next)
    parser.feed(rest_of_next)
    assert parser.buffered == len(end_and_next) + len(rest_of_next)
    assert parser.next_event() == Body(b"789")
    assert parser.next_event() is END
    head = parser.next_event()
    assert isinstance(head, Head) and head.target == b"/b" and head.body == b""
    assert parser.next_event() is NEED_DATA and parser.buffered == 0


def test_a_body_buffered_with_its_head_comes_in_the_head() -> None:
    """The common request, head and body in one read, is one event; a body still arriving, or
    a chunked one, follows its head in events."""
    parser = RequestParser(MAX_HEAD)
    parser.feed(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\n")
    head = parser.next_event()
    assert isinstance(head, Head) and head.body == b"abc" and parser.body_received == 3
    assert parser.next_event() is NEED_DATA
    parser.feed(b"Host: h\r\nContent-Length: 3\r\n\r\nab")
    head = parser.next_event()
    assert isinstance(head, Head) and head.target == b"/b" and head.body is None
    assert parser.next_event() == Body(b"ab")
    parser.feed(b"c")
    assert parser.next_event() == Body(b"c") and parser.next_event() is END
    parser.feed(chunked_post(b"3\r\nabc\r\n0\r\n\r\n"))
    head = parser.next_event()
    assert isinstance(head, Head) and head.chunked and head.body is None
    assert parser.next_event() == Body(b"abc") and parser.next_event() is END


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /" + b"a" * 5000, 414),  # the request line alone is over the head limit
        (b"POST / HTTP/1.1\r\nX: " + b"a" * 5000, 431),
        (b"POST / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
    ],
)
def test_oversized_heads(raw: bytes, status: int) -> None:
    assert isinstance(got := events(raw)[0], Malformed) and got.status == status, got


# -- properties -------------------------------------------------------------------------------

_VALUE = st.binary(min_size=0, max_size=12).filter(lambda v: b"\r" not in v and b"\n" not in v)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A well-formed request (either framing) and its body."""
    body = draw(st.binary(max_size=300))
    head = b"POST /t?x=1 HTTP/1.1\r\nHost: h\r\n"
    for _ in range(draw(st.integers(0, 3))):
        head += b"X-" + draw(st.sampled_from((b"A", b"Bb", b"c-d"))) + b": v\r\n"
    if draw(st.booleans()):
        framed = bytearray()
        rest = body
        while rest:
            size = draw(st.integers(1, len(rest)))
            ext = draw(st.sampled_from((b"", b";a=b", b' ; q="x\\"y"')))
            framed += b"%x" % size + ext + b"\r\n" + rest[:size] + b"\r\n"
            rest = rest[size:]
        framed += b"0\r\n" + draw(st.sampled_from((b"", b"T: 1\r\n"))) + b"\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + bytes(framed), body
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, body


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@PROPERTY
@given(requests=st.lists(valid_requests(), min_size=1, max_size=3), data=st.data())
def test_valid_pipelines_come_back_whole_however_they_are_cut(
    requests: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(raw for raw, _ in requests)
    got = events(*data.draw(cuts(stream)))
    expected_bodies = iter(body for _, body in requests)
    bodies: list[bytes] = []
    for event in got:
        if isinstance(event, Head):
            bodies.append(b"")
        elif isinstance(event, Body):
            bodies[-1] += event.data
        else:
            assert event is END, event
    assert bodies == list(expected_bodies)
    assert got.count(END) == len(requests)


NASTY = (b"\r\n", b"\n", b"\r", b" ", b";", b'"', b"\x00", b"0\r\n\r\n", b"HTTP/5.6", b"\\")


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(("flip", "insert", "delete")))
        if op == "flip" and at < len(buf):
            buf[at] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[at:at] = draw(st.sampled_from(NASTY) | st.binary(min_size=1, max_size=4))
        else:
            del buf[at : at + draw(st.integers(1, 8))]
    return bytes(buf)


@PROPERTY
@given(
    stream=st.one_of(
        st.binary(max_size=200),
        valid_requests().flatmap(lambda case: mutated(case[0])),
    ),
    data=st.data(),
)
def test_hostile_bytes_give_the_same_events_however_cut_and_never_raise(
    stream: bytes, data: st.DataObject
) -> None:
    whole = events(stream, max_head=256)
    assert events(*data.draw(cuts(stream)), max_head=256) == whole
    for event in whole:
        if isinstance(event, Malformed):
            assert event.status in (400, 414, 431, 501, 505)
            assert event is whole[-1]
