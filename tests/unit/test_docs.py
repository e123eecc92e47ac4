"""The configs users copy from the docs are valid: README's worked examples and the shipped
example and container configs pass ``hookd check``'s validation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from hookd.config import load, validate
from hookd.routing import build_routes

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "GITHUB_SECRET": "gh",
    "STRIPE_WHSEC": "whsec_test",
    "TWILIO_AUTH_TOKEN": "tw",
    "DISCORD_PUBLIC_KEY": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "ACME_SECRET": "acme",
    "GITLAB_TOKEN": "gl",
}


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    match = re.search(r"```toml\n(.*?)```", text[start:], re.S)
    assert match is not None
    return match.group(1)


def test_readme_worked_configs_are_valid():
    raw = tomllib.loads(readme_block("Worked configs, one per provider family"))
    routes = build_routes(validate(raw, ENV))
    assert [route.scheme for route in routes.routes] == [
        "github",
        "stripe",
        "twilio",
        "discord",
        "hmac",
        "gitlab",
    ]


@pytest.mark.parametrize("path", ["examples/hookd.toml", "deploy/hookd.toml"])
def test_shipped_configs_are_valid(path):
    config = load(ROOT / path, env=ENV)
    assert build_routes(config).routes
