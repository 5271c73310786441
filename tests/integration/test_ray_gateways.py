"""Several gateways on the (simulated) Ray cluster at once: the head's runtime and a gateway-only
runtime (``cluster.role: gateway``), each on its own loopback port, serve the same deployments
over HTTP (the official ``openai`` client), with in-flight counts merged through the routing
board: one gateway's routing sees the requests held open through the other, both agree on every
replica's count, the head's drains wait for them, a re-placed replica is picked up by the other
gateway, a gateway that stops (or dies) takes its counts with it, and ``serve --role gateway``
works as a process of its own. Uses the session's ``ray_cluster``; skipped without Ray."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from inference_runtime.cluster import ScaleDeployment
from inference_runtime.types import ReplicaState
from support.cluster import SECTIONS, chat, eventually, fake, serve_gateway, status
from support.runtime import client, serve, table, wait_healthy

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(300)
LONG = {"output_tokens": 100_000, "token_latency_ms": 5}
"""A request that streams until the client closes it."""


async def row(runtime: Any, deployment: str, replica_id: str) -> Any:
    return (await table(runtime)).replica(deployment, replica_id)


async def in_flight(runtime: Any, deployment: str, replica_id: str) -> int:
    found = await row(runtime, deployment, replica_id)
    return -1 if found is None else int(found.in_flight)


async def hold(api: openai.AsyncOpenAI, model: str) -> Any:
    """A streamed request, open (its first chunk read) until the caller closes it."""
    stream = await chat(api, model, stream=True)
    await stream.__anext__()
    return stream


async def test_two_gateways_serve_the_same_deployment(ray_cluster: Any) -> None:
    async with (
        serve(fake("both", replicas=2, output_tokens=5), sections=SECTIONS) as head,
        serve_gateway() as other,
    ):
        await wait_healthy(head, "both", 2, tries=9000)
        await wait_healthy(other, "both", 2, tries=9000)
        assert head.address != other.address
        for api in (client(head), client(other)):
            assert [m.id async for m in api.models.list()] == ["both"]
            assert (await chat(api, "both")).usage.completion_tokens == 6
            stream = await chat(api, "both", stream=True, stream_options={"include_usage": True})
            text, usage = "", None
            async for chunk in stream:
                usage = chunk.usage or usage
                text += "".join(c.delta.content or "" for c in chunk.choices)
            assert len(text.split()) == 5 and usage is not None
        rows = (await table(other)).deployments["both"]
        assert sum(r.routed_total for r in rows) == 2  # routed by the gateway itself

        async def released() -> bool:
            rows = [*(await table(head)).deployments["both"]]
            rows += (await table(other)).deployments["both"]
            return all(r.in_flight == 0 for r in rows)

        await eventually(released, "both gateways see every request released")


async def test_each_gateway_routes_on_the_counts_of_both(ray_cluster: Any) -> None:
    busy_spec = fake("busy", replicas=2, serving={"max_concurrent": 1, "queue_capacity": 0}, **LONG)
    async with serve(busy_spec, sections=SECTIONS) as head, serve_gateway() as other:
        await wait_healthy(head, "busy", 2, tries=9000)
        await wait_healthy(other, "busy", 2, tries=9000)
        held = await hold(client(head), "busy")
        rows = (await table(head)).deployments["busy"]
        busy = next(r.replica_id for r in rows if r.in_flight == 1)
        idle = next(r.replica_id for r in rows if r.replica_id != busy)

        async def other_sees_it() -> bool:
            return await in_flight(other, "busy", busy) == 1

        await eventually(other_sees_it, "the other gateway counts the head's request")
        api = client(other)
        for _ in range(4):  # least-loaded from the other gateway avoids the busy replica
            assert (await chat(api, "busy", max_tokens=2)).usage.completion_tokens == 2
        assert (await row(other, "busy", busy)).routed_total == 0
        assert (await row(other, "busy", idle)).routed_total == 4

        held_there = await hold(api, "busy")  # now the idle one is busy through the other

        async def head_sees_it() -> bool:
            return await in_flight(head, "busy", idle) == 1

        await eventually(head_sees_it, "the head counts the other gateway's request")
        assert await in_flight(head, "busy", busy) == 1  # its own, exact
        await held.close()
        await held_there.close()

        async def all_released() -> bool:
            counts = [await in_flight(rt, "busy", r) for rt in (head, other) for r in (busy, idle)]
            return counts == [0, 0, 0, 0]

        await eventually(all_released, "both gateways see every request released")


async def test_both_gateways_agree_on_every_replicas_count(ray_cluster: Any) -> None:
    async with (
        serve(fake("many", replicas=2, **LONG), sections=SECTIONS) as head,
        serve_gateway() as other,
    ):
        await wait_healthy(head, "many", 2, tries=9000)
        await wait_healthy(other, "many", 2, tries=9000)
        streams = await asyncio.gather(
            *(hold(client(head), "many") for _ in range(3)),
            *(hold(client(other), "many") for _ in range(4)),
        )

        async def counts(runtime: Any) -> dict[str, int]:
            return {r.replica_id: r.in_flight for r in (await table(runtime)).deployments["many"]}

        async def agreed() -> bool:
            mine, theirs = await counts(head), await counts(other)
            return mine == theirs and sum(mine.values()) == 7

        await eventually(agreed, "both gateways count the 7 requests on the same replicas")
        assert sorted((await counts(head)).values()) == [3, 4]  # least loaded: spread
        for stream in streams:
            await stream.close()

        async def released() -> bool:
            return sum((await counts(head)).values()) + sum((await counts(other)).values()) == 0

        await eventually(released, "both gateways see every request released")


async def test_a_drain_on_the_head_waits_for_the_other_gateway(ray_cluster: Any) -> None:
    sections = {**SECTIONS, "manager": {**SECTIONS["manager"], "drain_timeout_s": 60}}
    async with serve(fake("drain", **LONG), sections=sections) as head, serve_gateway() as other:
        await wait_healthy(head, "drain", 1, tries=9000)
        await wait_healthy(other, "drain", 1, tries=9000)
        api = client(other)
        stream = await hold(api, "drain")

        async def head_counts_it() -> bool:
            return await in_flight(head, "drain", "drain#0") == 1

        await eventually(head_counts_it, "the head counts the other gateway's request")
        assert head.manager is not None
        await head.manager.ask(ScaleDeployment("drain", 0))

        async def other_holds_draining() -> bool:
            found = await row(other, "drain", "drain#0")
            return found is not None and found.state is ReplicaState.DRAINING

        await eventually(other_holds_draining, "the other gateway honours the head's drain")
        with pytest.raises(openai.APIStatusError) as refused:
            await chat(api, "drain", max_tokens=2)
        assert refused.value.status_code == 503
        for _ in range(100):  # half a second of tokens: the replica is still there
            await stream.__anext__()
        view = await status(head, "drain")
        assert [r["phase"] for r in view["replica_list"]] == ["draining"]
        await stream.close()

        async def drained() -> bool:
            gone = (await status(head, "drain"))["replica_list"] == []
            return gone and await row(other, "drain", "drain#0") is None

        await eventually(drained, "the drain ended once the other gateway's request did")


async def test_a_replaced_replica_is_picked_up_by_the_other_gateway(ray_cluster: Any) -> None:
    from inference_runtime.cluster.ray import ACTOR_PREFIX

    async with (
        serve(fake("moved", output_tokens=3), sections=SECTIONS) as head,
        serve_gateway() as other,
    ):
        await wait_healthy(head, "moved", 1, tries=9000)
        await wait_healthy(other, "moved", 1, tries=9000)
        api = client(other)
        assert (await chat(api, "moved")).usage.completion_tokens == 4
        prefix = f"{ACTOR_PREFIX}moved#0:"
        (name,) = [n for n in ray.util.list_named_actors() if n.startswith(prefix)]
        ray.kill(ray.get_actor(name), no_restart=True)

        async def replaced() -> bool:
            view = await status(head, "moved")
            return bool(view["state"] == "ready" and view["replica_list"][0]["failures"] >= 1)

        await eventually(replaced, "the head placed the replica again")

        async def served_by_the_new_host() -> bool:
            try:
                return bool((await chat(api, "moved")).usage.completion_tokens == 4)
            except openai.APIStatusError:
                return False  # the new host is not attached yet

        await eventually(served_by_the_new_host, "the other gateway serves from the new host")
        assert (await row(other, "moved", "moved#0")).state is ReplicaState.HEALTHY


async def test_a_gateway_that_stops_or_dies_takes_its_counts_along(ray_cluster: Any) -> None:
    from inference_runtime.cluster.board import Versioned
    from inference_runtime.cluster.ray.board import board_handle

    async with serve(fake("left", **LONG), sections=SECTIONS) as head:
        await wait_healthy(head, "left", 1, tries=9000)
        async with serve_gateway(drain_timeout_s=0.1) as other:
            await wait_healthy(other, "left", 1, tries=9000)
            stream = await hold(client(other), "left")

            async def counted() -> bool:
                return await in_flight(head, "left", "left#0") == 1

            await eventually(counted, "the head counts the other gateway's request")
            await other.stop()  # the request is still open: its gateway goes away with it
        # it left the board as it stopped: well before its ttl (5 s) would remove it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while await in_flight(head, "left", "left#0") != 0:
            assert loop.time() < deadline, "the stopped gateway's count stayed"
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):  # the stream ends with the gateway (an error)
            async for _ in stream:
                pass
        # the gateway's proxies left the replica's host alone: the head still serves from it,
        # and the host no longer reports to the stopped gateway
        assert (await chat(client(head), "left", max_tokens=2)).usage.completion_tokens == 2
        from inference_runtime.cluster.ray import ACTOR_PREFIX

        prefix = f"{ACTOR_PREFIX}left#0:"
        (name,) = [n for n in ray.util.list_named_actors() if n.startswith(prefix)]
        host = ray.get_actor(name)

        async def one_subscriber() -> bool:
            return bool(await host.subscribers.remote() == 1)

        await eventually(one_subscriber, "the stopped gateway's events stream was cancelled")

        # a gateway that dies without a word: its counts go after its ttl
        ghost = {"seen": 0, "counts": {("left", "left#0"): 3}}
        board = board_handle()
        await board.sync.remote("ghost", {"inflight/ghost": Versioned(1, "ghost", ghost)}, 0, 1.0)

        async def haunted() -> bool:
            return await in_flight(head, "left", "left#0") == 3

        async def exorcised() -> bool:
            return await in_flight(head, "left", "left#0") == 0

        await eventually(haunted, "the head counts the dead gateway's requests")
        await eventually(exorcised, "the dead gateway's counts expired")


async def test_serve_role_gateway_from_the_command_line(ray_cluster: Any, tmp_path: Path) -> None:
    """``inference-runtime serve --ray ADDRESS --role gateway`` in its own process, with the
    head's kind of config file (its deployments are the head's business: ignored there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "gateway": {"host": "127.0.0.1", "port": port},
        "cluster": {"namespace": "inference-runtime-tests", "sync_interval_s": 0.02},
        "deployments": [fake("not-here")],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    async with serve(fake("cli", output_tokens=3), sections=SECTIONS) as head:
        await wait_healthy(head, "cli", 1, tries=9000)
        with (tmp_path / "stderr").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "inference_runtime.cli.main", "serve", "-c", str(path)),
                *("--ray", ray_cluster.address, "--role", "gateway"),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert (
                line.decode().strip() == f"inference-runtime serving on http://127.0.0.1:{port}/v1"
            )
            api = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
            )

            async def served() -> bool:
                with contextlib.suppress(openai.APIStatusError):
                    return bool((await chat(api, "cli")).usage.completion_tokens == 4)
                return False  # the replica is not attached yet

            await eventually(served, "the gateway process serves the head's deployment")
            assert [m.id async for m in api.models.list()] == ["cli"]
            assert (await row(head, "cli", "cli#0")).routed_total == 0  # not through the head
            await api.close()
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 60)
        assert code == 0, (tmp_path / "stderr").read_text()[-2000:]
