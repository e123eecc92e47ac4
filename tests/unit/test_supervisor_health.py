"""The supervisor restarts a worker that stays wedged or stops answering, as a crashed one."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from hookd import workers
from hookd.workers import UNHEALTHY_CHECKS, _health, _Supervisor


def serve_once_per_accept(path: Path, answer: bytes) -> threading.Thread:
    """A unix socket answering every connection with ``answer``, like a worker's admin socket."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)

    def run() -> None:
        with server:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(4096)
                    conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_health_reads_a_worker_answer(tmp_path: Path):
    healthy, wedged = tmp_path / "ok.sock", tmp_path / "wedged.sock"
    serve_once_per_accept(healthy, b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
    serve_once_per_accept(
        wedged, b"HTTP/1.1 503 Service Unavailable\r\n\r\nwedged: deliveries failing for 130s\n"
    )
    assert _health(str(healthy)) is None
    assert _health(str(wedged)) == "wedged: deliveries failing for 130s"
    assert (_health(str(tmp_path / "missing.sock")) or "").startswith("not answering /healthz")


def test_a_worker_unhealthy_three_checks_in_a_row_is_terminated_then_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(workers, "_signal", lambda pid, signum: sent.append((pid, signum)))
    supervisor = _Supervisor(cast(Any, None), [str(tmp_path / "worker-0.sock")])  # no socket
    supervisor._workers = {4242: 0}
    supervisor._started_at = {0: -1e9}  # long past its start-up grace

    def check() -> None:
        supervisor._next_health_check = 0.0
        supervisor._check_health()

    for _ in range(UNHEALTHY_CHECKS - 1):
        check()
    assert sent == []  # a blip is not a wedge
    check()
    assert sent == [(4242, signal.SIGTERM)]
    check()
    assert sent[-1] == (4242, signal.SIGKILL)  # it did not drain


def test_a_worker_in_its_start_up_grace_is_not_asked(tmp_path: Path, monkeypatch):
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(workers, "_signal", lambda pid, signum: sent.append((pid, signum)))
    supervisor = _Supervisor(cast(Any, None), [str(tmp_path / "worker-0.sock")])
    supervisor._workers = {4242: 0}
    supervisor._started_at = {0: float("inf")}  # just started
    for _ in range(UNHEALTHY_CHECKS + 1):
        supervisor._next_health_check = 0.0
        supervisor._check_health()
    assert sent == []
