"""The client's address over real sockets (issue 14): PROXY protocol v1 and v2 headers built
byte by byte, trusted and untrusted peers with X-Forwarded-For, allow_from refusing and
admitting (and re-read on SIGHUP), the 404 path in the log, and each record's
``hookd-source-ip`` read back from the embedded broker.

An untrusted peer is a connection from 127.0.0.2 (Linux routes all of 127.0.0.0/8 to
loopback); the trusted one comes from 127.0.0.1.
"""

from __future__ import annotations

import signal
import socket
import struct
import time

import pytest
from embedded_broker import read_topic, wait_for
from http_client import Client, Response, segment_request
from support import http_get, unique_topic

SECRET = b"client-address-secret"
TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"
V2_SIGNATURE = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def metric_line(admin_port: int, prefix: str) -> float:
    """The sum of the /metrics samples whose line starts with ``prefix``."""
    text = http_get(admin_port, "/metrics")[1].decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def connect(address: tuple[str, int], source: str = TRUSTED) -> Client:
    client = Client.__new__(Client)
    client.sock = socket.create_connection(address, 10, source_address=(source, 0))
    client.buffer = b""
    return client


def post(
    address: tuple[str, int],
    path: str,
    body: bytes,
    *,
    source: str = TRUSTED,
    prefix: bytes = b"",
    headers: bytes = b"",
) -> Response:
    with connect(address, source) as client:
        client.send(prefix + segment_request(path, body, SECRET, extra=headers))
        return client.response()


def source_ips(broker, topic: str, expected: int) -> dict[bytes, bytes]:
    """Each record's body → its hookd-source-ip."""
    records = read_topic(broker.address, topic, expected)
    return {record.value(): dict(record.headers())["hookd-source-ip"] for record in records}


def v1(source: str, port: int, destination_port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} {destination_port}\r\n".encode("ascii")


def v2_tcp6(source: bytes, destination: bytes, sport: int, dport: int, tlvs: bytes) -> bytes:
    block = source + destination + struct.pack("!HH", sport, dport) + tlvs
    # version 2 | command PROXY, AF_INET6 | STREAM, then the length of what follows
    return V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(block)) + block


def v2_local() -> bytes:
    return V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])


@pytest.fixture
def proxied(start_hookd):
    topic = unique_topic("proxy")
    hookd = start_hookd(
        [{"path": "/in", "topic": topic, "verify": "segment", "secrets": [SECRET.decode()]}],
        server={"proxy_protocol": True, "header_timeout_s": 1},
    )
    return hookd, topic


def test_proxy_protocol_v1_and_v2_name_the_client(broker, proxied):
    hookd, topic = proxied
    port = hookd.port
    v1_answer = post(hookd.address, "/in", b'{"n":"v1"}', prefix=v1("203.0.113.7", 50123, port))
    assert v1_answer.status == 200
    # v2, IPv6, with an AWS NLB TLV (0xEA, subtype 0x01, the VPC endpoint id), sent in pieces
    header = v2_tcp6(
        bytes.fromhex("20010db8000000000000000000000042"),
        bytes.fromhex("20010db8000000000000000000000001"),
        40000,
        port,
        bytes([0xEA]) + struct.pack("!H", 23) + b"\x01vpce-08d2bf15fac5001c9",
    )
    with connect(hookd.address) as client:
        for i in range(0, len(header), 7):
            client.send(header[i : i + 7])
            time.sleep(0.01)
        client.send(segment_request("/in", b'{"n":"v2"}', SECRET))
        assert client.response().status == 200
        # the same connection goes on: the header is read once
        client.send(segment_request("/in", b'{"n":"v2 again"}', SECRET))
        assert client.response().status == 200
    # v2 LOCAL (the balancer's own health check): the peer stands
    assert post(hookd.address, "/in", b'{"n":"local"}', prefix=v2_local()).status == 200
    assert source_ips(broker, topic, 4) == {
        b'{"n":"v1"}': b"203.0.113.7",
        b'{"n":"v2"}': b"2001:db8::42",
        b'{"n":"v2 again"}': b"2001:db8::42",
        b'{"n":"local"}': b"127.0.0.1",
    }


def test_proxy_protocol_refuses_a_connection_without_a_header(proxied):
    hookd, _ = proxied
    answer = post(hookd.address, "/in", b"{}")  # plain HTTP
    assert answer.status == 400
    assert answer.body == b'{"error":"malformed request: no PROXY protocol header"}\n'
    broken = b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 80\r\n"
    assert post(hookd.address, "/in", b"{}", prefix=broken).status == 400
    # half a header, then silence: closed once header_timeout_s (1 s) has passed, no answer
    with connect(hookd.address) as client:
        client.send(V2_SIGNATURE[:8])
        started = time.monotonic()
        assert client.closed_by_peer(timeout=5)
        assert 0.5 < time.monotonic() - started < 4
        assert client.buffer == b""
    refused = metric_line(hookd.admin_port, 'hookd_client_refusals_total{route="-"')
    assert refused == 2


@pytest.fixture
def fenced(start_hookd, tmp_path):
    open_topic, fenced_topic = unique_topic("open"), unique_topic("fenced")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "allow.txt").write_text("# the provider's ranges\n198.51.100.0/24\n")
    routes = [
        {"path": "/open", "topic": open_topic, "verify": "segment", "secrets": [SECRET.decode()]},
        {
            "path": "/fenced",
            "topic": fenced_topic,
            "verify": "segment",
            "secrets": [SECRET.decode()],
            "allow_from": [f"file:{lists / 'allow.txt'}"],
        },
    ]
    hookd = start_hookd(routes, server={"trusted_proxies": [f"{TRUSTED}/32"]})
    return hookd, open_topic, fenced_topic, lists / "allow.txt"


def xff(value: str) -> bytes:
    return f"X-Forwarded-For: {value}\r\n".encode()


def test_trusted_and_untrusted_peers_with_x_forwarded_for(broker, fenced):
    hookd, topic, _, _ = fenced
    # from the trusted proxy: the rightmost hop not trusted (the client's own entry is ignored)
    spoofed = xff("1.1.1.1, 198.51.100.20")
    assert post(hookd.address, "/open", b'{"n":"trusted"}', headers=spoofed).status == 200
    # from anyone else the header proves nothing: the peer
    untrusted = post(
        hookd.address, "/open", b'{"n":"untrusted"}', source=UNTRUSTED, headers=xff("1.1.1.1")
    )
    assert untrusted.status == 200
    # malformed: the peer
    bad = post(hookd.address, "/open", b'{"n":"bad"}', headers=xff("198.51.100.20, nonsense"))
    assert bad.status == 200
    assert source_ips(broker, topic, 3) == {
        b'{"n":"trusted"}': b"198.51.100.20",
        b'{"n":"untrusted"}': UNTRUSTED.encode(),
        b'{"n":"bad"}': TRUSTED.encode(),
    }


def test_allow_from_refuses_and_admits_and_is_reread_on_sighup(broker, fenced):
    hookd, _, topic, allow_file = fenced
    admitted = post(hookd.address, "/fenced", b'{"n":"in"}', headers=xff("198.51.100.20"))
    assert admitted.status == 200
    with connect(hookd.address) as client:
        # refused at the head: the body is never sent, the connection closes
        client.send(
            b"POST /fenced HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        refused = client.response()
        assert refused.status == 403
        assert refused.body == b'{"error":"source address not allowed"}\n'
        assert client.closed_by_peer()
    # a spoofed header from an untrusted peer: decided on the peer
    spoof = post(hookd.address, "/fenced", b"{}", source=UNTRUSTED, headers=xff("198.51.100.20"))
    assert spoof.status == 403
    assert metric_line(hookd.admin_port, 'hookd_client_refusals_total{route="/fenced"') == 2
    assert metric_line(hookd.admin_port, 'hookd_requests_total{route="/fenced",code="403"}') == 2

    allow_file.write_text("198.51.100.0/24\n203.0.113.0/24  # added\n")
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded: 2 routes" in hookd.log(), 20)
    again = post(hookd.address, "/fenced", b'{"n":"after"}', headers=xff("203.0.113.9"))
    assert again.status == 200
    assert source_ips(broker, topic, 2) == {
        b'{"n":"in"}': b"198.51.100.20",
        b'{"n":"after"}': b"203.0.113.9",
    }
    log = hookd.log()
    assert 'status=403 reason="source address not allowed" source_ip="203.0.113.9"' in log
    assert f'status=403 reason="source address not allowed" source_ip="{UNTRUSTED}"' in log


def test_a_404_logs_the_path_sanitised_and_cut(fenced):
    hookd, _, _, _ = fenced
    assert post(hookd.address, "/open/", b"{}").status == 404
    long_path = "/" + "a%2F" * 100
    assert post(hookd.address, long_path + "?token=query-secret-31", b"{}").status == 404
    log = hookd.log()
    assert 'route="-" path="/open/" status=404' in log
    assert 'path="' + long_path[:200] + '…"' in log
    assert "query-secret-31" not in log
