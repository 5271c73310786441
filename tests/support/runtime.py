"""Helpers for integration tests: a Runtime on a free loopback port, and clients for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import openai

from inference_runtime import Runtime, RuntimeConfig
from inference_runtime.cluster import GetRoutingTable
from inference_runtime.types import ReplicaState


@contextlib.asynccontextmanager
async def serve(
    *deployments: dict[str, Any],
    sections: dict[str, Any] | None = None,
    inventory: Any = None,
    **gateway: Any,
) -> AsyncIterator[Runtime]:
    """A Runtime on a free loopback port. ``sections``: more of the config (auth, storage,
    manager); ``inventory``: the nodes placement sees (default: this machine)."""
    config = RuntimeConfig.from_dict(
        {
            "gateway": {"host": "127.0.0.1", "port": 0, **gateway},
            "deployments": list(deployments),
            **(sections or {}),
        }
    )
    runtime = Runtime(config, inventory=inventory)
    await runtime.start()
    try:
        yield runtime
    finally:
        while _clients:
            await _clients.pop().close()
        await runtime.stop()


_clients: list[openai.AsyncOpenAI] = []


def client(runtime: Runtime, **kwargs: Any) -> openai.AsyncOpenAI:
    assert runtime.address is not None
    host, port = runtime.address
    kwargs.setdefault("api_key", "unused")
    api = openai.AsyncOpenAI(base_url=f"http://{host}:{port}/v1", max_retries=0, **kwargs)
    _clients.append(api)
    return api


def base_url(runtime: Runtime) -> str:
    assert runtime.address is not None
    host, port = runtime.address
    return f"http://{host}:{port}"


def fake(name: str = "fake", replicas: int = 1, **config: Any) -> dict[str, Any]:
    serving = config.pop("serving", {})
    extra = {k: config.pop(k) for k in ("routing", "idempotent", "fallbacks") if k in config}
    return {
        "name": name,
        "runtime": "fake",
        "replicas": replicas,
        "runtime_config": config,
        "serving": serving,
        **extra,
    }


USER = [{"role": "user", "content": "Say something"}]


async def table(runtime: Runtime) -> Any:
    assert runtime.system is not None
    dp = runtime.system.child("dp")
    assert dp is not None
    return await dp.ask(GetRoutingTable())


async def wait_healthy(runtime: Runtime, name: str, count: int, *, tries: int = 200) -> None:
    for _ in range(tries):
        rows = (await table(runtime)).deployments.get(name, ())
        if sum(r.state is ReplicaState.HEALTHY for r in rows) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never had {count} healthy replicas")
