"""An upstream restarted under load (stopped for about a second, then back on the same port, 20
requests in flight): every request is answered, and once the upstream is back requests succeed
again within a couple of seconds, not after the circuit's whole ``open_duration_s``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from inference_runtime.testing.mock_upstream import MockUpstream
from support.remote import remote
from support.runtime import client, serve, wait_healthy

USER = [{"role": "user", "content": "hello upstream"}]
IN_FLIGHT = 20
OPEN_DURATION_S = 120.0
"""Far longer than the test may take: a circuit opened for all of it fails the test."""


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockUpstream]:
    monkeypatch.setenv("MOCK_KEY", "sk-test")
    async with MockUpstream(api_key="sk-test", token_delay_s=0.05) as mock:
        yield mock


async def _one(api: openai.AsyncOpenAI, index: int) -> str:
    """A request, streamed or not; its outcome ("ok" or the error's class)."""
    try:
        if index % 2:
            stream = await api.chat.completions.create(model="gpt", messages=USER, stream=True)
            async for _chunk in stream:
                pass
        else:
            await api.chat.completions.create(model="gpt", messages=USER)
    except openai.APIError as error:
        return type(error).__name__
    return "ok"


async def _until_served(api: openai.AsyncOpenAI, *, tries: int) -> int:
    """Requests sent, one after another, until one succeeds (bounded by ``tries``)."""
    for attempt in range(1, tries + 1):
        try:
            await api.chat.completions.create(model="gpt", messages=USER, max_tokens=2)
        except openai.APIStatusError as error:
            assert error.status_code in (502, 503), error
            await asyncio.sleep(0.2)
            continue
        return attempt
    raise AssertionError(f"no request served in {tries} tries after the upstream came back")


async def test_a_restarted_upstream_is_served_again_soon(upstream: MockUpstream) -> None:
    deployment: dict[str, Any] = remote(
        upstream,
        max_concurrent=IN_FLIGHT,
        circuit_breaker={"failure_threshold": 5, "open_duration_s": OPEN_DURATION_S},
    )
    async with serve(deployment) as runtime:
        await wait_healthy(runtime, "gpt", 1)
        api = client(runtime, timeout=60)
        load = [asyncio.create_task(_one(api, i)) for i in range(IN_FLIGHT)]
        for _ in range(400):  # until every request is at the upstream (bounded, not timed)
            if upstream.active_requests >= IN_FLIGHT:
                break
            await asyncio.sleep(0.01)
        assert upstream.active_requests >= IN_FLIGHT
        await upstream.stop()
        await asyncio.sleep(1.0)
        await upstream.start()
        outcomes = await asyncio.wait_for(asyncio.gather(*load), timeout=60)
        assert len(outcomes) == IN_FLIGHT  # every one answered, one way or another
        # 100 tries 0.2 s apart: well short of OPEN_DURATION_S, and enough for a few probes
        assert await asyncio.wait_for(_until_served(api, tries=100), timeout=60) >= 1
        assert await _one(api, 0) == "ok"
        assert await _one(api, 1) == "ok"
