"""A client that does not stream gets one non-streamed upstream call (one JSON body), with the
same retries, timeouts, breaker and metering as a stream: every fault of the mock, over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest

from inference_runtime import Runtime
from inference_runtime.metrics import GetSnapshot
from inference_runtime.testing.mock_upstream import MockUpstream
from inference_runtime.testing.mock_upstream_faults import Fault
from support.remote import remote
from support.runtime import client, serve, wait_healthy

USER = [{"role": "user", "content": "hello upstream"}]
CHAT = "/v1/chat/completions"


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockUpstream]:
    monkeypatch.setenv("MOCK_KEY", "sk-test")
    async with MockUpstream(api_key="sk-test") as mock:
        yield mock


async def running(upstream: MockUpstream, **config: Any) -> Any:
    context = serve(remote(upstream, **config))
    runtime: Runtime = await context.__aenter__()
    await wait_healthy(runtime, "gpt", 1)
    return context, runtime


async def eventually(check: Callable[[], Awaitable[bool]], tries: int = 200) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never became true")


def whole_calls(upstream: MockUpstream) -> list[bool]:
    """Whether each chat call the upstream got was non-streamed."""
    return [r.body["stream"] is False for r in upstream.requests if r.path == CHAT]


async def test_a_whole_reply_is_one_non_streamed_call(upstream: MockUpstream) -> None:
    context, runtime = await running(upstream)
    try:
        reply = await client(runtime).chat.completions.create(
            model="gpt", messages=USER, max_tokens=7, n=2
        )
        assert [len((c.message.content or "").split()) for c in reply.choices] == [7, 7]
        assert [c.finish_reason for c in reply.choices] == ["length", "length"]
        assert reply.choices[0].message.content != reply.choices[1].message.content
        assert reply.usage is not None and reply.usage.completion_tokens == 14
        text = await client(runtime).completions.create(model="gpt", prompt="once", max_tokens=3)
        assert len(text.choices[0].text.split()) == 3
        assert text.usage is not None and text.usage.completion_tokens == 3
        sent = upstream.requests[-1]
        assert sent.body["stream"] is False and "stream_options" not in sent.body
        assert whole_calls(upstream) == [True]
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(500),
        Fault.status(503),
        Fault.reset(),
        Fault.malformed_sse(),  # non-streamed: a 200 whose body is not JSON
        Fault.truncate_after(1),  # half the body, then a clean close
        Fault.reset_after(1),  # half the body, then a reset
        Fault.error_after(1, 502),  # non-streamed: the plain error response
    ],
    ids=lambda fault: f"{fault.kind}-{fault.http_status}",
)
async def test_broken_whole_replies_are_retried(upstream: MockUpstream, fault: Fault) -> None:
    context, runtime = await running(upstream)
    try:
        upstream.script(fault)
        reply = await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert len((reply.choices[0].message.content or "").split()) == 16
        assert reply.usage is not None and reply.usage.completion_tokens == 16
        assert upstream.counts[CHAT] == 2
        assert whole_calls(upstream) == [True, True]
    finally:
        await context.__aexit__(None, None, None)


async def test_429_on_a_whole_reply_waits_for_retry_after(upstream: MockUpstream) -> None:
    context, runtime = await running(upstream)
    try:
        upstream.script(Fault.status(429, retry_after=1.0))
        began = time.monotonic()
        reply = await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert time.monotonic() - began >= 1.0
        assert reply.choices[0].message.content
        assert upstream.counts[CHAT] == 2
    finally:
        await context.__aexit__(None, None, None)


async def test_timeouts_of_a_whole_reply(upstream: MockUpstream) -> None:
    """The first byte within first_byte_s (the whole generation), then the body within read_s:
    a body that stalls after its headers is cut by read_s and retried."""
    context, runtime = await running(upstream, timeouts={"first_byte_s": 0.5, "read_s": 0.3})
    try:
        api = client(runtime)
        upstream.script(Fault.slow_first_byte(3.0))
        began = time.monotonic()
        assert (await api.chat.completions.create(model="gpt", messages=USER)).choices
        assert 0.5 <= time.monotonic() - began < 2.5
        assert upstream.counts[CHAT] == 2
        upstream.script(Fault.stall_after(0, 3.0))
        began = time.monotonic()
        assert (await api.chat.completions.create(model="gpt", messages=USER)).choices
        assert 0.3 <= time.monotonic() - began < 2.5
        assert upstream.counts[CHAT] == 4
        upstream.script(Fault.slow_first_byte(0.2))  # slower than read_s, within first_byte_s
        assert (await api.chat.completions.create(model="gpt", messages=USER)).choices
        assert upstream.counts[CHAT] == 5
    finally:
        await context.__aexit__(None, None, None)


async def test_a_broken_whole_reply_of_a_non_idempotent_deployment_fails(
    upstream: MockUpstream,
) -> None:
    context, runtime = await running(upstream, idempotent=False)
    try:
        upstream.script(Fault.malformed_sse())
        with pytest.raises(openai.APIStatusError) as failed:
            await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert failed.value.status_code == 502
        assert "malformed" in str(failed.value.body)
        assert upstream.counts[CHAT] == 1
    finally:
        await context.__aexit__(None, None, None)


async def test_broken_whole_replies_open_the_circuit(upstream: MockUpstream) -> None:
    config = {
        "circuit_breaker": {
            "failure_threshold": 2,
            "open_duration_s": 60,
            "initial_open_duration_s": 60,
        },
        "retry": {"max_retries": 0},
    }
    context, runtime = await running(upstream, **config)
    try:
        api = client(runtime)
        upstream.script(Fault.malformed_sse(), Fault.truncate_after(1))
        for _ in range(2):
            with pytest.raises(openai.APIStatusError):
                await api.chat.completions.create(model="gpt", messages=USER)
        with pytest.raises(openai.APIStatusError) as fast:
            await api.chat.completions.create(model="gpt", messages=USER)
        assert fast.value.status_code == 503
        assert upstream.counts[CHAT] == 2  # failed fast: not called
    finally:
        await context.__aexit__(None, None, None)


async def test_a_whole_reply_is_metered_and_priced_from_the_upstreams_usage(
    upstream: MockUpstream,
) -> None:
    pricing = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 2_000_000.0}
    context, runtime = await running(upstream, pricing=pricing)
    try:
        api = client(runtime)
        reply = await api.chat.completions.create(model="gpt", messages=USER, max_tokens=5)
        assert reply.usage is not None
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 5)
        assert runtime.system is not None
        metrics = runtime.system.child("metrics")
        assert metrics is not None

        async def recorded() -> bool:
            return bool((await metrics.ask(GetSnapshot()))["gpt"].requests["success"] == 1)

        await eventually(recorded)
        row = (await metrics.ask(GetSnapshot()))["gpt"]
        assert (row.prompt_tokens, row.completion_tokens) == (2, 5)
        assert row.cost == pytest.approx(2 * 1.0 + 5 * 2.0)
        assert row.ttft.count == 1 and row.e2e.count == 1
    finally:
        await context.__aexit__(None, None, None)


async def test_a_client_gone_during_a_whole_reply_cancels_the_upstream_call(
    upstream: MockUpstream,
) -> None:
    context, runtime = await running(upstream)
    try:
        upstream.first_byte_delay_s = 5.0
        call = asyncio.ensure_future(
            client(runtime).chat.completions.create(model="gpt", messages=USER)
        )
        await upstream.wait_until(lambda mock: mock.active_requests == 1)
        call.cancel()
        await upstream.wait_until(lambda mock: mock.active_requests == 0)
        assert runtime.system is not None
        metrics = runtime.system.child("metrics")
        assert metrics is not None

        async def cancelled() -> bool:
            snapshot = await metrics.ask(GetSnapshot())
            return bool(snapshot["gpt"].requests.get("cancelled", 0) == 1)

        await eventually(cancelled)
    finally:
        await context.__aexit__(None, None, None)
