"""The control plane end to end: a restart restores deployments and spend; scaling down and
deleting under load drop no admitted request; placement and self-healing on a fake inventory."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime.cluster import GpuInfo, NodeInfo
from inference_runtime.storage import CatalogStore, open_database
from inference_runtime.types import Deployment
from support.runtime import USER, base_url, client, fake, serve, wait_healthy

ADMIN_ONLY: dict[str, Any] = {}


async def admin(runtime: Any, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url(runtime) + path, json=body) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def call(runtime: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url(runtime) + path, json=body) as response,
    ):
        return response.status, await response.json()


async def test_a_restart_restores_deployments_and_spend(tmp_path: Path) -> None:
    storage = {"storage": {"path": str(tmp_path / "state.db")}}
    priced = {
        "name": "priced",
        "runtime": "fake",
        "runtime_config": {"output_tokens": 9},
        "pricing": {"input_per_mtok": 0, "output_per_mtok": 100_000},  # 0.1 per token
        "budget": {"max_spend_per_hour": 2.5},
    }
    async with serve(sections=storage) as runtime:
        await admin(runtime, "POST", "/admin/deployments", priced)
        await wait_healthy(runtime, "priced", 1)
        api = client(runtime)
        reply = await api.chat.completions.create(model="priced", messages=USER, max_tokens=10)
        assert reply.usage is not None and reply.usage.completion_tokens == 10  # cost 1.0
        reply = await api.chat.completions.create(model="priced", messages=USER, max_tokens=10)
        # 2.0 spent: a third worst case of 1.0 does not fit in 2.5

    async with serve(sections=storage) as runtime:
        names = [d["name"] for d in (await admin(runtime, "GET", "/admin/deployments"))["data"]]
        assert names == ["priced"]
        await wait_healthy(runtime, "priced", 1)
        api = client(runtime)
        with pytest.raises(openai.RateLimitError) as refused:
            await api.chat.completions.create(model="priced", messages=USER, max_tokens=10)
        assert "budget" in str(refused.value)
        # a smaller request still fits what is left of the hour
        await api.chat.completions.create(model="priced", messages=USER, max_tokens=2)


async def test_the_config_file_wins_over_a_stored_deployment_of_the_same_name(
    tmp_path: Path,
) -> None:
    storage = {"storage": {"path": str(tmp_path / "state.db")}}
    async with serve(fake("shared"), sections=storage) as runtime:
        await admin(runtime, "POST", "/admin/deployments/shared/scale", {"replicas": 3})
        view = await admin(runtime, "GET", "/admin/deployments/shared")
        assert view["replicas"]["desired"] == 3
    async with serve(fake("shared"), sections=storage) as runtime:
        view = await admin(runtime, "GET", "/admin/deployments/shared")
        assert view["replicas"]["desired"] == 1 and view["source"] == "config"


async def test_replicas_are_bounded_and_a_runaway_stored_count_does_not_stop_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    storage = {"storage": {"path": str(path)}}
    async with serve(sections=storage) as runtime:
        for count in (10**9, 65):
            status, body = await call(
                runtime, "POST", "/admin/deployments", {**fake("runaway"), "replicas": count}
            )
            assert status == 400 and body["error"]["param"] == "replicas", body
        await admin(runtime, "POST", "/admin/deployments", fake("kept"))
        status, body = await call(
            runtime, "POST", "/admin/deployments/kept/scale", {"replicas": 10**9}
        )
        assert status == 400 and body["error"]["param"] == "replicas", body
    # what an earlier version accepted and stored: the restart must not try to run it
    database = open_database(str(path))
    CatalogStore(database).put(
        Deployment(name="runaway", runtime="fake", replicas=10**9), source="api"
    )
    database.close()
    async with serve(sections=storage) as runtime:
        names = [d["name"] for d in (await admin(runtime, "GET", "/admin/deployments"))["data"]]
        assert names == ["kept"]
        await wait_healthy(runtime, "kept", 1)
    assert "runaway" in caplog.text and "max_replicas" in caplog.text


async def test_the_log_says_when_every_deployment_is_ready(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inference_runtime")
    async with serve(fake("a", load_latency_ms=50), fake("b", replicas=2)) as runtime:
        await asyncio.wait_for(runtime.announce_ready(interval_s=0.01), timeout=30)
        await wait_healthy(runtime, "a", 1)
        await wait_healthy(runtime, "b", 2)
    assert "all 2 deployments ready: a, b" in caplog.messages


async def test_scale_down_and_delete_under_load_drop_no_admitted_request() -> None:
    dep = fake("busy", replicas=3, token_latency_ms=5, output_tokens=40)
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "busy", 3)
        api = client(runtime)

        async def one() -> int:
            stream = await api.chat.completions.create(model="busy", messages=USER, stream=True)
            count = 0
            async for chunk in stream:
                count += sum(1 for c in chunk.choices if c.delta.content)
            return count

        first = [asyncio.ensure_future(one()) for _ in range(30)]
        await asyncio.sleep(0.05)  # all admitted and streaming
        await admin(runtime, "POST", "/admin/deployments/busy/scale", {"replicas": 1})
        assert await asyncio.gather(*first) == [40] * 30
        view = await admin(runtime, "GET", "/admin/deployments/busy")
        assert view["replicas"]["desired"] == 1

        second = [asyncio.ensure_future(one()) for _ in range(10)]
        await asyncio.sleep(0.05)
        await admin(runtime, "DELETE", "/admin/deployments/busy")
        assert await asyncio.gather(*second) == [40] * 10
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(model="busy", messages=USER)


def gpus(*free_gib: float) -> list[NodeInfo]:
    return [
        NodeInfo(
            node_id="gpu-node",
            cpus=16,
            memory_mib=131072,
            gpus=tuple(
                GpuInfo(index=i, name="Fake H100", memory_total_mib=81920,
                        memory_free_mib=int(g * 1024))
                for i, g in enumerate(free_gib)
            ),
        )
    ]  # fmt: skip


async def test_placement_and_self_healing_over_http() -> None:
    manager = {"manager": {"health_interval_s": 0.05, "hang_timeout_s": 0.5,
                           "replace_backoff_s": 0.01}}  # fmt: skip
    async with serve(sections=manager, inventory=lambda: gpus(80, 80, 80)) as runtime:
        spec = {
            "name": "gpu-chat",
            "runtime": "fake",
            "replicas": 2,
            "gpus": 1,
            "runtime_config": {"poison_marker": "POISON", "hang_marker": "HANG"},
        }
        await admin(runtime, "POST", "/admin/deployments", spec)
        await wait_healthy(runtime, "gpu-chat", 2)
        view = await admin(runtime, "GET", "/admin/deployments/gpu-chat")
        assert sorted(r["gpus"][0] for r in view["replica_list"]) == [0, 1]
        too_big = {"name": "huge", "runtime": "fake", "gpus": 4}  # no node has 4 GPUs
        code, body = await call(runtime, "POST", "/admin/deployments", too_big)
        assert code == 400 and body["error"]["param"] == "replicas"
        assert "1 replica of 4 GPUs each cannot be placed" in body["error"]["message"]

        # a hung engine: the health check takes the replica out; it comes back on GPU 2
        api = client(runtime, timeout=20)
        hung = asyncio.ensure_future(
            api.chat.completions.create(
                model="gpu-chat", messages=[{"role": "user", "content": "HANG"}],
                extra_headers={"X-Session-Id": "s"},
            )
        )  # fmt: skip
        with pytest.raises(openai.APIStatusError) as failed:
            await hung
        assert failed.value.status_code == 500  # alone in the step that hung: not retried
        for _ in range(500):
            view = await admin(runtime, "GET", "/admin/deployments/gpu-chat")
            if view["state"] == "ready" and any(r["moves"] for r in view["replica_list"]):
                break
            await asyncio.sleep(0.02)
        moved = next(r for r in view["replica_list"] if r["moves"])
        assert moved["failures"] == 1 and moved["gpus"] == [2]
        assert "no engine step" in moved["last_error"]
        reply = await api.chat.completions.create(model="gpu-chat", messages=USER)
        assert reply.choices[0].message.content
