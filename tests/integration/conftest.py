"""Integration tests share one rule: circuit breakers are process-wide by design, so each test
gets its own registry (a breaker opened by one test never fails the next)."""

from __future__ import annotations

import pytest

from inference_runtime.remote import core as remote_core
from inference_runtime.remote.circuit import CircuitBreakers


@pytest.fixture(autouse=True)
def fresh_breakers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_core, "BREAKERS", CircuitBreakers())
