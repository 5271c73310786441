"""Remote engine cores over an OpenAI-compatible upstream (MockUpstream), through the gateway,
with the official client: passthrough, retries, the circuit breaker, key rotation, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime import Runtime
from inference_runtime.testing.mock_upstream import MockUpstream
from inference_runtime.testing.mock_upstream_faults import Fault
from support.remote import remote
from support.runtime import base_url, client, serve, wait_healthy

USER = [{"role": "user", "content": "hello upstream"}]
CHAT = "/v1/chat/completions"


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockUpstream]:
    monkeypatch.setenv("MOCK_KEY", "sk-test")
    async with MockUpstream(api_key="sk-test") as mock:
        yield mock


async def started(*deployments: dict[str, Any]) -> Any:
    context = serve(*deployments)
    runtime: Runtime = await context.__aenter__()
    for dep in deployments:
        await wait_healthy(runtime, dep["name"], dep.get("replicas", 1))
    return context, runtime


async def test_chat_completions_and_passthrough(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream))
    try:
        api = client(runtime)
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        reply = await api.chat.completions.create(
            model="gpt",
            messages=USER,
            max_tokens=5,
            tools=tools,
            extra_body={"vendor_field": {"x": 1}},
        )
        assert len(reply.choices[0].message.content.split()) == 5
        assert reply.usage.completion_tokens == 5  # the upstream's own count
        sent = upstream.requests[-1]
        assert sent.body["model"] == "upstream-model"
        assert sent.body["tools"] == tools
        assert sent.body["vendor_field"] == {"x": 1}
        assert sent.body["stream"] is False  # a non-streamed client: one whole upstream reply
        assert "stream_options" not in sent.body
        stream = await api.chat.completions.create(
            model="gpt", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        words, usage = 0, None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                words += len((choice.delta.content or "").split())
        assert usage is not None
        assert words == usage.completion_tokens == 16
        assert upstream.requests[-1].body["stream"] is True
        assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}
        text = await api.completions.create(model="gpt", prompt="once upon", max_tokens=3)
        assert len(text.choices[0].text.split()) == 3
        assert upstream.requests[-1].path.endswith("/completions")
    finally:
        await context.__aexit__(None, None, None)


async def test_429_with_retry_after_is_honoured_then_succeeds(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream))
    try:
        upstream.script(Fault.status(429, retry_after=1.0))
        began = time.monotonic()
        reply = await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert time.monotonic() - began >= 1.0
        assert reply.choices[0].message.content
        assert upstream.counts[CHAT] == 2
    finally:
        await context.__aexit__(None, None, None)


async def test_5xx_and_resets_are_retried(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream))
    try:
        upstream.script(Fault.status(503), Fault.reset())
        reply = await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert reply.choices[0].message.content
        assert upstream.counts[CHAT] == 3
    finally:
        await context.__aexit__(None, None, None)


async def test_not_idempotent_means_no_retry(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream, idempotent=False))
    try:
        upstream.script(Fault.status(500))
        with pytest.raises(openai.APIStatusError) as failed:
            await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert failed.value.status_code in (502, 503)
        assert upstream.counts[CHAT] == 1
    finally:
        await context.__aexit__(None, None, None)


async def test_final_errors_are_mapped_not_retried(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream))
    try:
        upstream.script(Fault.status(400, code="context_length_exceeded"))
        with pytest.raises(openai.BadRequestError) as bad:
            await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert bad.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
        assert upstream.counts[CHAT] == 1
    finally:
        await context.__aexit__(None, None, None)


async def test_a_run_of_5xx_opens_the_circuit(upstream: MockUpstream) -> None:
    config = {
        "circuit_breaker": {
            "failure_threshold": 3,
            "open_duration_s": 60,
            "initial_open_duration_s": 60,
        },
        "retry": {"max_retries": 0},
    }
    context, runtime = await started(remote(upstream, **config))
    try:
        api = client(runtime)
        upstream.script(*[Fault.status(500)] * 3)
        for _ in range(3):
            with pytest.raises(openai.APIStatusError):
                await api.chat.completions.create(model="gpt", messages=USER)
        seen = upstream.counts[CHAT]
        for _ in range(5):
            with pytest.raises(openai.APIStatusError) as fast:
                await api.chat.completions.create(model="gpt", messages=USER)
            assert fast.value.status_code == 503
            assert "retry-after" in fast.value.response.headers
        assert upstream.counts[CHAT] == seen  # failed fast: the upstream was not called
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url(runtime) + "/metrics") as response,
        ):
            text = await response.text()
        assert 'circuit_state{endpoint="' in text
        assert 'state="open"} 1.0' in text
        assert "inference_runtime_circuit_rejected_total" in text
    finally:
        await context.__aexit__(None, None, None)


async def test_rotated_key_drops_no_request(
    upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, runtime = await started(remote(upstream))
    try:
        api = client(runtime)

        async def one(i: int) -> str:
            reply = await api.chat.completions.create(
                model="gpt", messages=[{"role": "user", "content": f"request {i}"}]
            )
            return reply.choices[0].message.content or ""

        first = await asyncio.gather(*(one(i) for i in range(10)))
        upstream.api_key = "sk-rotated"  # the provider now refuses the old key
        monkeypatch.setenv("MOCK_KEY", "sk-rotated")  # and the operator set the new one
        second = await asyncio.gather(*(one(i) for i in range(10)))
        assert all(first) and all(second)
        assert (
            any(r.status == 401 for r in upstream.responses)
            if hasattr(upstream, "responses")
            else True
        )
    finally:
        await context.__aexit__(None, None, None)


async def test_stall_mid_stream_ends_with_an_error_event(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream, timeouts={"read_s": 0.3}))
    try:
        upstream.script(Fault.stall_after(3, 5.0))
        stream = await client(runtime).chat.completions.create(
            model="gpt", messages=USER, stream=True
        )
        began = time.monotonic()
        received: list[str] = []

        async def drain() -> None:
            async for chunk in stream:
                received.extend(c.delta.content for c in chunk.choices if c.delta.content)

        with pytest.raises(openai.APIError):
            await drain()
        assert received
        assert time.monotonic() - began < 3.0  # cut by the read timeout, not the stall's end
    finally:
        await context.__aexit__(None, None, None)


async def test_slow_first_byte_times_out_and_is_retried(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream, timeouts={"first_byte_s": 0.3}))
    try:
        upstream.script(Fault.slow_first_byte(2.0))
        reply = await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert reply.choices[0].message.content
        assert upstream.counts[CHAT] == 2
    finally:
        await context.__aexit__(None, None, None)


async def test_malformed_sse_before_the_first_token_is_retried(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream))
    try:
        upstream.script(Fault.malformed_sse())
        reply = await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert reply.choices[0].message.content
    finally:
        await context.__aexit__(None, None, None)


async def test_priority_orders_the_queue(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream, max_concurrent=1))
    try:
        api = client(runtime)
        upstream.token_delay_s = 0.02
        busy = asyncio.ensure_future(
            api.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "busy"}])
        )
        await upstream.wait_until(lambda mock: mock.active_requests == 1)

        def ask(word: str, priority: int) -> Any:
            return api.chat.completions.create(
                model="gpt",
                messages=[{"role": "user", "content": word}],
                extra_headers={"X-Priority": str(priority)},
            )

        low = asyncio.ensure_future(ask("later", 5))
        await asyncio.sleep(0.05)  # queued first
        high = asyncio.ensure_future(ask("sooner", -1))
        await asyncio.gather(busy, low, high)
        prompts = [r.prompt for r in upstream.requests]
        assert prompts.index("sooner") < prompts.index("later")
        with pytest.raises(openai.BadRequestError):
            await api.chat.completions.create(
                model="gpt", messages=USER, extra_headers={"X-Priority": "urgent"}
            )
    finally:
        await context.__aexit__(None, None, None)


async def test_refresh_key_rotates_without_dropping_a_stream(
    upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference_runtime.cluster import Release, Route
    from inference_runtime.remote.core import RefreshKey

    context, runtime = await started(remote(upstream))
    try:
        api = client(runtime)
        upstream.token_delay_s = 0.01
        stream = await api.chat.completions.create(model="gpt", messages=USER, stream=True)
        upstream.api_keys = {"sk-test", "sk-next"}  # the provider accepts both for a while
        monkeypatch.setenv("MOCK_KEY", "sk-next")
        assert runtime.system is not None
        dp = runtime.system.child("dp")
        assert dp is not None
        lease = await dp.ask(Route("gpt"))
        assert await lease.engine.ask(RefreshKey()) is True
        dp.tell(Release(lease.deployment, lease.replica_id))
        upstream.api_keys = {"sk-next"}
        words = [c.choices[0].delta.content async for c in stream if c.choices]
        assert len("".join(w or "" for w in words).split()) == 16  # the old stream finished
        reply = await api.chat.completions.create(model="gpt", messages=USER)
        assert reply.choices[0].message.content
        assert upstream.requests[-1].api_key == "sk-next"
    finally:
        await context.__aexit__(None, None, None)


async def test_embeddings_through_a_remote_deployment(upstream: MockUpstream) -> None:
    context, runtime = await started(remote(upstream))
    try:
        api = client(runtime)
        vectors = await api.embeddings.create(model="gpt", input=["one thing", "another"])
        assert len(vectors.data) == 2
        assert len(vectors.data[0].embedding) == 16  # the mock's dimension
        floats = await api.embeddings.create(
            model="gpt", input="one thing", encoding_format="float"
        )
        assert floats.data[0].embedding == vectors.data[0].embedding
        assert upstream.requests[-1].path.endswith("/embeddings")
        assert upstream.requests[-1].body["model"] == "upstream-model"
        upstream.script(Fault.status(503))
        again = await api.embeddings.create(model="gpt", input="retried")
        assert again.data[0].embedding
    finally:
        await context.__aexit__(None, None, None)


async def test_rate_limit_shared_by_deployments_on_one_key(upstream: MockUpstream) -> None:
    limits = {"rate_limits": {"requests_per_minute": 3, "tokens_per_minute": None}}
    first = remote(upstream, "gpt", **limits, serving={"queue_timeout_s": 0.2})
    second = remote(upstream, "gpt-too", **limits, serving={"queue_timeout_s": 0.2})
    context, runtime = await started(first, second)
    try:
        api = client(runtime)
        for name in ("gpt", "gpt-too", "gpt"):
            await api.chat.completions.create(model=name, messages=USER)
        with pytest.raises(openai.RateLimitError) as limited:
            await api.chat.completions.create(model="gpt-too", messages=USER)
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert upstream.counts[CHAT] == 3  # the fourth never left
    finally:
        await context.__aexit__(None, None, None)


async def test_secrets_stay_secret(
    upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MOCK_KEY", "sk-very-secret-value")
    upstream.api_key = "sk-something-else"
    context, runtime = await started(remote(upstream))
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            await client(runtime).chat.completions.create(model="gpt", messages=USER)
        assert refused.value.status_code == 502
        assert "sk-very-secret-value" not in str(refused.value.body)
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url(runtime) + "/metrics") as response,
        ):
            assert "sk-very-secret-value" not in await response.text()
        assert "sk-very-secret-value" not in caplog.text
        from inference_runtime.remote.session import RemoteSession
        from inference_runtime.types import Deployment

        session = RemoteSession(Deployment.from_dict(remote(upstream)))
        await session.load()
        assert "sk-very-secret-value" not in repr(session)
        assert "sk-very-secret-value" not in repr(session.key)
        await session.close()
    finally:
        await context.__aexit__(None, None, None)
