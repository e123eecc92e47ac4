"""Fixtures: the embedded broker (one per session) and hookd processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import embedded_broker
import pytest
from support import HookdFactory, Launcher


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded_broker.Broker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with embedded_broker.running(log=log) as running:
        yield running


@pytest.fixture
def start_hookd(broker: embedded_broker.Broker, tmp_path: Path) -> Iterator[HookdFactory]:
    """Start hookd with the given routes (and server/kafka overrides); stopped after the test."""
    launcher = Launcher(broker, tmp_path)
    yield launcher.start
    launcher.stop_all()


@pytest.fixture(scope="module")
def module_launcher(
    broker: embedded_broker.Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """For a module that shares one hookd across its tests."""
    launcher = Launcher(broker, tmp_path_factory.mktemp("hookd"))
    yield launcher
    launcher.stop_all()
