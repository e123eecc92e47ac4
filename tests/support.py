"""Test support: hookd as a subprocess with generated configs, load and faults around it.

The broker, ports, polling (``wait_for``) and reading records back are the shared harness's
(scripts/embedded_broker.py); /proc readings are scripts/procstats.py's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import embedded_broker
from embedded_broker import wait_for
from http_client import Client, segment_request

ROOT = Path(__file__).resolve().parent.parent


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def render_config(
    server: dict[str, Any],
    kafka: dict[str, Any],
    routes: list[dict[str, Any]],
    spool: dict[str, Any] | None = None,
) -> str:
    """TOML has no null: a ``None`` value in ``server`` or ``kafka`` leaves the key out, so
    ``kafka={"broker_address": None}`` overrides the launcher's default with no address."""
    lines = ["[server]", *(f"{k} = {toml_value(v)}" for k, v in server.items() if v is not None)]
    lines += ["", "[kafka]", *(f"{k} = {toml_value(v)}" for k, v in kafka.items() if v is not None)]
    if spool is not None:
        lines += ["", "[spool]", *(f"{k} = {toml_value(v)}" for k, v in spool.items())]
    for route in routes:
        lines += ["", "[[routes]]", *(f"{k} = {toml_value(v)}" for k, v in route.items())]
    return "\n".join(lines) + "\n"


@dataclass
class HookdProcess:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    config_path: Path
    log_path: Path
    routes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def metric(port: int, name: str) -> float:
    """One unlabelled sample from the admin listener's /metrics."""
    for line in http_get(port, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


class Sampler:
    """Calls ``probe`` every ``interval`` seconds in a thread, keeping (monotonic time, value)."""

    def __init__(self, probe: Callable[[], Any], interval: float = 0.2) -> None:
        self.samples: list[tuple[float, Any]] = []
        self._probe = probe
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                value = self._probe()
            except OSError as exc:
                value = exc
            self.samples.append((time.monotonic(), value))

    def between(self, start: float, end: float) -> list[Any]:
        return [value for at, value in self.samples if start <= at < end]


def wait_ready(hookd: HookdProcess, timeout: float = 60) -> None:
    def ready() -> bool:
        if hookd.process.poll() is not None:
            raise RuntimeError(f"hookd exited with {hookd.process.returncode}:\n{hookd.log()}")
        try:
            return http_get(hookd.admin_port, "/readyz")[0] == 200
        except OSError:
            return False

    if not wait_for(ready, timeout, interval=0.1):
        raise RuntimeError(f"hookd not ready after {timeout}s:\n{hookd.log()}")


HookdFactory = Callable[..., HookdProcess]


class Launcher:
    """Starts hookd processes with generated configs; stops them all at the end."""

    def __init__(self, broker: embedded_broker.Broker | None, directory: Path) -> None:
        """``broker``: the default broker address, or ``None`` when every start names one."""
        self.broker = broker
        self.directory = directory
        self.started: list[HookdProcess] = []

    def start(
        self,
        routes: list[dict[str, Any]],
        server: dict[str, Any] | None = None,
        kafka: dict[str, Any] | None = None,
        broker_address: str | None = None,
        ready: bool = True,
        env: dict[str, str] | None = None,
        spool: dict[str, Any] | None = None,
    ) -> HookdProcess:
        port, admin_port = embedded_broker.free_port(), embedded_broker.free_port()
        server_config = {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}"}
        if broker_address is None:
            assert self.broker is not None, "no broker to default to"
            broker_address = self.broker.address
        kafka_config = {"broker_address": broker_address, "ack_timeout_s": 5}
        n = len(self.started)
        config_path = self.directory / f"hookd-{n}.toml"
        config_path.write_text(
            render_config(
                {**server_config, **(server or {})},
                {**kafka_config, **(kafka or {})},
                routes,
                spool,
            )
        )
        log_path = self.directory / f"hookd-{n}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "hookd.cli", "serve", "--config", str(config_path)],
            stdout=open(log_path, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        hookd = HookdProcess(process, port, admin_port, config_path, log_path, routes)
        self.started.append(hookd)
        if ready:
            wait_ready(hookd)
        return hookd

    def stop_all(self) -> None:
        for hookd in self.started:
            hookd.stop()


class Load:
    """Keep-alive clients sending unique bodies until the server stops answering."""

    def __init__(
        self,
        address: tuple[str, int],
        path: str,
        secret: bytes,
        clients: int,
        max_seconds: float,
        tag: str = "",
    ) -> None:
        self.tag = tag
        self.address = address
        self.path = path
        self.secret = secret
        self.deadline = time.monotonic() + max_seconds
        self.accepted: list[bytes] = []
        self.statuses: dict[int, int] = {}
        #: Every answer: (monotonic time the request was sent, time answered, status, body).
        self.answers: list[tuple[float, float, int, bytes]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self.threads:
            thread.join(30)

    def statuses_between(self, start: float, end: float) -> dict[int, int]:
        """Answers to requests sent within [start, end) (monotonic), by status."""
        counts: dict[int, int] = {}
        for sent, _, status, _ in self.answers:
            if start <= sent < end:
                counts[status] = counts.get(status, 0) + 1
        return counts

    def first_200_after(self, moment: float) -> float | None:
        """When the first request sent after ``moment`` was answered 200."""
        return min(
            (done for sent, done, st, _ in self.answers if sent >= moment and st == 200),
            default=None,
        )

    def request(self, body: bytes) -> bytes:
        """The request bytes that carry ``body`` (subclasses sign it their own way)."""
        return segment_request(self.path, body, self.secret)

    def _client(self, index: int) -> None:
        n = 0
        while time.monotonic() < self.deadline:
            try:
                with Client(self.address, timeout=15) as client:
                    while time.monotonic() < self.deadline:
                        body = f'{{"tag":"{self.tag}","client":{index},"n":{n}}}'.encode()
                        n += 1
                        sent = time.monotonic()
                        client.send(self.request(body))
                        status = client.response().status
                        with self.lock:
                            self.answers.append((sent, time.monotonic(), status, body))
                            self.statuses[status] = self.statuses.get(status, 0) + 1
                            if status == 200:
                                self.accepted.append(body)
                        if status != 200:
                            time.sleep(0.05)  # a sender backing off before its retry
                            break
            except OSError:
                time.sleep(0.01)  # refused or reset while the server goes away


class TcpProxy:
    """A loopback TCP proxy whose link can be cut and restored, to stand between hookd and the
    broker (the broker advertises the proxy's port)."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or embedded_broker.free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
