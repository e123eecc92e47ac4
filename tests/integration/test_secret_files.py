"""Rotating a ``file:`` secret with SIGHUP, as docs/operations.md describes (issue 14): a reload
re-reads secret files, where an environment variable stays what it was at start."""

from __future__ import annotations

import signal

from embedded_broker import wait_for
from http_client import request, segment_request
from support import unique_topic


def status(hookd, secret: bytes) -> int:
    return request(hookd.address, segment_request("/in", b"{}", secret)).status


def test_a_file_secret_rotates_with_sighup(tmp_path, start_hookd):
    current, following = tmp_path / "github", tmp_path / "github-next"
    current.write_text("old-secret\n")
    route = {"path": "/in", "topic": unique_topic(), "verify": "segment"}
    hookd = start_hookd([{**route, "secrets": [f"file:{current}"]}])
    assert status(hookd, b"old-secret") == 200
    # 1. a second file and entry, SIGHUP: both accepted
    following.write_text("new-secret\n")
    config = hookd.config_path.read_text()
    hookd.config_path.write_text(
        config.replace(f'"file:{current}"', f'"file:{current}", "file:{following}"')
    )
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: status(hookd, b"new-secret") == 200, 20)
    assert status(hookd, b"old-secret") == 200
    # 4. the new value in the first file, the second entry gone: only the new one
    current.write_text("new-secret\n")
    hookd.config_path.write_text(config)
    hookd.signal(signal.SIGHUP)
    assert wait_for(lambda: status(hookd, b"old-secret") == 401, 20)
    assert status(hookd, b"new-secret") == 200
