"""Chaos over real HTTP: requests that poison, kill and hang replicas sent among concurrent
streamed and whole (non-streamed) requests of a 3-replica deployment.

What must hold: no innocent request is lost before its first token (each succeeds, or a stream
that already sent tokens ends with an SSE error event, never silently); each bad request is
answered with a final 500 ``request_failed_replica``; the deployment keeps serving throughout
and after. A bad request alone in its failing step is final at once (one context); one that
shared its step with others is retried once, isolated, and may break that second context too
before it is final: the counts allow that (two contexts, or two replicas for a hang), never more.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai

from support.runtime import base_url, client, fake, serve, table, wait_healthy

INNOCENTS = 60
CONCURRENCY = 12
BAD = ("POISON", "FATAL", "HANG", "POISON")
"""The markers of the bad requests, sent one after another while the load runs."""
MANAGER = {
    "health_interval_s": 0.05,
    "hang_timeout_s": 0.5,
    "replace_backoff_s": 0.05,
    "drain_timeout_s": 1.0,
}


@dataclass
class Outcomes:
    ok: int = 0
    ended_with_error_event: int = 0
    lost: list[str] = field(default_factory=list)
    """Innocents that failed before their first token, or ended without finishing."""
    bad: list[tuple[str, int, str | None]] = field(default_factory=list)


async def innocent(api: openai.AsyncOpenAI, i: int, out: Outcomes) -> None:
    messages = [{"role": "user", "content": f"innocent number {i} says hello"}]
    if i % 2:
        try:
            reply = await api.chat.completions.create(
                model="chaos", messages=messages, max_tokens=16
            )
        except openai.APIError as error:
            out.lost.append(f"whole #{i}: {error!r}")
            return
        if reply.usage is None or reply.usage.completion_tokens != 16:
            out.lost.append(f"whole #{i}: incomplete {reply.usage!r}")
        else:
            out.ok += 1
        return
    chunks, finished = 0, False
    try:
        stream = await api.chat.completions.create(
            model="chaos", messages=messages, max_tokens=16, stream=True
        )
        async for chunk in stream:
            if chunk.choices:
                chunks += 1
                finished = finished or chunk.choices[0].finish_reason is not None
    except openai.APIError as error:
        if chunks == 0:  # nothing reached the client: it had to be retried, not failed
            out.lost.append(f"stream #{i} before its first token: {error!r}")
        else:
            out.ended_with_error_event += 1
        return
    if finished:
        out.ok += 1
    else:
        out.lost.append(f"stream #{i}: ended silently after {chunks} chunks")


async def bad_request(api: openai.AsyncOpenAI, marker: str, out: Outcomes) -> None:
    try:
        await api.chat.completions.create(
            model="chaos", messages=[{"role": "user", "content": f"{marker} now"}], max_tokens=16
        )
    except openai.APIStatusError as error:
        code = error.body.get("code") if isinstance(error.body, dict) else None
        out.bad.append((marker, error.status_code, code))
    else:
        out.bad.append((marker, 200, None))


async def healthy(runtime: Any) -> int:
    rows = (await table(runtime)).deployments.get("chaos", ())
    return sum(r.state.value == "healthy" for r in rows)


async def test_poison_fatal_and_hang_under_load_lose_no_innocent_request() -> None:
    dep = fake(
        "chaos",
        replicas=3,
        token_latency_ms=3,
        output_tokens=1000,
        poison_marker="POISON",
        fatal_marker="FATAL",
        hang_marker="HANG",
    )
    async with serve(dep, sections={"manager": MANAGER}) as runtime:
        await wait_healthy(runtime, "chaos", 3)
        api = client(runtime, timeout=30)
        out = Outcomes()
        gate = asyncio.Semaphore(CONCURRENCY)
        started = 0
        serving_seen: list[int] = []

        async def one(i: int) -> None:
            nonlocal started
            async with gate:
                started += 1
                await innocent(api, i, out)

        async def chaos() -> None:
            for k, marker in enumerate(BAD):
                while started < (k + 1) * INNOCENTS // (len(BAD) + 1):
                    await asyncio.sleep(0.005)
                await bad_request(api, marker, out)
                serving_seen.append(await healthy(runtime))

        await asyncio.wait_for(
            asyncio.gather(chaos(), *(one(i) for i in range(INNOCENTS))), timeout=60
        )

        assert out.lost == []
        assert out.ok + out.ended_with_error_event == INNOCENTS
        assert sorted(out.bad) == sorted((marker, 500, "request_failed_replica") for marker in BAD)
        assert min(serving_seen) >= 1  # never the whole deployment down
        # each bad request broke at most two replicas (shared step, then alone): a poison two
        # contexts (an isolated fatal one restarts its context), a fatal one replica, a hang
        # (a step that never returns: only replacing the replica ends it) two replicas
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url(runtime) + "/admin/deployments/chaos") as response,
        ):
            replicas = (await response.json())["replica_list"]
        assert sum(r["failures"] for r in replicas) <= BAD.count("FATAL") + 2 * BAD.count("HANG")
        restarts = sum(r.context_restarts for r in (await table(runtime)).deployments["chaos"])
        assert restarts <= 2 * BAD.count("POISON") + BAD.count("FATAL")
        await wait_healthy(runtime, "chaos", 1)
        after = await api.chat.completions.create(
            model="chaos", messages=[{"role": "user", "content": "still there?"}], max_tokens=3
        )
        assert after.usage is not None
        assert after.usage.completion_tokens == 3
