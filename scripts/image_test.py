"""Smoke-test hookd's container images with podman, against the embedded broker.

    .venv/bin/python scripts/image_test.py localhost/hookd:latest localhost/hookd:minimal

For each image: a signed GitHub delivery gets 200 and lands in Kafka; the process runs as
uid 10001 on a read-only root filesystem, with the spool on a volume; /healthz and /readyz
answer and the image's HEALTHCHECK passes; with the broker frozen, an ``ack = "spool"``
delivery gets 200 from the spool, ``podman stop`` drains and exits 0, and after a restart the
spooled record reaches Kafka. Prints time to ready and the RSS inside the container; exits
non-zero on the first failure. The container shares the host's network (loopback only): the
broker, the webhook port and admin port 9090 (the HEALTHCHECK's) are on 127.0.0.1.

The broker, the port, polling and reading the topic back are the harness the tests and the bench
share (embedded_broker.py); the container's RSS is procstats.py's, next to it in scripts/, so
``PYTHONPATH=scripts`` (as ``make image-test`` sets it) is all this script needs.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import embedded_broker
from embedded_broker import holds, wait_for
from procstats import memory_kb

ADMIN_PORT = 9090  # the Dockerfile's HEALTHCHECK asks this port
UID = 10001
SECRET = "image-test-secret"
TOPIC = "image-test"
#: podman sets the container's process limit explicitly; on hosts where it may not be raised,
#: a value at or under the host's own (seen: 32768 works where the host's 96365 is refused).
NPROC = 32768
CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[kafka]
broker_address = "${{KAFKA_BROKER}}"
ack_timeout_s = 5

[spool]
path = "/var/lib/hookd/spool"

[[routes]]
path = "/github"
topic = "{topic}"
verify = "github"
secrets = ["${{GITHUB_SECRET}}"]

[[routes]]
path = "/spooled"
topic = "{topic}"
verify = "github"
secrets = ["${{GITHUB_SECRET}}"]
ack = "spool"
"""


class Failed(Exception):
    """A check did not hold."""


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise Failed(f"podman {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def call(
    method: str, port: int, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def deliver(port: int, path: str, marker: str) -> int:
    body = json.dumps({"zen": "image test", "marker": marker}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, _ = call(
        "POST",
        port,
        path,
        body,
        {
            "Content-Type": "application/json",
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={signature}",
        },
    )
    return status


def wait_ready(what: str, timeout_s: float) -> None:
    def ready() -> bool:
        try:
            return call("GET", ADMIN_PORT, "/readyz")[0] == 200
        except OSError:
            return False

    if not wait_for(ready, timeout_s, interval=0.1):
        raise Failed(f"{what}: not within {timeout_s:.0f} s")


def in_kafka(broker: str, marker: str, patience_s: float = 30) -> None:
    if not holds(broker, TOPIC, marker.encode(), patience_s):
        raise Failed(f"record {marker} not in Kafka (nothing new for {patience_s:.0f} s)")


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise Failed(f"/proc/{pid}/status has no {name}")


def check_image(image: str, work: Path, broker: embedded_broker.Broker) -> dict[str, float]:
    name = f"hookd-image-test-{uuid.uuid4().hex[:8]}"
    port = embedded_broker.free_port()
    config = work / "etc"
    config.mkdir()
    (config / "hookd.toml").write_text(CONFIG.format(port=port, admin=ADMIN_PORT, topic=TOPIC))
    volume = work / "var"
    volume.mkdir(mode=0o700)
    os.chown(volume, UID, UID)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    run_flags = [
        "--network", "host",
        "--read-only",
        "--ulimit", f"nofile={hard}:{hard}",  # as high as this host allows, not higher
        "--ulimit", f"nproc={NPROC}:{NPROC}",
        "-v", f"{config}:/etc/hookd:ro",
        "-v", f"{volume}:/var/lib/hookd",
        "-e", f"KAFKA_BROKER={broker.address}",
        "-e", f"GITHUB_SECRET={SECRET}",
    ]  # fmt: skip
    figures: dict[str, float] = {}
    started = time.monotonic()
    podman("--runtime", "runc", "run", "-d", "--name", name, *run_flags, image)
    try:
        wait_ready("/readyz 200", 60)
        figures["ready_s"] = time.monotonic() - started  # from `podman run`
        marker = uuid.uuid4().hex
        if (status := deliver(port, "/github", marker)) != 200:
            raise Failed(f"signed delivery answered {status}")
        in_kafka(broker.address, marker)
        if call("GET", ADMIN_PORT, "/healthz")[0] != 200:
            raise Failed("/healthz is not 200")
        pid = int(podman("inspect", "-f", "{{.State.Pid}}", name))
        uids = status_field(pid, "Uid").split()
        if uids[0] != str(UID) or uids[1] != str(UID):
            raise Failed(f"hookd runs as uid {uids}, not {UID}")
        root_mount = next(
            line.split()
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if line.split()[4] == "/"
        )
        if "ro" not in root_mount[5].split(","):
            raise Failed(f"the root filesystem is mounted {root_mount[5]}, not read-only")
        figures["rss_mb"] = memory_kb(pid).rss_kb / 1024
        podman("--runtime", "runc", "healthcheck", "run", name)  # non-zero: Failed

        # The spool on the volume outlives the container.
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            spooled = uuid.uuid4().hex
            if (status := deliver(port, "/spooled", spooled)) != 200:
                raise Failed(f"ack = spool delivery with the broker frozen answered {status}")
            stop_started = time.monotonic()
            podman("stop", "-t", "30", name)
            figures["stop_s"] = time.monotonic() - stop_started
            code = podman("inspect", "-f", "{{.State.ExitCode}}", name)
            if code != "0":
                raise Failed(f"podman stop: hookd exited {code}, not 0")
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        podman("--runtime", "runc", "start", name)
        wait_ready("/readyz 200 after the restart", 60)
        in_kafka(broker.address, spooled)
    except Failed:
        print(podman("logs", "--tail", "30", name, check=False), file=sys.stderr)
        raise
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)
    return figures


def main(images: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="hookd-image-test-") as tmp:
        broker = embedded_broker.start(log=Path(tmp) / "broker.log")
        try:
            for image in images:
                size = int(podman("image", "inspect", "-f", "{{.Size}}", image)) / 1e6
                work = Path(tmp) / image.replace("/", "_").replace(":", "_")
                work.mkdir()
                try:
                    figures = check_image(image, work, broker)
                except Failed as exc:
                    print(f"image-test {image}: FAILED: {exc}", file=sys.stderr)
                    return 1
                print(
                    f"image-test {image}: ok — {size:.0f} MB, ready in {figures['ready_s']:.1f} s, "
                    f"RSS {figures['rss_mb']:.0f} MB, podman stop {figures['stop_s']:.1f} s "
                    "(exit 0); delivery in Kafka, uid 10001, read-only root, /healthz /readyz, "
                    "HEALTHCHECK, spooled record forwarded after a restart"
                )
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["localhost/hookd:latest", "localhost/hookd:minimal"]))
