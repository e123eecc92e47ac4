"""HTTP edge cases over raw sockets: limits, timeouts, smuggling shapes, malformed input.

Every refusal is a specific status; the ones that leave the stream in doubt also close.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from http_client import Client, request, segment_request
from readback import marker, values_before
from support import unique_topic

SECRET = b"edge"
MAX_BODY = 1000
MAX_HEAD = 2048
#: Different, so that a test can tell which deadline fired (or that one fired too early).
HEADER_TIMEOUT_S = 0.6
BODY_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def hookd(module_launcher):
    topic = unique_topic("edges")
    server = module_launcher.start(
        [
            {"path": "/in", "topic": topic, "verify": "segment", "secrets": ["edge"]},
            {
                "path": "/big",
                "topic": topic,
                "verify": "segment",
                "secrets": ["edge"],
                "max_body_bytes": 4000,
            },
        ],
        server={
            "max_body_bytes": MAX_BODY,
            "max_header_bytes": MAX_HEAD,
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": BODY_TIMEOUT_S,
            "idle_timeout_s": IDLE_TIMEOUT_S,
        },
    )
    server.topic = topic
    return server


def send_raw(hookd, data: bytes):
    with Client(hookd.address, timeout=5) as client:
        client.send(data)
        answer = client.response()
        closed = client.closed_by_peer(3)
    return answer, closed


def test_unknown_path_404(hookd):
    answer, closed = send_raw(hookd, segment_request("/nope", b"{}", SECRET))
    assert answer.status == 404
    assert closed


def test_wrong_method_405_with_allow(hookd):
    answer, _ = send_raw(hookd, b"GET /in HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 405
    assert answer.headers[b"allow"] == b"POST"


def test_missing_signature_401_says_which(hookd):
    raw = b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    answer = request(hookd.address, raw)
    assert answer.status == 401
    assert b"missing x-signature header" in answer.body


def test_wrong_signature_401_keeps_connection(hookd):
    with Client(hookd.address) as client:
        client.send(segment_request("/in", b"{}", b"not-the-secret"))
        first = client.response()
        client.send(segment_request("/in", b"{}", SECRET))
        second = client.response()
    assert (first.status, second.status) == (401, 200)
    assert b"signature mismatch" in first.body


def test_body_over_limit_413_decided_from_content_length(hookd):
    # Only the head is sent: the answer must come before any body byte.
    head = b"POST /in HTTP/1.1\r\nHost: x\r\nX-Signature: 00\r\nContent-Length: 1001\r\n\r\n"
    answer, closed = send_raw(hookd, head)
    assert answer.status == 413
    assert closed


def test_route_override_of_body_limit(hookd):
    body = b'{"pad":"' + b"x" * 3000 + b'"}'
    assert request(hookd.address, segment_request("/big", body, SECRET)).status == 200
    assert request(hookd.address, segment_request("/in", body, SECRET)).status == 413


def test_chunked_body_over_limit_413(hookd):
    chunk = b"x" * 600
    raw = (
        b"POST /in HTTP/1.1\r\nHost: x\r\nX-Signature: 00\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"258\r\n" + chunk + b"\r\n") * 2
        + b"0\r\n\r\n"
    )
    answer, closed = send_raw(hookd, raw)
    assert answer.status == 413
    assert closed


def test_expect_100_continue_refused_early_when_too_large(hookd):
    head = (
        b"POST /in HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nX-Signature: 00\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    answer, closed = send_raw(hookd, head)
    assert answer.status == 413  # no 100 Continue first
    assert closed


def test_headers_over_limit_431_in_one_read(hookd):
    big = b"X-Pad: " + b"a" * (MAX_HEAD + 100) + b"\r\n"
    answer, closed = send_raw(hookd, segment_request("/in", b"{}", SECRET, extra=big))
    assert answer.status == 431
    assert closed


def test_headers_over_limit_431_trickled(hookd):
    with Client(hookd.address) as client:
        client.send(b"POST /in HTTP/1.1\r\nHost: x\r\n")
        for _ in range(30):
            try:
                client.send(b"X-Pad: " + b"a" * 100 + b"\r\n")
            except OSError:
                break
        assert client.response().status == 431


def test_huge_target_414(hookd):
    raw = b"POST /in?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    answer, closed = send_raw(hookd, raw)
    assert answer.status == 414
    assert closed


def _chunked_post(body: bytes) -> bytes:
    return b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        (
            "content-length and transfer-encoding",
            b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "duplicate content-length",
            b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        ),
        ("content-length list", b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}"),
        (
            "conflicting content-length",
            b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        ),
        ("signed content-length", b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}"),
        (
            "bad chunk size",
            b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"POST /in HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n",
        ),
        ("bare LF", b"POST /in HTTP/1.1\nHost: x\nContent-Length: 0\n\n"),
        ("not http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
        ("space in header name", b"POST /in HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n"),
        # the strict parsers' corpus (issue 11): RFC 9112 7.1.1 chunk-size lines
        ("empty chunk extension name", _chunked_post(b"2;\r\n{}\r\n0\r\n\r\n")),
        ("unbalanced quote in chunk extension", _chunked_post(b'2;a="b\r\n{}\r\n0\r\n\r\n')),
        ("whitespace after the chunk size", _chunked_post(b"2 \r\n{}\r\n0\r\n\r\n")),
    ],
)
def test_malformed_requests_400_and_close(hookd, name, raw):
    answer, closed = send_raw(hookd, raw)
    assert answer.status == 400, name
    assert b"malformed request" in answer.body
    assert closed


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /in HTTP/5.6\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505),
        (b"POST /in HTTP/1.2\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505),
        (b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ],
)
def test_unsupported_version_505_and_transfer_coding_501(hookd, raw, status):
    answer, closed = send_raw(hookd, raw)
    assert answer.status == status
    assert closed


#: The listener checks deadlines every 0.25 s (TIMEOUT_RESOLUTION_S); allow for that and for a
#: loaded machine on the late side, and for clocks read at slightly different moments.
LATE_S = 1.0
EARLY_S = 0.1


def seconds_to_408(data: bytes, address: tuple[str, int]) -> float:
    """Send ``data`` and nothing more; seconds until the 408, after which hookd must close."""
    with Client(address) as client:
        started = time.monotonic()
        client.send(data)
        answer = client.response()
        elapsed = time.monotonic() - started
        assert answer.status == 408
        assert client.closed_by_peer(3)
    return elapsed


def test_slow_head_408_after_the_header_timeout(hookd):
    elapsed = seconds_to_408(b"POST /in HTTP/1.1\r\nHost: x\r\n", hookd.address)
    assert HEADER_TIMEOUT_S - EARLY_S <= elapsed < HEADER_TIMEOUT_S + LATE_S  # not the body's


def test_slow_body_408_after_the_body_timeout(hookd):
    head = b"POST /in HTTP/1.1\r\nHost: x\r\nX-Signature: 00\r\nContent-Length: 100\r\n\r\n"
    elapsed = seconds_to_408(head + b"{", hookd.address)
    assert BODY_TIMEOUT_S - EARLY_S <= elapsed < BODY_TIMEOUT_S + LATE_S  # not the header's


def test_idle_keep_alive_closed_silently(hookd):
    with Client(hookd.address) as client:
        client.send(segment_request("/in", b"{}", SECRET))
        assert client.response().status == 200
        assert client.closed_by_peer(5)
        assert client.buffer == b""  # no unsolicited 408 on an idle connection


def test_client_connection_close_is_honoured(hookd):
    raw = segment_request("/in", b"{}", SECRET, extra=b"Connection: close\r\n")
    answer, closed = send_raw(hookd, raw)
    assert answer.status == 200
    assert closed


def test_abrupt_disconnects_leave_server_healthy(hookd, broker):
    truncated = b'{"truncated":"' + unique_topic().encode() + b'"}'
    for data in (
        b"POST /in HTTP/1.1\r\n",
        segment_request("/in", truncated, SECRET)[:-3],  # signed, three body bytes short
        b"\x00",
    ):
        sock = socket.create_connection(hookd.address, timeout=5)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        # hookd saw the end of the stream once it closes its side (or resets)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        sock.close()
        if data.startswith(b"POST"):  # a request cut short is never answered, only closed
            assert answer == b"", answer[:80]
    mark = marker()
    assert request(hookd.address, segment_request("/in", mark, SECRET)).status == 200
    assert not [v for v in values_before(broker.address, hookd.topic, mark) if b"truncated" in v]
    assert hookd.process.poll() is None
    assert "Traceback" not in hookd.log()


def test_max_connections_503(start_hookd):
    server = start_hookd(
        [{"path": "/in", "topic": unique_topic(), "verify": "segment", "secrets": ["edge"]}],
        server={"max_connections": 2},
    )
    held = [Client(server.address) for _ in range(2)]
    try:
        for client in held:  # make sure both are accepted and counted
            client.send(segment_request("/in", b"{}", SECRET))
            assert client.response().status == 200
        answer, closed = send_raw(server, segment_request("/in", b"{}", SECRET))
        assert answer.status == 503
        assert answer.headers[b"retry-after"] == b"5"
        assert closed
        # the established connections still work
        held[0].send(segment_request("/in", b"{}", SECRET))
        assert held[0].response().status == 200
    finally:
        for client in held:
            client.close()
