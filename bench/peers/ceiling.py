"""The ceiling: a bare uvloop server that answers every request with a canned 200.

**This is not a webhook receiver.** It does not verify signatures, does not publish to Kafka
and does not wait for anything: it is the least work any Python server on uvloop can do per
request on this core, so its CPU per request is the floor (and its requests/s the ceiling)
that hookd's HTTP layer and pipeline are measured against.

Per connection it only *frames* requests: it finds the end of each head (``\\r\\n\\r\\n``),
reads ``Content-Length`` (0 when absent) and skips that many body bytes without keeping them,
then writes ``HTTP/1.1 200 OK`` with ``Content-Length: 0``. It is keep-alive aware: a request
with ``Connection: close`` (or an HTTP/1.0 request without ``Connection: keep-alive``) gets
``Connection: close`` and the connection is closed after the answer. Pipelined requests are
answered in order with one write per ``data_received``; each request is answered once its
body has arrived. It does no other parsing and no
validation: chunked bodies, bad lengths and oversize heads get a canned 400 and a close.

``--workers N`` forks N processes that each bind the port with SO_REUSEPORT, as hookd's
workers do.

Run: ``python bench/peers/ceiling.py --port 8083 --secret x`` (the broker, topic, secret and
path options of common.py are accepted and ignored, so bench/run.py starts it like a peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import uvloop
from common import PeerSettings, parse_settings

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024


def wants_close(head: bytes) -> bool:
    """``head`` is lower-cased, without its final CRLF CRLF."""
    at = head.find(b"\r\nconnection:")
    if at >= 0:
        end = head.find(b"\r\n", at + 2)
        value = head[at + 13 : end if end >= 0 else len(head)]
        if b"close" in value:
            return True
        if b"keep-alive" in value:
            return False
    line_end = head.find(b"\r\n")
    first_line = head[:line_end] if line_end >= 0 else head
    return first_line.endswith(b"http/1.0")


class Canned(asyncio.Protocol):
    """Frame requests (head end + Content-Length) and answer each with a canned 200.

    A request is answered once its whole body has arrived, as a real server would (answering
    and closing with body bytes still unread would reset the connection).
    """

    __slots__ = ("buffer", "pending", "skip", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.skip = 0  # body bytes of the current request still to arrive
        self.pending = OK  # its answer, written once they have

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answers = []
        if self.skip:
            if len(data) < self.skip:
                self.skip -= len(data)
                return
            data = data[self.skip :]
            self.skip = 0
            answers.append(self.pending)
        close = bool(answers) and answers[-1] is not OK
        buf = self.buffer + data if self.buffer else data
        while buf and not close:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    answers.append(BAD)
                    close = True
                break
            head = buf[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                try:
                    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                except ValueError:
                    length = -1
            if length < 0 or b"\r\ntransfer-encoding:" in head:
                answers.append(BAD)
                close = True
                break
            answer = OK_CLOSE if wants_close(head) else OK
            start = end + 4 + length
            if start > len(buf):  # the body is still arriving: answer when it has
                self.skip, self.pending, buf = start - len(buf), answer, b""
                break
            answers.append(answer)
            close = answer is OK_CLOSE
            buf = buf[start:]
        self.buffer = b"" if close else buf
        transport = self.transport
        if transport is None:
            return
        if answers:
            transport.write(answers[0] if len(answers) == 1 else b"".join(answers))
        if close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def bind(settings: PeerSettings) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(settings: PeerSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(Canned, sock=bind(settings), backlog=1024)
    print(
        f"bench-ceiling: canned 200, no verification, no publishing; "
        f"loop={type(loop).__module__}.{type(loop).__qualname__} pid={os.getpid()}",
        flush=True,
    )
    await stop
    server.close()


def run_worker(settings: PeerSettings) -> None:
    uvloop.run(serve(settings))


def main() -> None:
    settings = parse_settings(__doc__.splitlines()[0])
    if settings.workers == 1:
        run_worker(settings)
        return
    children = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                run_worker(settings)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        while True:
            try:
                _, code = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)


if __name__ == "__main__":
    main()
