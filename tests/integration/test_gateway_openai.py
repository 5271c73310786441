"""The runtime end to end over real HTTP on loopback, with the official ``openai`` client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from support.runtime import USER, base_url, client, fake, serve, wait_healthy


async def test_models_chat_and_completions() -> None:
    async with serve(fake(output_tokens=12)) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        models = await api.models.list()
        assert [m.id for m in models.data] == ["fake"]
        assert (await api.models.retrieve("fake")).id == "fake"

        chat = await api.chat.completions.create(model="fake", messages=USER)
        assert chat.object == "chat.completion"
        assert chat.choices[0].message.role == "assistant"
        assert len(chat.choices[0].message.content.split()) == 12
        assert chat.choices[0].finish_reason == "stop"
        assert chat.usage.completion_tokens == 13  # 12 words and the end-of-sequence token
        assert chat.usage.total_tokens == chat.usage.prompt_tokens + 13

        text = await api.completions.create(model="fake", prompt="Once upon a time", max_tokens=5)
        assert text.object == "text_completion"
        assert len(text.choices[0].text.split()) == 5
        assert text.choices[0].finish_reason == "length"
        assert text.usage.prompt_tokens == 4


async def test_streaming_with_usage_and_n() -> None:
    async with serve(fake(output_tokens=50)) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        stream = await api.chat.completions.create(
            model="fake",
            messages=USER,
            stream=True,
            n=2,
            max_tokens=7,
            stream_options={"include_usage": True},
        )
        texts: dict[int, str] = {}
        roles, finishes, usage = set(), {}, None
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                usage = chunk.usage
                assert chunk.choices == []
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.delta.role:
                    roles.add(choice.index)
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert roles == {0, 1}
        assert finishes == {0: "length", 1: "length"}
        assert all(len(t.split()) == 7 for t in texts.values())
        assert usage is not None
        assert usage.completion_tokens == 14

        stream = await api.completions.create(
            model="fake", prompt="stream me", max_tokens=4, stream=True
        )
        pieces = [c.choices[0].text async for c in stream if c.choices]
        assert len("".join(pieces).split()) == 4


async def test_sse_framing_is_openai_s() -> None:
    async with serve(fake(output_tokens=3)) as runtime:
        await wait_healthy(runtime, "fake", 1)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                base_url(runtime) + "/v1/chat/completions",
                json={"model": "fake", "messages": USER, "stream": True},
            ) as response,
        ):
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.headers["X-Replica-Id"] == "fake#0"
            raw = (await response.read()).decode()
        frames = [f for f in raw.split("\n\n") if f]
        assert all(f.startswith("data: ") for f in frames)
        assert frames[-1] == "data: [DONE]"
        assert '"usage"' not in raw  # only with stream_options.include_usage


async def test_stop_seed_and_max_completion_tokens() -> None:
    async with serve(fake(output_tokens=40)) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        full = await api.chat.completions.create(model="fake", messages=USER, temperature=0)
        words = full.choices[0].message.content.split()
        cut = await api.chat.completions.create(
            model="fake", messages=USER, temperature=0, stop=[" " + words[3]]
        )
        assert cut.choices[0].message.content == " ".join(words[:3])
        assert cut.choices[0].finish_reason == "stop"
        seeded = [
            (
                await api.chat.completions.create(
                    model="fake", messages=USER, seed=42, temperature=0.8, max_completion_tokens=9
                )
            )
            .choices[0]
            .message.content
            for _ in range(2)
        ]
        assert seeded[0] == seeded[1]
        assert len(seeded[0].split()) == 9


async def test_errors_in_openai_shape() -> None:
    async with serve(fake(max_context=50), max_body_bytes=2048) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        with pytest.raises(openai.NotFoundError) as missing:
            await api.chat.completions.create(model="nope", messages=USER)
        assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await api.models.retrieve("nope")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"temperature": 3}, "temperature"),
            ({"presence_penalty": 1.0}, "presence_penalty"),
            ({"logprobs": True}, "logprobs"),
            ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
            ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
            ({"max_tokens": 49}, "messages"),  # over the context window
            ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ]
        for kwargs, param in cases:
            with pytest.raises(openai.BadRequestError) as bad:
                await api.chat.completions.create(model="fake", messages=USER, **kwargs)
            assert bad.value.body["param"] == param, (kwargs, bad.value.body)  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as bad:
            await api.chat.completions.create(model="fake", messages=[])
        async with aiohttp.ClientSession() as http:
            big = {"model": "fake", "messages": [{"role": "user", "content": "x" * 4096}]}
            async with http.post(base_url(runtime) + "/v1/chat/completions", json=big) as r:
                assert r.status == 413
                assert (await r.json())["error"]["code"] == "request_too_large"
            json_type = {"Content-Type": "application/json"}  # else 415, before any parsing
            async with http.post(
                base_url(runtime) + "/v1/chat/completions", data=b"{", headers=json_type
            ) as r:
                assert r.status == 400
                assert (await r.json())["error"]["type"] == "invalid_request_error"
            async with http.get(base_url(runtime) + "/v2/nothing") as r:
                assert r.status == 404
                assert "error" in await r.json()


async def test_backpressure_is_429_with_retry_after() -> None:
    dep = fake(
        token_latency_ms=20,
        output_tokens=1000,
        serving={"max_concurrent": 1, "queue_capacity": 0, "retry_after_s": 2},
    )
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        first = await api.chat.completions.create(model="fake", messages=USER, stream=True)
        await first.__anext__()
        with pytest.raises(openai.RateLimitError) as limited:
            await api.chat.completions.create(model="fake", messages=USER)
        assert limited.value.response.headers["retry-after"] == "2"
        assert limited.value.body["code"] == "capacity_exhausted"  # type: ignore[index]
        await first.close()


async def test_queue_mode_waits_for_capacity() -> None:
    dep = fake(
        token_latency_ms=1,
        output_tokens=20,
        serving={
            "max_concurrent": 1,
            "queue_capacity": 0,
            "on_capacity_exhausted": "queue",
            "queue_timeout_s": 10,
        },
    )
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        results = await asyncio.gather(
            *(api.chat.completions.create(model="fake", messages=USER) for _ in range(4))
        )
        assert all(r.usage.completion_tokens == 21 for r in results)


async def test_fallback_when_capacity_is_exhausted() -> None:
    primary = fake(
        "primary",
        token_latency_ms=20,
        output_tokens=1000,
        fallbacks=["backup"],
        serving={"max_concurrent": 1, "queue_capacity": 0, "on_capacity_exhausted": "fallback"},
    )
    async with serve(primary, fake("backup", output_tokens=3)) as runtime:
        await wait_healthy(runtime, "primary", 1)
        await wait_healthy(runtime, "backup", 1)
        api = client(runtime)
        busy = await api.chat.completions.create(model="primary", messages=USER, stream=True)
        await busy.__anext__()
        raw = await api.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-replica-id"] == "backup#0"
        assert len(raw.parse().choices[0].message.content.split()) == 3
        await busy.close()


async def test_budget_rejects_with_429() -> None:
    dep = {
        **fake("metered", output_tokens=4),
        "pricing": {"input_per_mtok": 0, "output_per_mtok": 1000},
        "budget": {"max_spend_per_hour": 0.01, "on_exceeded": "reject"},
    }
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "metered", 1)
        api = client(runtime)
        ok = await api.chat.completions.create(model="metered", messages=USER, max_tokens=4)
        assert ok.usage.completion_tokens == 4  # worst case 0.004 fits the 0.01 budget
        with pytest.raises(openai.RateLimitError) as over:
            await api.chat.completions.create(model="metered", messages=USER, max_tokens=20)
        assert over.value.body["code"] == "budget_exceeded"  # type: ignore[index]
        assert int(over.value.response.headers["retry-after"]) >= 1
