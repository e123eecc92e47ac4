"""The fast path for request heads against h11, the parser of record.

For every complete head, :func:`fast_head` either declines (``None``: hookd's raw rules and
h11 decide) or yields exactly what h11 yields: the same method, target, version and header
fields. It must never take a head h11 or hookd's raw rules refuse (it runs before them).
Three generators feed it: valid heads in the shapes providers send (and a few they do not),
those heads mutated byte by byte, and hostile heads assembled from the pieces parsers disagree
on. Each property also checks that its
generator reaches the branches it is there for, so a generator that stops producing (say) heads
the fast path takes fails the test, not only the comparison.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.http import framing
from hookd.http.framing import Malformed, decode_head, fast_head, h11_head, head_problem

DIFFERENTIAL = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

METHODS = (b"POST", b"GET", b"HEAD", b"PUT", b"OPTIONS", b"post", b"M-SEARCH", b"X!#$%&'*+")
NAMES = (
    b"Host",
    b"Content-Type",
    b"Content-Length",
    b"Transfer-Encoding",
    b"User-Agent",
    b"X-Signature",
    b"X-Hub-Signature-256",
    b"Stripe-Signature",
    b"Connection",
    b"Expect",
    b"Accept-Encoding",
    b"x_under",
    b"X!#$%&'*+.^`|~",
)
#: Field bytes h11 accepts in a value (any but NUL and whitespace), and some it does not.
FIELD_BYTES = st.sampled_from([*range(0x21, 0x7F), 0x01, 0x08, 0x7F, 0x80, 0xFF, 0x0E, 0x1F]).map(
    lambda b: bytes([b])
)
ODD_BYTES = st.sampled_from([b"\x00", b"\x0b", b"\x0c", b"\r", b"\n", b":", b" ", b"\t", b'"'])


def _case(draw: st.DrawFn, name: bytes) -> bytes:
    style = draw(st.sampled_from((bytes.lower, bytes.upper, bytes.title, lambda b: b)))
    return style(name)


@st.composite
def values(draw: st.DrawFn) -> bytes:
    words = draw(st.lists(st.lists(FIELD_BYTES, min_size=1, max_size=8), max_size=4))
    inner = draw(st.sampled_from((b" ", b"\t", b"  ")))
    return inner.join(b"".join(word) for word in words)


@st.composite
def ows(draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from((b"", b"", b" ", b"\t", b"  ", b" \t")))


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    path = draw(st.sampled_from((b"/", b"/in", b"/hooks/stripe", b"*", b"http://h/x")))
    query = draw(st.sampled_from((b"", b"?a=1", b"?x=%20y&z", b"?~!$'()*,;=:@")))
    return path + query


@st.composite
def valid_heads(draw: st.DrawFn) -> bytes:
    """Heads as providers send them, and well-formed variations h11 accepts."""
    method = draw(st.sampled_from(METHODS[:3]) | st.sampled_from(METHODS))
    version = draw(st.sampled_from((b"1.1", b"1.1", b"1.0")))
    fields: list[tuple[bytes, bytes]] = []
    if version == b"1.1" or draw(st.booleans()):
        fields.append((_case(draw, b"Host"), draw(st.sampled_from((b"h", b"127.0.0.1:8080")))))
    framing_header = draw(st.sampled_from(("length", "length", "chunked", "none")))
    if framing_header == "length":
        length = draw(st.sampled_from((b"0", b"2", b"700", b"007", b"1" * 20)))
        fields.append((_case(draw, b"Content-Length"), length))
    elif framing_header == "chunked":
        fields.append((_case(draw, b"Transfer-Encoding"), _case(draw, b"chunked")))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(NAMES[4:]))
        fields.append((_case(draw, name), draw(values())))
    fields = draw(st.permutations(fields))
    head = method + b" " + draw(targets()) + b" HTTP/" + version + b"\r\n"
    for name, value in fields:
        head += name + b":" + draw(ows()) + value + draw(ows()) + b"\r\n"
    return head + b"\r\n"


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    """A valid head with a few bytes flipped, inserted or deleted; cut at its first blank line
    (or given one), so that it is still one complete head."""
    buf = bytearray(draw(valid_heads()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(("flip", "insert", "delete")))
        if op == "flip" and at < len(buf):
            buf[at] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[at:at] = draw(ODD_BYTES | FIELD_BYTES | st.binary(min_size=1, max_size=3))
        else:
            del buf[at : at + draw(st.integers(1, 4))]
    return _one_head(bytes(buf))


HOSTILE_LINES = (
    b"Host: h",
    b"Host: other",
    b"Host:",
    b"Host : h",
    b" Host: h",
    b"Content-Length: 5",
    b"Content-Length: 05",
    b"Content-Length: +5",
    b"Content-Length: 5 5",
    b"Content-Length: 0x5",
    b"Content-Length: " + b"9" * 21,
    b"Content-Length:",
    b"Content-Length: \xd9\xa5",  # an Arabic-Indic digit
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked ",
    b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked\x0b",
    b"Transfer-Encoding:\tchunked",
    b"X-A: \x00",
    b"X-A: a\x0cb",
    b"X-A: a\rb",
    b"X-A: \x80\xff",
    b"X-A: \x7f",
    b"X-A a",
    b": empty-name",
    b"X-\xc3\xa9: v",
    b"X-A: v \t ",
    b"",
)
HOSTILE_REQUEST_LINES = (
    b"POST / HTTP/1.1",
    b"POST / HTTP/1.0",
    b"POST  / HTTP/1.1",
    b"POST / HTTP/1.1 ",
    b"POST /\x7f HTTP/1.1",
    b"POST /\x80 HTTP/1.1",
    b"POST / HTTP/5.6",
    b"POST / HTTP/11",
    b"POST / http/1.1",
    b"POST /a b HTTP/1.1",
    b"PO ST / HTTP/1.1",
    b"POST\t/ HTTP/1.1",
    b"/ HTTP/1.1",
    b"POST HTTP/1.1",
    b"POST / HTTP/1.1\x00",
)


@st.composite
def hostile_heads(draw: st.DrawFn) -> bytes:
    """Heads assembled from the lines parsers disagree on."""
    first = draw(
        st.sampled_from(HOSTILE_REQUEST_LINES[:2]) | st.sampled_from(HOSTILE_REQUEST_LINES)
    )
    lines = [b"Host: h", *draw(st.lists(st.sampled_from(HOSTILE_LINES), max_size=3))]
    lines = draw(st.permutations(lines))
    return _one_head(first + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n")


def _one_head(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw + b"\r\n\r\n" if end == -1 else raw[: end + 4]


def compare(raw: bytes, seen: Counter[str]) -> None:
    """The property, for one head; ``seen`` counts where it went."""
    seen["examples"] += 1
    fast = fast_head(raw)
    if head_problem(raw) is not None:
        seen["hookd-rule"] += 1
        assert fast is None, f"the fast path took a head hookd's rules refuse: {raw!r}"
        return
    slow = h11_head(raw)
    if isinstance(slow, Malformed):
        seen["h11-refused"] += 1
        assert fast is None, f"the fast path took a head h11 refuses ({slow}): {raw!r}"
        return
    if fast is None:
        seen["declined"] += 1
        return
    seen["fast"] += 1
    assert fast == slow, raw
    with pytest.MonkeyPatch.context() as patch:  # the whole judgement agrees too
        patch.setattr(framing, "fast_head", lambda _raw: None)
        without_fast_path = decode_head(raw)
    assert decode_head(raw) == without_fast_path, raw


def reached(seen: Counter[str], minimums: dict[str, float]) -> None:
    short = {
        label: f"{seen[label]} of {seen['examples']}"
        for label, share in minimums.items()
        if seen[label] < share * seen["examples"]
    }
    assert not short, f"the generator stopped reaching: {short}; all: {dict(seen)}"


def test_valid_heads_the_fast_path_takes_are_read_as_h11_reads_them() -> None:
    seen: Counter[str] = Counter()

    @settings(DIFFERENTIAL, max_examples=300)
    @given(raw=valid_heads())
    def prop(raw: bytes) -> None:
        compare(raw, seen)

    prop()
    reached(seen, {"fast": 0.9})


def test_mutated_heads_are_never_taken_where_h11_refuses() -> None:
    seen: Counter[str] = Counter()

    @settings(DIFFERENTIAL, max_examples=500)
    @given(raw=mutated_heads())
    def prop(raw: bytes) -> None:
        compare(raw, seen)

    prop()
    reached(seen, {"fast": 0.1, "h11-refused": 0.2, "hookd-rule": 0.05})


def test_hostile_heads_are_never_taken_where_h11_refuses() -> None:
    seen: Counter[str] = Counter()

    @settings(DIFFERENTIAL, max_examples=400)
    @given(raw=hostile_heads())
    def prop(raw: bytes) -> None:
        compare(raw, seen)

    prop()
    reached(seen, {"fast": 0.03, "h11-refused": 0.2})


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /in HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
        b"POST /in HTTP/1.1\r\nhost:h\r\ncontent-length:\t007 \r\nX-A: a \x80 b\r\n\r\n",
        b"POST /in HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
        b"POST /in HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_common_heads_take_the_fast_path(raw: bytes) -> None:
    fast = fast_head(raw)
    assert fast is not None and fast == h11_head(raw)
