"""Raw-socket HTTP for tests: send exact bytes, read exact responses."""

from __future__ import annotations

import hashlib
import hmac
import socket
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def segment_signature(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha1).hexdigest().encode()


def segment_request(path: str, body: bytes, secret: bytes, *, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: hookd\r\nContent-Type: application/json\r\n".encode()
        + b"X-Signature: "
        + segment_signature(secret, body)
        + b"\r\n"
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class Client:
    """A connection that reads one response at a time (Content-Length bodies only)."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a response; got {self.buffer!r}")
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            if not self._fill():
                raise ConnectionError("closed mid-body")
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        response = Response(status, headers, rest[:length])
        if status == 100:
            return self.response()
        return response

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF or reset) within the timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> Response:
    with Client(address, timeout) as client:
        client.send(data)
        return client.response()
