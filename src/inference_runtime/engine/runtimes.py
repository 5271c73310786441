"""Which runner class serves a deployment's ``runtime``; imported only when used, so that
``import inference_runtime`` never pulls in torch, transformers or vLLM."""

from __future__ import annotations

import importlib
from typing import Any

from inference_runtime.engine.runner import ModelRunner
from inference_runtime.types import Deployment

LOCAL_RUNNERS: dict[str, str] = {
    "fake": "inference_runtime.testing.fake_runner:FakeRunner",
}
"""runtime name -> "module:Class" of its ModelRunner (constructor: deployment, device=...)."""


def available_runtimes() -> tuple[str, ...]:
    return tuple(LOCAL_RUNNERS)


def create_runner(deployment: Deployment, *, device: str = "cpu") -> ModelRunner:
    target = LOCAL_RUNNERS.get(deployment.runtime)
    if target is None:
        raise ValueError(
            f"runtime: {deployment.runtime!r} is not available in this version "
            f"(available: {', '.join(LOCAL_RUNNERS)})"
        )
    module_name, _, class_name = target.partition(":")
    cls: Any = getattr(importlib.import_module(module_name), class_name)
    runner: ModelRunner = cls(deployment, device=device)
    return runner
