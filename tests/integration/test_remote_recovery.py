"""Remote deployments recover from what an outside check found them stuck in: a half-open
circuit whose probe's client went away, a rotated key on a deployment that may not retry, an
upstream's error event repeating a key, and an Anthropic stream failing within one read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime.testing.mock_upstream import MockUpstream
from inference_runtime.testing.mock_upstream_faults import Fault
from support.remote import anthropic, remote
from support.runtime import base_url, client, serve, wait_healthy

USER = [{"role": "user", "content": "hello upstream"}]
CHAT = "/v1/chat/completions"
KEY = "sk-recovery-0123456789-secret"


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockUpstream]:
    monkeypatch.setenv("MOCK_KEY", KEY)
    async with MockUpstream(api_key=KEY) as mock:
        yield mock


async def test_a_half_open_probe_whose_client_left_gives_its_slot_back(
    upstream: MockUpstream,
) -> None:
    config = {
        "circuit_breaker": {"failure_threshold": 1, "open_duration_s": 0.3},
        "retry": {"max_retries": 0},
    }
    async with serve(remote(upstream, **config)) as runtime:
        await wait_healthy(runtime, "gpt", 1)
        api = client(runtime)
        upstream.script(Fault.status(500))
        with pytest.raises(openai.APIStatusError):  # the circuit opens
            await api.chat.completions.create(model="gpt", messages=USER)
        await asyncio.sleep(0.4)  # half-open: the next request is the probe
        upstream.token_delay_s = 0.2
        body = {"model": "gpt", "messages": USER, "stream": True}
        async with (
            aiohttp.ClientSession() as http,
            http.post(base_url(runtime) + CHAT, json=body) as probe,
        ):
            assert probe.status == 200
            await probe.content.readline()
            probe.close()  # the probe's client goes away before any verdict
        upstream.token_delay_s = 0.0
        await asyncio.sleep(0.1)
        reply = await api.chat.completions.create(model="gpt", messages=USER)
        assert reply.choices[0].message.content  # a new probe went through and closed it


async def test_a_rotated_key_is_read_again_after_a_401_even_without_retries(
    upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve(remote(upstream, idempotent=False)) as runtime:
        await wait_healthy(runtime, "gpt", 1)
        api = client(runtime)
        upstream.api_key = "sk-rotated-9876543210"
        monkeypatch.setenv("MOCK_KEY", "sk-rotated-9876543210")
        with pytest.raises(openai.APIStatusError) as refused:  # may not be retried: fails
            await api.chat.completions.create(model="gpt", messages=USER)
        assert refused.value.status_code == 502
        assert upstream.counts[CHAT] == 1
        reply = await api.chat.completions.create(model="gpt", messages=USER)  # the new key
        assert reply.choices[0].message.content
        assert upstream.counts[CHAT] == 2


async def test_an_error_event_repeating_the_key_reaches_the_client_redacted(
    upstream: MockUpstream,
) -> None:
    async with serve(remote(upstream)) as runtime:
        await wait_healthy(runtime, "gpt", 1)
        upstream.script(Fault.error_after(3, 500, message=f"boom with {KEY} inside"))
        upstream.token_delay_s = 0.02  # words reach the client first: the error is not retried
        stream = await client(runtime).chat.completions.create(
            model="gpt", messages=USER, stream=True
        )
        with pytest.raises(openai.APIError) as failed:
            async for _ in stream:
                pass
        said = str(failed.value.body) + str(failed.value)
        assert "boom with [redacted] inside" in said
        assert KEY not in said


@pytest.fixture
async def claude(upstream: MockUpstream) -> AsyncIterator[Any]:
    async with serve(anthropic(upstream, key_env="MOCK_KEY")) as running:
        await wait_healthy(running, "claude", 1)
        yield running


@pytest.mark.parametrize("fault", [Fault.error_after(4, 529), Fault.malformed_sse(4)])
async def test_an_anthropic_stream_failing_within_its_first_read_is_retried(
    claude: Any, upstream: MockUpstream, fault: Fault
) -> None:
    upstream.script(fault)  # its first events and the failure come in one read
    reply = await client(claude).chat.completions.create(model="claude", messages=USER)
    assert reply.choices[0].message.content
    assert upstream.counts["/v1/messages"] == 2


async def test_an_anthropic_error_event_is_redacted(claude: Any, upstream: MockUpstream) -> None:
    upstream.script(*[Fault.error_after(0, 400, message=f"no: {KEY}")] * 4)
    with pytest.raises(openai.APIStatusError) as failed:
        await client(claude).chat.completions.create(model="claude", messages=USER)
    assert KEY not in str(failed.value.body)
