"""How many processes serve: ``serve`` runs one in this process, or supervises N that share
the public port with SO_REUSEPORT (``workers = N``).

The supervisor is a small synchronous process manager: it forks the workers after the heavy
imports and the start-up checks (``hookd.startup.prepare``), so each worker starts in
milliseconds and owns its own producer and spool file; it restarts a worker that dies, with
backoff; it passes SIGTERM, SIGINT and SIGHUP on to every worker. It never runs an event loop
itself, so forking stays safe. One more child, the admin process, serves ``admin_listen`` for
the whole set from ``hookd.admin.WorkerSetView``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

from hookd.admin import WORKER_QUERY_TIMEOUT_S, AdminLimits, AdminProtocol, WorkerSetView
from hookd.app import run_worker
from hookd.config import Config
from hookd.logs import tag_worker
from hookd.routing import RouteTable
from hookd.startup import (
    Prepared,
    ReloadRefused,
    StartupError,
    ensure_fd_limit,
    listen_socket,
    plan_reload,
    prepare,
)

log = logging.getLogger("hookd.workers")

#: First restart delay of a crashed worker; doubles per crash up to the maximum.
RESTART_BACKOFF_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
#: A worker that ran this long before dying restarts without accumulated backoff.
HEALTHY_AFTER_S = 60.0
#: How often the supervisor asks each worker's ``/healthz``; a worker that answers 503 (wedged)
#: or does not answer this many times in a row is restarted, as a crashed one is.
HEALTH_INTERVAL_S = 5.0
UNHEALTHY_CHECKS = 3
#: A worker is asked only once it has had this long to start.
HEALTH_GRACE_S = 15.0


def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Serve with ``server.workers`` processes (0: one per CPU); return the exit status."""
    ensure_fd_limit(config.server)  # inherited by every worker
    prepared = prepare(config, reread)
    workers = config.server.workers or os.cpu_count() or 1
    if workers == 1:
        uvloop.run(run_worker(prepared))
        return 0
    return supervise(prepared, workers)


def supervise(prepared: Prepared, count: int) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; exit status 0 when every worker drained."""
    gc.collect()  # drop the start-up Kafka clients before forking
    # Frozen before the fork, what start-up made stays out of every worker's collections, which
    # would otherwise write to (and so copy) each page the workers share (Hookd.run freezes
    # what a worker makes before it serves).
    gc.freeze()
    server = prepared.config.server
    # Fail here, clearly, rather than in N crash-looping children.
    listen_socket(server.listen_address, reuse_port=True).close()
    listen_socket(server.admin_address).close()
    runtime = Path(tempfile.mkdtemp(prefix="hookd-"))
    sockets = [str(runtime / f"worker-{index}.sock") for index in range(count)]
    try:
        return _Supervisor(prepared, sockets).run()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


class _Supervisor:
    def __init__(self, prepared: Prepared, sockets: list[str]) -> None:
        self._prepared = prepared
        self._sockets = sockets
        self._workers: dict[int, int] = {}  # pid -> worker index
        self._started_at: dict[int, float] = {}  # worker index -> monotonic start
        self._backoff: dict[int, float] = {}
        self._restart_at: dict[int, float] = {}
        self._admin_pid: int | None = None
        self._stopping = False
        self._failed = False
        self._hup_pending = False
        self._latest: RouteTable | None = None  # the routes last reloaded with SIGHUP
        self._unhealthy: dict[int, int] = {}  # worker index -> failed health checks in a row
        self._next_health_check = 0.0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        for index in range(len(self._sockets)):
            self._start_worker(index)
        self._admin_pid = _fork(lambda: _admin_main(self._prepared, self._sockets))
        server = self._prepared.config.server
        log.info(
            "supervisor: %d workers listening on %s (admin %s)",
            len(self._sockets),
            server.listen,
            server.admin_listen,
        )
        while not self._stopping:
            if self._hup_pending:
                self._remember_reload()
            self._reap()
            self._check_health()
            now = time.monotonic()
            for index, due in list(self._restart_at.items()):
                if now >= due:
                    del self._restart_at[index]
                    self._start_worker(index)
            time.sleep(0.1)
        return self._shut_down()

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: object) -> None:
        for pid in self._workers:
            _signal(pid, signal.SIGHUP)
        self._hup_pending = True

    def _remember_reload(self) -> None:
        """Keep the routes the workers just reloaded, so that a worker restarted later serves
        them too, not the start-up routes and secrets. ``plan_reload`` contacts no broker: no
        Kafka client may exist in this process, which forks."""
        self._hup_pending = False
        if self._prepared.reread is None:
            return
        # An invalid config: the workers refuse it too and log why; the last good one stays.
        # The redelivery windows kept from the start-up routes are empty: this process serves
        # nothing.
        with contextlib.suppress(ReloadRefused):
            _, self._latest = plan_reload(self._prepared, self._prepared.routes)

    def _check_health(self) -> None:
        """Restart a worker that stays wedged (``/healthz`` 503: deliveries failing while the
        broker answers) or whose loop stopped answering: SIGTERM drains it and hands its spool
        over, ``_reap`` starts it again."""
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + HEALTH_INTERVAL_S
        for pid, index in list(self._workers.items()):
            if now - self._started_at[index] < HEALTH_GRACE_S:
                continue
            problem = _health(self._sockets[index])
            if problem is None:
                self._unhealthy.pop(index, None)
                continue
            count = self._unhealthy[index] = self._unhealthy.get(index, 0) + 1
            if count == UNHEALTHY_CHECKS:
                log.error("worker %d (pid %d) unhealthy: %s; restarting it", index, pid, problem)
                _signal(pid, signal.SIGTERM)
            elif count > UNHEALTHY_CHECKS:  # it did not drain
                _signal(pid, signal.SIGKILL)

    def _start_worker(self, index: int) -> None:
        latest = self._latest
        self._unhealthy.pop(index, None)
        pid = _fork(lambda: _worker_main(self._prepared, index, self._sockets, latest))
        self._workers[pid] = index
        self._started_at[index] = time.monotonic()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._admin_pid:
                log.error("admin process exited (%s); restarting it", _describe(status))
                self._admin_pid = _fork(lambda: _admin_main(self._prepared, self._sockets))
                continue
            index = self._workers.pop(pid, None)
            if index is None:
                continue
            lived = time.monotonic() - self._started_at[index]
            backoff = self._backoff.get(index, RESTART_BACKOFF_S / 2) * 2
            if lived >= HEALTHY_AFTER_S:
                backoff = RESTART_BACKOFF_S
            backoff = min(backoff, RESTART_BACKOFF_MAX_S)
            self._backoff[index] = backoff
            self._restart_at[index] = time.monotonic() + backoff
            log.error(
                "worker %d (pid %d) exited (%s) after %.1fs; restarting in %.1fs",
                index,
                pid,
                _describe(status),
                lived,
                backoff,
            )

    def _shut_down(self) -> int:
        """Fan SIGTERM out, wait for every worker's drain (bounded), then stop admin."""
        log.info("supervisor: stopping %d workers", len(self._workers))
        for pid in self._workers:
            _signal(pid, signal.SIGTERM)
        kafka = self._prepared.config.kafka
        deadline = time.monotonic() + kafka.ack_timeout_s + 10
        while self._workers and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            if pid == self._admin_pid:
                self._admin_pid = None
            elif self._workers.pop(pid, None) is not None and status != 0:
                self._failed = True
                log.error("worker pid %d exited (%s) while draining", pid, _describe(status))
        for pid in self._workers:
            log.error("worker pid %d did not drain in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
            self._failed = True
        if self._admin_pid is not None:
            _signal(self._admin_pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._admin_pid, 0)
        return 1 if self._failed else 0


def _fork(child: Callable[[], None]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop handles it
        child()
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        code = 1
    except BaseException:
        log.exception("child failed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.waitstatus_to_exitcode(status)}"


def _worker_main(
    prepared: Prepared, index: int, sockets: list[str], latest: RouteTable | None
) -> None:
    tag_worker(index)
    if latest is not None:  # restarted after a reload: serve what the others serve
        prepared = dataclasses.replace(prepared, routes=latest)
    admin_path = sockets[index]
    if os.path.exists(admin_path):
        os.unlink(admin_path)  # left by a predecessor that crashed
    uvloop.run(run_worker(prepared, index, len(sockets), reuse_port=True, admin_path=admin_path))


def _health(path: str) -> str | None:
    """Ask a worker's ``/healthz`` (blocking, bounded): ``None`` when it answers 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WORKER_QUERY_TIMEOUT_S)
            sock.connect(path)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: worker\r\n\r\n")
            raw = b""
            while chunk := sock.recv(4096):
                raw += chunk
    except OSError as exc:
        return f"not answering /healthz ({exc.strerror or exc})"
    head, _, body = raw.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200"):
        return None
    return body.decode(errors="replace").strip() or "no answer"


def _admin_main(prepared: Prepared, sockets: list[str]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
        view = WorkerSetView(sockets)
        sock = listen_socket(prepared.config.server.admin_address)
        limits = AdminLimits()
        server = await loop.create_server(lambda: AdminProtocol(view, limits), sock=sock)
        await stop.wait()
        server.close()

    uvloop.run(main())
