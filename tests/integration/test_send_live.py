"""``hookd send`` against a running hookd: one route per symmetric scheme, every delivery
answered 2xx and published (issue 15, item 4)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from embedded_broker import read_topic
from send_catalogue import SIGNABLE, routes
from support import ROOT, unique_topic

from hookd import cli

COUNT = 2


@pytest.fixture(scope="module")
def hookd(module_launcher):
    topic = unique_topic("send")
    server = module_launcher.start(routes(topic))
    server.topic = topic
    return server


@pytest.mark.parametrize("scheme", SIGNABLE)
def test_send_is_accepted_for_every_symmetric_scheme(hookd, scheme, capsys):
    config = str(hookd.config_path)
    code = cli.main(["send", "--config", config, "--route", f"/{scheme}", "--count", str(COUNT)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    lines = out.out.splitlines()
    assert len(lines) == COUNT, out.out
    for index, line in enumerate(lines, 1):
        assert re.match(rf"{index}/{COUNT} 2\d\d \w+ [\d.]+ ms", line), line


def test_every_delivery_was_published(hookd, broker):
    # after the parametrized sends (pytest runs a module's tests in file order)
    records = read_topic(broker.address, hookd.topic, COUNT * len(SIGNABLE))
    assert len(records) == COUNT * len(SIGNABLE)


def test_send_a_body_from_stdin_as_a_subprocess(hookd):
    run = subprocess.run(
        [
            *(sys.executable, "-m", "hookd.cli", "send", "--config", str(hookd.config_path)),
            *("--route", "/stripe", "--body", "-", "--count", "2"),
        ],
        input=b'{"id":"evt_stdin","type":"charge.succeeded"}',
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.decode().splitlines()
    # the same body twice: the second is a redelivery, answered 2xx from the window
    assert [line.split()[1] for line in lines] == ["200", "200"], lines
