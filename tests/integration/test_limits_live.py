"""Issue 12, the HTTP side, against a running hookd on loopback: each test is the review's
reproduction, scaled down, and fails on the code before the fix.

1. chunked abuse: memory and CPU stay bounded (figures printed with ``pytest -s``);
2. 300 head-only connections do not stop a genuine delivery;
3. a client that does not read is aborted after ``write_timeout_s``: its socket is gone;
4. RLIMIT_NOFILE is raised to what ``max_connections`` needs, or hookd refuses to start; the
   admin listener cuts idle connections and holds a bounded number;
and the suspected ones: TLS handshakes count against ``max_connections``; ``/readyz`` is 503
while the in-flight budget is spent.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import embedded_broker
import pytest
from embedded_broker import wait_for
from http_client import Client, segment_request, segment_signature
from procstats import cpu_seconds, rss_kb
from support import ROOT, http_get, render_config, unique_topic, wait_ready
from test_tls import self_signed

SECRET = b"limits"


def route(topic: str | None = None) -> dict:
    return {"path": "/in", "topic": topic or unique_topic("limits"), "verify": "segment",
            "secrets": [SECRET.decode()]}  # fmt: skip


def answer_or_reset(sock: socket.socket, timeout: float = 10) -> bytes:
    """What the server wrote before it closed (b"" if it reset before a byte could be read)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """The server closed or reset the connection within ``timeout`` (reading what it sent)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


# -- 1. chunked abuse -------------------------------------------------------------------------

CHUNKS = 500_000


def test_one_byte_chunk_abuse_stays_bounded_in_memory_and_cpu(start_hookd):
    """Two connections each send 500 000 one-byte chunks (3 MB, a signed 500 KB body within
    max_body_bytes). hookd refuses each after about a thousand chunks with 400; its RSS grows
    by a few MB at most and the abuse costs it well under a second of CPU. Before the fix
    both bodies were taken chunk by chunk (each its own object) and accepted."""
    hookd = start_hookd([route()])
    pid = hookd.process.pid
    body = b"x" * CHUNKS
    stream = (
        b"POST /in HTTP/1.1\r\nHost: x\r\nX-Signature: " + segment_signature(SECRET, body)
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * CHUNKS + b"0\r\n\r\n"
    )  # fmt: skip
    rss_before, cpu_before = rss_kb(pid) * 1024, cpu_seconds(pid)
    peak = rss_before
    answers: list[bytes] = []

    def abuse() -> None:
        with socket.create_connection(hookd.address, 10) as sock:
            with contextlib.suppress(OSError):  # hookd closes mid-send: EPIPE or reset
                sock.sendall(stream)
            answers.append(answer_or_reset(sock))

    threads = [threading.Thread(target=abuse) for _ in range(2)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss_kb(pid) * 1024)
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    peak = max(peak, rss_kb(pid) * 1024)
    cpu = cpu_seconds(pid) - cpu_before
    growth = peak - rss_before
    print(f"\nchunk abuse (2 x {CHUNKS} one-byte chunks): RSS +{growth / 2**20:.1f} MiB, "
          f"{cpu:.2f}s CPU; answers {[a[:12] for a in answers]}")  # fmt: skip
    for answer in answers:  # the 400 may be lost to the reset of a client still sending
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert growth < 16 * 2**20
    assert cpu < 1.5
    assert http_get(hookd.admin_port, "/readyz")[0] == 200


# -- 2. heads alone ---------------------------------------------------------------------------


def test_head_only_connections_do_not_stop_a_genuine_delivery(start_hookd):
    """300 connections announce a 3600-byte body each (together more than the 1 MiB in-flight
    budget) and send no byte of it; a signed delivery on a new connection still gets 200, and
    none of the 300 is refused. Before the fix the announced lengths were reserved: the
    budget was full after 291 heads and the genuine delivery got 503."""
    hookd = start_hookd([route()], server={"max_in_flight_bytes": 1_048_576})
    head = b"POST /in HTTP/1.1\r\nHost: x\r\nX-Signature: 00\r\nContent-Length: 3600\r\n\r\n"
    held = []
    try:
        for _ in range(300):
            sock = socket.create_connection(hookd.address, 5)
            sock.sendall(head)
            held.append(sock)
        with Client(hookd.address, timeout=10) as client:
            client.send(segment_request("/in", b'{"genuine":"' + b"g" * 1000 + b'"}', SECRET))
            answer = client.response()
        assert answer.status == 200, answer
        for sock in held:  # nothing was answered to the heads (no 503)
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in held:
            sock.close()


# -- 3. a client that does not read -----------------------------------------------------------

TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    return struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


def test_a_client_that_does_not_read_is_aborted_and_its_socket_is_gone(start_hookd):
    """A client pipelines requests and never reads the answers: hookd stops reading it, and
    write_timeout_s later aborts the connection (RST): the socket leaves ESTABLISHED and the
    connection is no longer counted. Before the fix close() waited for the client to read,
    forever, while hookd_connections already said 0."""
    hookd = start_hookd(
        [route()], server={"write_timeout_s": 1, "header_timeout_s": 1, "idle_timeout_s": 60}
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(hookd.address)
    wrong = segment_request("/in", b"{}", b"not-the-secret")  # 401, keep-alive
    batch = wrong * 200
    sock.settimeout(0.5)
    sent = 0
    try:
        while sent < 256 * 2**20:
            sock.sendall(batch)
            sent += len(batch)
    except TimeoutError:
        pass  # hookd stopped reading: its answers are not being read
    stuck_at = time.monotonic()
    assert sent < 256 * 2**20, "hookd never stopped reading"
    assert tcp_state(sock) == TCP_ESTABLISHED
    gone = wait_for(lambda: tcp_state(sock) != TCP_ESTABLISHED, timeout=8, interval=0.1)
    elapsed = time.monotonic() - stuck_at
    print(f"\nnon-reading client: {sent / 2**20:.1f} MiB sent, cut after {elapsed:.1f}s")
    assert gone, "the connection outlived write_timeout_s"
    with pytest.raises(ConnectionResetError):  # aborted, not closed after a drain
        while sock.recv(65536):
            pass
    sock.close()
    assert wait_for(lambda: _metric(hookd, "hookd_connections") == 0, timeout=5)


def _metric(hookd, name: str) -> float:
    for line in http_get(hookd.admin_port, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# -- 4. file descriptors ----------------------------------------------------------------------


def start_with_nofile(broker, tmp_path, soft: int, hard: int, server: dict):
    port, admin_port = embedded_broker.free_port(), embedded_broker.free_port()
    config = tmp_path / "hookd.toml"
    config.write_text(
        render_config(
            {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}", **server},
            {"broker_address": broker.address, "ack_timeout_s": 5},
            [route()],
        )
    )
    log = tmp_path / "hookd.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "hookd.cli", "serve", "--config", str(config)],
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=limit,
    )
    return process, admin_port, log


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_hard_fd_limit_too_low_for_max_connections_refuses_to_start(broker, tmp_path):
    process, _, log = start_with_nofile(broker, tmp_path, 1024, 1024, {})
    try:
        assert process.wait(20) == 1
    finally:
        _stop(process)
    text = log.read_text()
    assert "server.max_connections = 10000 needs 10320 open files" in text, text
    assert "hard limit RLIMIT_NOFILE is 1024" in text
    assert "lower server.max_connections to 704" in text


def test_the_soft_fd_limit_is_raised_to_what_max_connections_needs(broker, tmp_path):
    process, admin_port, log = start_with_nofile(
        broker, tmp_path, 512, 4096, {"max_connections": 2000}
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if http_get(admin_port, "/readyz")[0] == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        soft, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
        assert (soft, hard) == (2000 + 64 + 256, 4096)
    finally:
        _stop(process)


def test_the_admin_listener_caps_and_times_out_idle_connections(start_hookd):
    """100 idle connections to the admin port: the oldest are dropped beyond 64, probes keep
    working, and the rest are cut 10 s after they opened. Before the fix all stayed open."""
    hookd = start_hookd([route()])
    opened = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", hookd.admin_port), 5) for _ in range(100)]
    try:
        assert http_get(hookd.admin_port, "/readyz")[0] == 200
        assert all(closed_within(sock, 0.5) for sock in idle[:36])  # evicted at once
        for sock in idle[37:]:  # then the timeout cuts the others
            assert closed_within(sock, max(opened + 13 - time.monotonic(), 0.1))
        fds = len(os.listdir(f"/proc/{hookd.process.pid}/fd"))
        print(f"\nadmin: 100 idle connections, cut within {time.monotonic() - opened:.1f}s; "
              f"hookd holds {fds} fds after")  # fmt: skip
    finally:
        for sock in idle:
            sock.close()


# -- TLS handshakes and /readyz ---------------------------------------------------------------


def test_tls_handshakes_count_against_max_connections(start_hookd, tmp_path):
    """Three TCP connections that never start their handshake fill max_connections = 3: a
    real TLS client is answered 503. The handshakes are cut after header_timeout_s, and the
    next client gets its 200. Before the fix handshakes were not counted (60 s timeout)."""
    cert, key = self_signed(tmp_path)
    hookd = start_hookd(
        [route()],
        server={"tls_cert": cert, "tls_key": key, "max_connections": 3, "header_timeout_s": 2},
    )
    client = ssl.create_default_context(cafile=cert)

    def deliver() -> bytes:
        with (
            socket.create_connection(hookd.address, 10) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(segment_request("/in", b"{}", SECRET))
            return tls.recv(65536)

    silent = [socket.create_connection(hookd.address, 5) for _ in range(3)]
    try:
        time.sleep(0.3)
        assert deliver().startswith(b"HTTP/1.1 503 ")
        for sock in silent:  # cut at the handshake timeout
            assert answer_or_reset(sock, timeout=5) == b""
        assert wait_for(lambda: deliver().startswith(b"HTTP/1.1 200 "), timeout=5)
    finally:
        for sock in silent:
            sock.close()


def test_readyz_is_503_while_the_in_flight_budget_is_spent(start_hookd):
    hookd = start_hookd([route()], server={"max_in_flight_bytes": 65536})
    head = b"POST /in HTTP/1.1\r\nHost: x\r\nX-Signature: 00\r\nContent-Length: 63000\r\n\r\n"
    with socket.create_connection(hookd.address, 5) as slow:
        slow.sendall(head + b"y" * 62_000)  # 3536 bytes left, under 65536 // 16
        answers: list[tuple[int, bytes]] = []

        def spent() -> bool:
            answers.append(http_get(hookd.admin_port, "/readyz"))
            return answers[-1][0] == 503

        assert wait_for(spent, timeout=5), answers[-1]
        assert b"in-flight budget spent" in answers[-1][1], answers[-1]
    assert wait_for(lambda: http_get(hookd.admin_port, "/readyz")[0] == 200, timeout=5)
    wait_ready(hookd)
