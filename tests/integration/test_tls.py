"""TLS on the public listener, with a real TLS client."""

from __future__ import annotations

import datetime
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from http_client import segment_request
from readback import values_before
from support import unique_topic


def self_signed(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_tls_listener_accepts_a_verified_tls_client(broker, start_hookd, tmp_path):
    import socket

    cert, key = self_signed(tmp_path)
    topic = unique_topic("tls")
    hookd = start_hookd(
        [{"path": "/in", "topic": topic, "verify": "segment", "secrets": ["tls"]}],
        server={"tls_cert": cert, "tls_key": key},
    )
    # Plain HTTP on the TLS port: the handshake fails and hookd closes the connection without
    # a byte of answer (no HTTP, no TLS alert), and publishes nothing.
    plain_body = b'{"over":"plain http"}'
    with socket.create_connection(hookd.address, 5) as plain:
        plain.sendall(segment_request("/in", plain_body, b"tls"))
        assert plain.recv(65536) == b""  # EOF, not a timeout and not a reset

    client = ssl.create_default_context(cafile=cert)  # verifies the chain and the host name
    body = b'{"over":"tls"}'
    with (
        socket.create_connection(hookd.address, 10) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.sendall(segment_request("/in", body, b"tls"))
        answer = tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    # the TLS request's record is the topic's first: the plain one was not published before it
    assert values_before(broker.address, topic, body) == []
    assert hookd.process.poll() is None


def test_unreadable_certificate_is_a_startup_error(start_hookd, tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate")
    hookd = start_hookd(
        [{"path": "/in", "topic": unique_topic(), "verify": "segment", "secrets": ["tls"]}],
        server={"tls_cert": str(tmp_path / "bad.pem"), "tls_key": str(tmp_path / "bad.pem")},
        ready=False,
    )
    assert hookd.wait(60) == 1
    assert "cannot start: cannot load the TLS certificate or key" in hookd.log()
