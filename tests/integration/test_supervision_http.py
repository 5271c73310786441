"""Poisoned contexts, failed replicas, disconnects, load and affinity, over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime.metrics import GetSnapshot
from inference_runtime.types import ReplicaState
from support.runtime import USER, base_url, client, fake, serve, table, wait_healthy


async def replica_rows(runtime: Any, name: str) -> dict[str, Any]:
    return {r.replica_id: r for r in (await table(runtime)).deployments[name]}


async def eventually(predicate: Any, *, tries: int = 400) -> None:
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


async def test_poisoned_replica_restarts_and_next_request_succeeds() -> None:
    async with serve(fake(poison_marker="POISON", idempotent=False)) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        poison = [{"role": "user", "content": "POISON please"}]
        try:
            await api.chat.completions.create(model="fake", messages=poison)
        except openai.APIStatusError as error:
            # alone in the step that failed: the request is the cause, final (not a 503
            # that invites the client to send it again, onto the next replica)
            assert error.status_code == 500
            assert error.body["code"] == "request_failed_replica"  # type: ignore[index]
        else:
            raise AssertionError("a poisoned request cannot succeed")
        await wait_healthy(runtime, "fake", 1)
        ok = await api.chat.completions.create(model="fake", messages=USER, max_tokens=3)
        assert ok.usage.completion_tokens == 3
        rows = await replica_rows(runtime, "fake")
        assert rows["fake#0"].context_restarts == 1


async def test_four_poisons_take_the_replica_out_and_traffic_moves() -> None:
    dep = fake(replicas=2, poison_marker="POISON", idempotent=False, routing="session_affinity")
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 2)
        api = client(runtime)
        headers = {"X-Session-Id": "sticky"}
        probe = await api.chat.completions.with_raw_response.create(
            model="fake", messages=USER, max_tokens=1, extra_headers=headers
        )
        victim = probe.headers["x-replica-id"]
        for i in range(4):
            try:
                await api.chat.completions.create(
                    model="fake",
                    messages=[{"role": "user", "content": f"POISON {i}"}],
                    extra_headers=headers,
                )
            except openai.APIStatusError as error:
                assert error.status_code == 500
            if i < 3:
                await wait_healthy(runtime, "fake", 2)

        seen: dict[str, int] = {}

        async def victim_out() -> bool:
            # the client may hear of the failure before the table does, and the manager
            # takes a failed replica out soon after: FAILED, or already gone, both count
            row = (await replica_rows(runtime, "fake")).get(victim)
            if row is None:
                return True
            seen["context_restarts"] = row.context_restarts
            return row.state is ReplicaState.FAILED

        await eventually(victim_out)
        assert seen["context_restarts"] == 3
        for _ in range(5):
            raw = await api.chat.completions.with_raw_response.create(
                model="fake", messages=USER, max_tokens=2, extra_headers=headers
            )
            assert raw.headers["x-replica-id"] != victim
        # self-healing: the manager re-places the replica, and its history shows in metrics
        await wait_healthy(runtime, "fake", 2)
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url(runtime) + "/metrics") as response,
        ):
            text = await response.text()
        assert f'replica="{victim}",state="healthy"}} 1.0' in text
        assert (
            f'inference_runtime_replica_failures_total{{deployment="fake",replica="{victim}"}} 1.0'
            in text
        )


async def test_client_disconnect_mid_stream_frees_the_slot() -> None:
    dep = fake(token_latency_ms=5, output_tokens=100_000, serving={"max_concurrent": 1})
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 1)
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                base_url(runtime) + "/v1/chat/completions",
                json={"model": "fake", "messages": USER, "stream": True},
            )
            for _ in range(5):
                await response.content.readline()
            response.close()

        async def freed() -> bool:
            row = (await replica_rows(runtime, "fake"))["fake#0"]
            return row.in_flight == 0 and row.running == 0

        await eventually(freed)
        assert runtime.system is not None
        metrics = runtime.system.child("metrics")
        assert metrics is not None

        async def recorded() -> bool:
            snapshot = await metrics.ask(GetSnapshot())
            return snapshot["fake"].requests.get("cancelled", 0) == 1

        await eventually(recorded)
        snapshot = await metrics.ask(GetSnapshot())
        assert snapshot["fake"].completion_tokens >= 3  # tokens produced before the cancel count
        api = client(runtime)
        ok = await api.chat.completions.create(model="fake", messages=USER, max_tokens=2)
        assert ok.usage.completion_tokens == 2


async def test_a_stopping_gateway_ends_open_streams_with_an_error_event() -> None:
    """Past the drain, the runtime stops: a stream still open gets an error event and its
    end (no hang, no cut connection), and a request still waiting for its body gets an
    error status."""
    dep = fake(token_latency_ms=5, output_tokens=100_000)
    async with serve(dep, drain_timeout_s=0.2) as runtime:
        await wait_healthy(runtime, "fake", 1)
        async with aiohttp.ClientSession() as http:
            url = base_url(runtime) + "/v1/chat/completions"
            streamed = await http.post(
                url, json={"model": "fake", "messages": USER, "stream": True}
            )
            assert (await streamed.content.readline()).startswith(b"data: ")
            whole = asyncio.ensure_future(http.post(url, json={"model": "fake", "messages": USER}))
            await asyncio.sleep(0.05)
            stopping = asyncio.ensure_future(runtime.stop())
            body = await asyncio.wait_for(streamed.content.read(), 10)
            frames = [f for f in body.split(b"\n\n") if f]
            assert b'"error"' in frames[-1] and b"[DONE]" not in body
            reply = await asyncio.wait_for(whole, 10)
            assert reply.status == 503
            assert (await reply.json())["error"]["message"] == "the gateway is stopping"
            await asyncio.wait_for(stopping, 10)


async def test_non_streaming_disconnect_aborts_too() -> None:
    dep = fake(token_latency_ms=5, output_tokens=100_000)
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 1)
        async with aiohttp.ClientSession() as http:
            with_timeout = aiohttp.ClientTimeout(total=0.2)
            with pytest.raises(TimeoutError):
                await http.post(
                    base_url(runtime) + "/v1/chat/completions",
                    json={"model": "fake", "messages": USER},
                    timeout=with_timeout,
                )

        async def freed() -> bool:
            row = (await replica_rows(runtime, "fake"))["fake#0"]
            return row.in_flight == 0 and row.running == 0

        await eventually(freed)


async def test_500_concurrent_streams_complete_with_exact_counts() -> None:
    dep = fake(
        replicas=2, output_tokens=1000, serving={"max_concurrent": 256, "queue_capacity": 512}
    )
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 2)
        connector = aiohttp.TCPConnector(limit=600)
        async with aiohttp.ClientSession(connector=connector) as http:
            url = base_url(runtime) + "/v1/chat/completions"

            async def one(i: int) -> tuple[int, int]:
                body = {
                    "model": "fake",
                    "messages": [{"role": "user", "content": f"request {i}"}],
                    "stream": True,
                    "max_tokens": 16,
                    "stream_options": {"include_usage": True},
                }
                words, usage = 0, -1
                async with http.post(url, json=body) as response:
                    assert response.status == 200
                    async for line in response.content:
                        if not line.startswith(b"data: {"):
                            continue
                        import json

                        frame = json.loads(line[6:])
                        for choice in frame["choices"]:
                            words += len((choice["delta"].get("content") or "").split())
                        if frame.get("usage"):
                            usage = frame["usage"]["completion_tokens"]
                return words, usage

            results = await asyncio.gather(*(one(i) for i in range(500)))
        assert results == [(16, 16)] * 500
        rows = await replica_rows(runtime, "fake")
        assert all(r.in_flight == 0 for r in rows.values())
        assert sum(r.routed_total for r in rows.values()) == 500
        assert min(r.routed_total for r in rows.values()) > 100  # both replicas took load


async def test_openai_client_concurrent_streams() -> None:
    async with serve(fake(replicas=2, output_tokens=1000)) as runtime:
        await wait_healthy(runtime, "fake", 2)
        api = client(runtime)

        async def one(i: int) -> int:
            stream = await api.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": f"hi {i}"}],
                stream=True,
                max_tokens=10,
                stream_options={"include_usage": True},
            )
            usage = 0
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage.completion_tokens
            return usage

        assert await asyncio.gather(*(one(i) for i in range(64))) == [10] * 64


async def test_session_affinity_keeps_a_session_on_one_replica() -> None:
    async with serve(fake(replicas=3, routing="session_affinity", output_tokens=2)) as runtime:
        await wait_healthy(runtime, "fake", 3)
        api = client(runtime)
        seen: dict[str, set[str]] = {}
        for session in ("alice", "bob", "carol", "dave"):
            for _ in range(5):
                raw = await api.chat.completions.with_raw_response.create(
                    model="fake", messages=USER, extra_headers={"X-Session-Id": session}
                )
                seen.setdefault(session, set()).add(raw.headers["x-replica-id"])
        assert all(len(replicas) == 1 for replicas in seen.values())
        assert len(set.union(*seen.values())) >= 2  # sessions spread over replicas


async def test_health_ready_metrics_openapi() -> None:
    async with serve(fake(output_tokens=2)) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        await api.chat.completions.create(model="fake", messages=USER)
        async with aiohttp.ClientSession() as http:
            url = base_url(runtime)
            async with http.get(url + "/healthz") as r:
                assert (r.status, await r.json()) == (200, {"status": "ok"})
            async with http.get(url + "/readyz") as r:
                assert r.status == 200
                assert (await r.json())["healthy_replicas"] == {"fake": 1}
            async with http.get(url + "/metrics") as r:
                text = await r.text()
                for family in (
                    "inference_runtime_requests_total",
                    "inference_runtime_time_to_first_token_seconds_bucket",
                    "inference_runtime_inter_token_latency_seconds_bucket",
                    "inference_runtime_e2e_latency_seconds_bucket",
                    "inference_runtime_queue_time_seconds_bucket",
                    "inference_runtime_tokens_input_total",
                    "inference_runtime_in_flight",
                    "inference_runtime_queue_depth",
                    "inference_runtime_replica_state",
                    "inference_runtime_context_restarts_total",
                    "inference_runtime_dead_letters_total",
                ):
                    assert family in text, family
                assert 'requests_total{deployment="fake",outcome="success"} 1.0' in text
            async with http.get(url + "/openapi.json") as r:
                spec = await r.json()
                assert "/v1/chat/completions" in spec["paths"]
