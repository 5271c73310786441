"""The event loop a serving process runs on.

``uvloop`` (libuv underneath) runs the same asyncio code with far less per-callback and
per-socket overhead than the standard loop; a gateway proxying many small requests spends a
large share of its CPU there, so ``auto`` takes it whenever it is installed. The standard loop
stays available (``asyncio``) for debugging and for platforms without uvloop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

log = logging.getLogger("inference_runtime")
T = TypeVar("T")
LoopChoice = Literal["auto", "asyncio", "uvloop"]
LOOP_CHOICES: tuple[LoopChoice, ...] = ("auto", "asyncio", "uvloop")


def loop_factory(choice: LoopChoice) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop's name and a factory for it. ``uvloop`` asked for but not importable is an
    error (a ValueError naming the fix); ``auto`` falls back to asyncio quietly."""
    if choice not in LOOP_CHOICES:
        raise ValueError(f"event loop {choice!r}: expected one of {', '.join(LOOP_CHOICES)}")
    if choice != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if choice == "uvloop":
                raise ValueError(
                    "event loop 'uvloop': the uvloop package is not installed "
                    "(pip install uvloop, or choose 'asyncio')"
                ) from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return "uvloop", factory
    return "asyncio", asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], *, choice: LoopChoice = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    name, factory = loop_factory(choice)
    log.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
