"""The README's quick start works as written (issue 14): the curl ``make run`` prints keys its
record, and the read-back snippet, extracted from README.md itself, finds the record."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import run_local
from http_client import request
from support import ROOT, unique_topic

from hookd.config import load
from hookd.record import KeyRule
from hookd.verify import Headers, Request, Verified


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("To read the event back with Quix Streams")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None
    return match.group(1)


def make_run_curl() -> tuple[str, list[tuple[str, str]], bytes]:
    """The command ``make run`` prints, as (path, headers, body)."""
    out = subprocess.run(run_local.SIGN, check=True, capture_output=True, text=True).stdout
    argv = shlex.split(out)
    url = argv[argv.index("POST") + 1]
    headers = [tuple(argv[i + 1].split(": ", 1)) for i, a in enumerate(argv) if a == "-H"]
    return "/" + url.split("/", 3)[3], headers, argv[argv.index("--data-binary") + 1].encode()


def test_the_make_run_curl_has_a_message_id_for_the_example_key():
    path, _, body = make_run_curl()
    [route] = [r for r in load(run_local.CONFIG, env={}).routes if r.path == path]
    assert route.key == "json:/messageId"
    key = KeyRule(route.key).key(Request(b"POST", path.encode(), Headers([]), body), Verified())
    assert key is not None and key.startswith(b"hookd-")


def test_the_readme_read_back_snippet_finds_the_record(broker, start_hookd):
    topic = unique_topic()
    [example] = [r for r in load(run_local.CONFIG, env={}).routes if r.path == "/segment"]
    hookd = start_hookd(
        [
            {
                "path": "/segment",
                "topic": topic,
                "verify": "segment",
                "secrets": list(example.secrets),
                "key": example.key,
            }
        ]
    )
    path, headers, body = make_run_curl()
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert request(hookd.address, raw).status == 200
    snippet = readme_snippet()
    assert snippet.count('"127.0.0.1:9092"') == 1 and '"segment-events"' in snippet
    code = snippet.replace('"127.0.0.1:9092"', repr(broker.address)).replace(
        '"segment-events"', repr(topic)
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    key = re.search(rb'"messageId":"([^"]+)"', body).group(1)
    assert repr(key) in result.stdout
    assert repr(body) in result.stdout
