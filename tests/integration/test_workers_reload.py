"""Several workers behind one port, and SIGHUP reload."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

from embedded_broker import read_topic, wait_for
from http_client import Client, request, segment_request
from support import http_get, metric, unique_topic

SECRET = b"w-secret"
#: How long a worker restart or a reload may take to show, on a shared machine.
SETTLE_S = 20


def route(topic: str, secret: str = "w-secret", path: str = "/in") -> dict[str, object]:
    return {"path": path, "topic": topic, "verify": "segment", "secrets": [secret]}


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(p) for p in file.read().split()]


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(int(link[len("socket:[") : -1]))
    return inodes


def worker_socket(pid: int) -> str | None:
    """The private admin socket a worker listens on (``…/worker-<index>.sock``); None for the
    admin process, which only connects to those."""
    inodes = _socket_inodes(pid)
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) < 8 or int(fields[6]) not in inodes:
                continue
            listening = int(fields[3], 16) & 0x10000  # __SO_ACCEPTCON
            if listening and os.path.basename(fields[7]).startswith("worker-"):
                return fields[7]
    return None


def workers_of(hookd) -> dict[int, str]:
    """Worker pid -> its private socket, for the supervisor's children that are workers."""
    found = {}
    for pid in children(hookd.process.pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            path = worker_socket(pid)
            if path is not None:
                found[pid] = path
    return found


def answered_by(path: str, status: int) -> float:
    """Requests to /in this one worker answered with ``status``, from its own /metrics."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    wanted = f'hookd_requests_total{{route="/in",code="{status}"}} '.encode()
    for line in data.split(b"\n"):
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


def during_with(address: tuple[str, int], secret: bytes) -> int | None:
    try:
        return request(address, segment_request("/in", b"{}", secret)).status
    except OSError:
        return None


def during(address: tuple[str, int]) -> int | None:
    try:
        return request(address, segment_request("/in", b'{"during":1}', SECRET)).status
    except OSError:
        return None


def test_two_workers_share_the_port_and_answer_as_one(broker, start_hookd):
    topic = unique_topic("workers")
    hookd = start_hookd([route(topic)], server={"workers": 2})
    assert wait_for(lambda: metric(hookd.admin_port, "hookd_workers") == 2, SETTLE_S)
    bodies = [f'{{"n":{i}}}'.encode() for i in range(40)]
    for body in bodies:  # a new connection each: the kernel spreads them over the workers
        assert request(hookd.address, segment_request("/in", body, SECRET)).status == 200
    assert {r.value() for r in read_topic(broker.address, topic, 40)} == set(bodies)
    text = http_get(hookd.admin_port, "/metrics")[1].decode()
    assert 'hookd_requests_total{route="/in",code="200"} 40' in text  # summed over workers
    assert http_get(hookd.admin_port, "/readyz")[0] == 200

    # a crashed worker is replaced, and the set keeps serving meanwhile
    workers = workers_of(hookd)
    assert len(workers) == 2 and len(children(hookd.process.pid)) == 3  # and the admin process
    victim, survivor = workers
    served_before = answered_by(workers[survivor], 200)
    os.kill(victim, signal.SIGKILL)
    # A connection the kernel queued on the dying worker's socket is reset; a sender retries.
    assert wait_for(lambda: during(hookd.address) == 200, SETTLE_S)
    assert answered_by(workers[survivor], 200) > served_before  # the survivor served
    assert wait_for(lambda: _replaced(workers_of(hookd), victim), SETTLE_S)
    restarted = [pid for pid in workers_of(hookd) if pid != survivor]
    assert survivor in workers_of(hookd) and restarted[0] not in workers  # one new, one kept
    assert workers_of(hookd)[restarted[0]] == workers[victim]  # in the dead worker's slot
    assert f"(pid {victim}) exited (signal SIGKILL)" in hookd.log()
    assert wait_for(lambda: metric(hookd.admin_port, "hookd_workers") == 2, SETTLE_S)
    # the restarted worker takes its share of new connections
    assert wait_for(
        lambda: during(hookd.address) == 200 and answered_by(workers[victim], 200) > 0,
        SETTLE_S,
    )

    hookd.signal(signal.SIGTERM)
    assert hookd.wait(30) == 0


def test_sighup_swaps_secrets_and_routes_without_dropping_requests(broker, start_hookd):
    topic = unique_topic("reload")
    hookd = start_hookd([route(topic, "old-secret")])
    # A request in flight across the reload: head and half the body before SIGHUP.
    body = b'{"in":"flight","pad":"' + b"x" * 200 + b'"}'
    raw = segment_request("/in", body, b"old-secret")
    held = Client(hookd.address)
    held.send(raw[: len(raw) - 100])

    config = hookd.config_path.read_text()
    hookd.config_path.write_text(
        config.replace('"old-secret"', '"old-secret", "new-secret"')
        + '\n[[routes]]\npath = "/added"\ntopic = "'
        + topic
        + '"\nverify = "segment"\n'
        'secrets = ["added-secret"]\n'
    )
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded: 2 routes" in hookd.log(), SETTLE_S)
    held.send(raw[len(raw) - 100 :])
    assert held.response().status == 200  # the connection and its request survived
    held.close()
    assert request(hookd.address, segment_request("/in", b"{}", b"new-secret")).status == 200
    assert request(hookd.address, segment_request("/added", b"{}", b"added-secret")).status == 200

    # rotation done: the old secret removed
    hookd.config_path.write_text(
        hookd.config_path.read_text().replace('"old-secret", "new-secret"', '"new-secret"')
    )
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: hookd.log().count("reloaded: 2 routes") == 2, SETTLE_S)
    assert request(hookd.address, segment_request("/in", b"{}", b"old-secret")).status == 401

    # an invalid config is refused and the running one stays
    hookd.config_path.write_text(hookd.config_path.read_text() + "\n[[routes]]\npath = 1\n")
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused, the running config stays" in hookd.log(), SETTLE_S)
    assert "routes[2].path" in hookd.log()
    assert request(hookd.address, segment_request("/in", b"{}", b"new-secret")).status == 200
    assert hookd.process.poll() is None
    assert body in {r.value() for r in read_topic(broker.address, topic, 4)}


def test_sighup_reaches_every_worker_and_survives_a_worker_restart(broker, start_hookd):
    topic = unique_topic("reload-workers")
    hookd = start_hookd([route(topic, "one")], server={"workers": 2})
    hookd.config_path.write_text(hookd.config_path.read_text().replace('"one"', '"two"'))
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: hookd.log().count("reloaded: 1 routes") == 2, SETTLE_S)
    for _ in range(10):  # new connections land on both workers
        assert request(hookd.address, segment_request("/in", b"{}", b"two")).status == 200
    # A worker restarted after the reload serves the reloaded secret, not the start-up one.
    workers = workers_of(hookd)
    victim, survivor = workers
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: _replaced(workers_of(hookd), victim), SETTLE_S)
    [restarted] = [pid for pid in workers_of(hookd) if pid != survivor]
    assert restarted not in workers
    assert wait_for(lambda: metric(hookd.admin_port, "hookd_workers") == 2, SETTLE_S)
    statuses = set()
    for _ in range(20):
        with contextlib.suppress(OSError):
            statuses.add(request(hookd.address, segment_request("/in", b"{}", b"one")).status)
    assert statuses == {401}
    for _ in range(20):
        assert wait_for(lambda: during_with(hookd.address, b"two") == 200, timeout=5)
    # … and both answers came from the restarted worker too, not only from the survivor
    path = workers[victim]
    assert answered_by(path, 401) > 0 and answered_by(path, 200) > 0


def _replaced(workers: dict[int, str], victim: int) -> bool:
    """Two workers and the victim not among them, judged on ONE reading of the worker list
    (two readings can straddle the restart backoff: the victim gone, its successor not yet)."""
    return len(workers) == 2 and victim not in workers
