"""The configs users copy from the docs are valid: README's worked examples and the shipped
example and container configs pass ``hookd check``'s validation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from hookd.config import ConfigError, load, validate
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


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


DOCS = ["README.md", "docs/operations.md", "docs/providers.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_links_between_the_docs_resolve(doc):
    # Issue 14: docs/providers.md pointed at a PROVIDERS.md that is not in the repository.
    source = ROOT / doc
    text = source.read_text()
    assert "PROVIDERS.md" not in text
    for target, anchor in re.findall(r"\]\(([^)#\s]*\.md|)(?:#([^)\s]+))?\)", text):
        if target.startswith("http") or (not target and not anchor):
            continue
        file = (source.parent / target).resolve() if target else source
        assert file.is_file(), f"{doc}: link to {target} that does not exist"
        if anchor:
            headings = re.findall(
                r"(?m)^#+ (.+)$", re.sub(r"```.*?```", "", file.read_text(), flags=re.S)
            )
            assert anchor in {slug(h) for h in headings}, f"{doc}: no #{anchor} in {file.name}"


def test_rotation_docs_say_what_hookd_does_with_an_unset_next_secret():
    # "${NEXT:-}" used to be documented as a secret anyone can sign with; it is refused now.
    text = " ".join((ROOT / "docs/operations.md").read_text().split())
    with pytest.raises(ConfigError) as info:
        validate(
            {
                "routes": [
                    {
                        "path": "/gh",
                        "topic": "t",
                        "verify": "github",
                        "secrets": ["${GITHUB_SECRET}", "${NEXT:-}"],
                    }
                ]
            },
            {"GITHUB_SECRET": "s"},
        )
    [line] = info.value.lines()
    assert f"`{line}`" in text
    assert "secret, which anyone can sign with" not in text


def test_the_configmap_says_how_a_config_change_is_applied():
    # Issue 14: it said the config is read at start only; SIGHUP reloads it (not env secrets).
    comment = (ROOT / "deploy/kubernetes/configmap.yaml").read_text().split("apiVersion")[0]
    assert "at start only" not in comment
    assert "SIGHUP" in comment and "file:" in comment
