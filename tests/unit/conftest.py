"""Fixtures of the unit tests; the stand-ins they are built on are in ``fakes.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import ManualClockLoop


@pytest.fixture(scope="module")
def manual_loop() -> Iterator[ManualClockLoop]:
    """One loop per module whose clock the tests move by hand (``loop.now``)."""
    loop = ManualClockLoop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
