"""Budgets are exact under concurrency whatever the prompt's language: the reservation bounds
the prompt's tokens (its bytes), so the settled spend never passes the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from inference_runtime.metrics import GetSnapshot
from support.runtime import client, fake, serve, wait_healthy

BUDGET = 200.0
PROMPTS = {
    # one-character words: the fake runner's tokens are words, as many as the characters here
    # (a quarter of the length, the old estimate, was half of them)
    "cjk": " ".join("预算必须精确无论提示使用什么语言都一样"),
    "emoji": " ".join("😀🚀🎉🔥💡🌍🍕🎵📚✨🤖🧠"),
    "mixed": " ".join("a字😀b語🚀c"),
}


async def settled(runtime: Any, name: str) -> float:
    assert runtime.system is not None
    metrics = runtime.system.child("metrics")
    assert metrics is not None
    snapshot = await metrics.ask(GetSnapshot())
    spend: float = snapshot[name].spend["hour"]
    return spend


@pytest.mark.parametrize("language", sorted(PROMPTS))
async def test_100_concurrent_requests_never_settle_over_the_budget(language: str) -> None:
    dep = {
        **fake("metered", output_tokens=2, token_latency_ms=1),
        "pricing": {"input_per_mtok": 1e6, "output_per_mtok": 1e6},  # 1 per token
        "budget": {"max_spend_per_hour": BUDGET, "on_exceeded": "reject"},
    }
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "metered", 1)
        api = client(runtime, timeout=60)
        prompt = PROMPTS[language]

        async def one(i: int) -> int:
            try:
                if i % 2:
                    reply: Any = await api.chat.completions.create(
                        model="metered",
                        messages=[{"role": "user", "content": prompt}],
                        max_tokens=2,
                    )
                else:
                    reply = await api.completions.create(
                        model="metered", prompt=prompt, max_tokens=2
                    )
            except openai.RateLimitError as error:
                assert error.body["code"] == "budget_exceeded"  # type: ignore[index]
                return 0
            assert reply.usage is not None
            return int(reply.usage.total_tokens)

        spent_by_replies = sum(await asyncio.gather(*(one(i) for i in range(100))))
        assert spent_by_replies > 0  # some were served
        assert spent_by_replies <= BUDGET
        for _ in range(200):  # the last records reach the metrics actor after the replies
            if await settled(runtime, "metered") >= spent_by_replies:
                break
            await asyncio.sleep(0.01)
        assert await settled(runtime, "metered") == pytest.approx(spent_by_replies)
        assert await settled(runtime, "metered") <= BUDGET
