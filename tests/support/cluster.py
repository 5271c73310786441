"""Helpers of the Ray cluster tests (``test_ray_cluster.py``, ``test_ray_gateways.py``): the
config sections of a runtime on the session's simulated cluster, fake deployments, waiting
for a condition, and a gateway-only runtime beside the head."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai

from inference_runtime import Runtime, RuntimeConfig
from inference_runtime.cluster import GetDeploymentStatus
from support.runtime import USER

WAIT_S = 90.0
SECTIONS: dict[str, Any] = {
    "cluster": {
        "backend": "ray",
        "replica_cpus": 0.5,
        "call_timeout_s": 10,
        "placement_timeout_s": 30,
        "sync_interval_s": 0.02,
    },
    "manager": {"health_interval_s": 1, "replace_backoff_s": 0.2},
}


def fake(name: str, replicas: int = 1, gpus: int = 0, **config: Any) -> dict[str, Any]:
    serving = config.pop("serving", {})
    return {
        "name": name,
        "runtime": "fake",
        "replicas": replicas,
        "gpus": gpus,
        "runtime_config": config,
        "serving": serving,
    }


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {WAIT_S:g} s: {what}")
        await asyncio.sleep(0.05)


async def status(runtime: Any, name: str) -> Any:
    assert runtime.manager is not None
    return await runtime.manager.ask(GetDeploymentStatus(name))


async def chat(api: openai.AsyncOpenAI, model: str, **kwargs: Any) -> Any:
    return await api.chat.completions.create(model=model, messages=USER, **kwargs)


@contextlib.asynccontextmanager
async def serve_gateway(**gateway: Any) -> AsyncIterator[Runtime]:
    """A gateway-only runtime (``cluster.role: gateway``) on its own loopback port, serving
    what the head of the session's cluster placed."""
    cluster = {**SECTIONS["cluster"], "role": "gateway"}
    config = RuntimeConfig.from_dict(
        {"gateway": {"host": "127.0.0.1", "port": 0, **gateway}, "cluster": cluster}
    )
    runtime = Runtime(config, name="gateway-b")
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
