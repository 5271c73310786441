"""Shared fixtures of the kernel's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from inference_runtime.actors import ActorSystem


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    """A system on the real clock, shut down after the test (test_watch_timers overrides it
    with one on a ManualClock)."""
    system = ActorSystem.create("test")
    yield system
    await system.shutdown()
