"""Which runner class and which engine actor serve a deployment's ``runtime``; imported only
when used, so that ``import inference_runtime`` never pulls in torch, transformers or vLLM."""

from __future__ import annotations

import importlib
from typing import Any

from inference_runtime.engine.runner import ModelRunner
from inference_runtime.types import Deployment

RUNNERS: dict[str, str] = {
    "fake": "inference_runtime.testing.fake_runner:FakeRunner",
    "transformers": "inference_runtime.engine.runners.transformers:TransformersRunner",
    "embeddings": "inference_runtime.engine.runners.embeddings:EmbeddingRunner",
    "vllm": "inference_runtime.engine.vllm.runner:VllmRunner",
    # a remote replica's "runner" is its session: the pooled client and the key
    "openai": "inference_runtime.remote.session:RemoteSession",
    "anthropic": "inference_runtime.remote.session:RemoteSession",
}
"""runtime name -> "module:Class" of its runner (constructor: deployment, device=...); a
remote runtime's runner is its session."""

ENGINE_ACTORS: dict[str, str] = {
    "embeddings": "inference_runtime.engine.embedding_core:EmbeddingEngineActor",
    "vllm": "inference_runtime.engine.vllm.core:VllmEngineActor",
    "openai": "inference_runtime.remote.core:RemoteEngineCoreActor",
    "anthropic": "inference_runtime.remote.core:RemoteEngineCoreActor",
}
"""runtime name -> "module:Class" of its engine actor, when not the generating EngineCoreActor.
Constructor: (deployment, replica_id, *, coordinator, runner_factory)."""


REQUIRES: dict[str, tuple[str, ...]] = {
    "transformers": ("torch", "transformers"),
    "embeddings": ("torch", "transformers"),
    "vllm": ("vllm",),
}
"""runtime name -> the modules its runner imports (installed by the ``local`` extra, or vLLM)."""


def missing_modules(runtime: str) -> list[str]:
    """The modules a runtime needs that this Python cannot import (checked without importing)."""
    import importlib.util

    return [m for m in REQUIRES.get(runtime, ()) if importlib.util.find_spec(m) is None]


def available_runtimes() -> tuple[str, ...]:
    return tuple(RUNNERS)


def _load(target: str) -> Any:
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_runner(deployment: Deployment, *, device: str = "cpu") -> ModelRunner:
    target = RUNNERS.get(deployment.runtime)
    if target is None:
        raise ValueError(
            f"runtime: {deployment.runtime!r} is not available in this version "
            f"(available: {', '.join(RUNNERS)})"
        )
    runner: ModelRunner = _load(target)(deployment, device=device)
    return runner


def engine_actor_class(runtime: str) -> Any:
    """The engine actor class for a runtime (EngineCoreActor unless ENGINE_ACTORS says else)."""
    target = ENGINE_ACTORS.get(runtime)
    if target is None:
        from inference_runtime.engine.core import EngineCoreActor

        return EngineCoreActor
    return _load(target)
