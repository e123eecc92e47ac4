"""``make run``: the embedded broker, hookd with examples/hookd.toml, and a curl to paste."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import embedded_broker

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "hookd.toml"
HOOKD = [sys.executable, "-m", "hookd.cli"]
#: What ``make run`` runs to print its curl: a fresh Segment event for the example route.
SIGN = [*HOOKD, "sign", "--config", str(CONFIG), "--route", "/segment"]


def main() -> int:
    broker_port = int(os.environ.get("BROKER_PORT", "9092"))
    with embedded_broker.running(port=broker_port) as broker:
        env = {**os.environ, "KAFKA_BROKER": broker.address}
        print(f"embedded broker (Tansu) on {broker.address}", flush=True)
        hookd = subprocess.Popen([*HOOKD, "serve", "--config", str(CONFIG)], env=env)
        try:
            listen = env.get("HOOKD_LISTEN", "127.0.0.1:8080")
            embedded_broker.wait_for_port(int(listen.rpartition(":")[2]), 60, hookd)
            curl = subprocess.run(
                SIGN,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            print(
                "\nhookd is up. Send it a signed Segment event (its messageId becomes the "
                "record key):\n\n" + curl,
                flush=True,
            )
            print("Admin: curl http://127.0.0.1:9090/metrics    Stop: Ctrl-C\n", flush=True)
            return hookd.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if hookd.poll() is None:
                hookd.send_signal(signal.SIGTERM)
                hookd.wait(30)


if __name__ == "__main__":
    sys.exit(main())
