"""Anthropic deployments (runtime: anthropic) through the gateway, with the official OpenAI
client, against MockUpstream's Messages API: the translation both ways, usage, retries of 529,
a refused key re-read once, and parameters Anthropic cannot honour refused by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from inference_runtime import Runtime
from inference_runtime.testing.mock_upstream import MockUpstream
from inference_runtime.testing.mock_upstream_faults import Fault
from support.remote import anthropic
from support.runtime import client, serve, wait_healthy

USER = [{"role": "user", "content": "hello upstream"}]
MESSAGES = "/v1/messages"


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockUpstream]:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "sk-ant-test")
    async with MockUpstream(api_key="sk-ant-test") as mock:
        yield mock


@pytest.fixture
async def runtime(upstream: MockUpstream) -> AsyncIterator[Runtime]:
    async with serve(anthropic(upstream, key_env="ANTHROPIC_TEST_KEY")) as running:
        await wait_healthy(running, "claude", 1)
        yield running


async def test_chat_non_stream_and_stream_with_usage(
    runtime: Runtime, upstream: MockUpstream
) -> None:
    api = client(runtime)
    # one-letter words: the upstream's count (7) is above our 4-characters-a-token guess (3)
    messages: Any = [{"role": "system", "content": "a b c"}, {"role": "user", "content": "d e f g"}]
    reply = await api.chat.completions.create(
        model="claude", messages=messages, max_tokens=5, temperature=0.3
    )
    assert len((reply.choices[0].message.content or "").split()) == 5
    assert reply.choices[0].finish_reason == "length"  # Anthropic's max_tokens
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 5)  # upstream's
    sent = upstream.requests[-1]
    assert sent.path == MESSAGES
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in {h.lower() for h in sent.headers}
    assert sent.body == {
        "model": "claude-upstream",
        "system": "a b c",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "d e f g"}]}],
        "stream": True,
        "max_tokens": 5,
        "temperature": 0.3,
    }
    stream = await api.chat.completions.create(
        model="claude", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    words, usage, finish = 0, None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            words += len((choice.delta.content or "").split())
            finish = choice.finish_reason or finish
    assert usage is not None and finish == "stop"
    assert words == usage.completion_tokens == 16
    assert usage.prompt_tokens == 7
    assert upstream.requests[-1].body["max_tokens"] == 4096  # Anthropic requires one


async def test_stop_sequences_reach_the_upstream(runtime: Runtime, upstream: MockUpstream) -> None:
    api = client(runtime)
    first = await api.chat.completions.create(model="claude", messages=USER, max_tokens=6)
    words = (first.choices[0].message.content or "").split()
    cut = await api.chat.completions.create(model="claude", messages=USER, stop=[words[3]])
    assert upstream.requests[-1].body["stop_sequences"] == [words[3]]
    assert (cut.choices[0].message.content or "").split() == words[:3]
    assert cut.choices[0].finish_reason == "stop"  # Anthropic's stop_sequence


async def test_529_overloaded_is_retried_then_succeeds(
    runtime: Runtime, upstream: MockUpstream
) -> None:
    upstream.script(Fault.status(529), Fault.error_after(1, 529))  # then one mid-stream
    reply = await client(runtime).chat.completions.create(model="claude", messages=USER)
    assert reply.choices[0].message.content
    assert upstream.counts[MESSAGES] == 3


async def test_a_refused_key_is_read_again_once(
    runtime: Runtime, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = client(runtime)
    upstream.api_key = "sk-ant-rotated"  # the provider now refuses the old key
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "sk-ant-rotated")  # and the operator set the new
    reply = await api.chat.completions.create(model="claude", messages=USER)
    assert reply.choices[0].message.content
    keys = [r.headers["x-api-key"] for r in upstream.requests]
    assert keys == ["sk-ant-test", "sk-ant-rotated"]
    upstream.clear()
    upstream.script(Fault.wrong_key(), Fault.wrong_key())  # a key that does not work at all
    with pytest.raises(openai.APIStatusError) as failed:
        await api.chat.completions.create(model="claude", messages=USER)
    assert failed.value.status_code == 502  # about this deployment's key, not the client's
    assert upstream.counts[MESSAGES] == 2  # read again once, then given up


@pytest.mark.parametrize(
    ("param", "kwargs"),
    [
        ("temperature", {"temperature": 1.5}),
        ("n", {"n": 2}),
        ("seed", {"seed": 1}),
        ("logprobs", {"logprobs": True}),
        ("presence_penalty", {"presence_penalty": 0.5}),
        ("response_format", {"response_format": {"type": "json_object"}}),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_refused_parameters_are_a_400_naming_them(
    runtime: Runtime, upstream: MockUpstream, param: str, kwargs: dict[str, Any], stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client(runtime).chat.completions.create(
            model="claude", messages=USER, stream=stream, **kwargs
        )
    assert refused.value.body["param"] == param  # type: ignore[index]
    assert param in refused.value.message
    assert upstream.counts[MESSAGES] == 0  # refused before any call


async def test_legacy_completions_are_refused(runtime: Runtime, upstream: MockUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client(runtime).completions.create(model="claude", prompt="once upon")
    assert refused.value.body["param"] == "prompt"  # type: ignore[index]
    assert "chat completions" in refused.value.message
    assert upstream.counts[MESSAGES] == 0


async def test_malformed_sse_before_the_first_token_is_retried(
    runtime: Runtime, upstream: MockUpstream
) -> None:
    upstream.script(Fault.malformed_sse())
    reply = await client(runtime).chat.completions.create(model="claude", messages=USER)
    assert reply.choices[0].message.content
    assert upstream.counts[MESSAGES] == 2
