"""The serving process's event loop: uvloop when installed (auto), asyncio on request."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from inference_runtime import event_loop
from inference_runtime.config import RuntimeConfig

uvloop = pytest.importorskip("uvloop")


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_takes_uvloop_when_installed() -> None:
    name, _ = event_loop.loop_factory("auto")
    assert name == "uvloop"
    assert event_loop.run(_loop_type(), choice="auto").startswith("uvloop")


def test_asyncio_on_request() -> None:
    assert event_loop.loop_factory("asyncio")[0] == "asyncio"
    assert event_loop.run(_loop_type(), choice="asyncio").startswith("asyncio")


def test_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def no_uvloop(name: str, package: str | None = None) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_uvloop)
    assert event_loop.loop_factory("auto")[0] == "asyncio"  # quietly the standard loop
    with pytest.raises(ValueError, match="pip install uvloop"):
        event_loop.loop_factory("uvloop")


def test_bad_choice() -> None:
    with pytest.raises(ValueError, match="expected one of auto, asyncio, uvloop"):
        event_loop.loop_factory("tokio")  # type: ignore[arg-type]


def test_config_field() -> None:
    assert RuntimeConfig.from_dict({}).gateway.event_loop == "auto"
    config = RuntimeConfig.from_dict({"gateway": {"event_loop": "asyncio"}})
    assert config.gateway.event_loop == "asyncio"
    with pytest.raises(ValueError, match="event_loop"):
        RuntimeConfig.from_dict({"gateway": {"event_loop": "tokio"}})
