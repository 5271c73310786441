"""MockUpstream's OpenAI routes, seen by aiohttp and by the official ``openai`` client: the reply
shapes, determinism and usage, auth and key rotation, keep-alive, and what tests can observe."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime.testing import Fault, MockUpstream

KEY = "sk-test"
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    async with MockUpstream(api_key=KEY, models=("gpt-test", "embed-test")) as server:
        yield server


_OPEN: list[openai.AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


def client(upstream: MockUpstream, key: str = KEY) -> openai.AsyncOpenAI:
    """An ``openai`` client without retries (closed after the test)."""
    api = openai.AsyncOpenAI(base_url=upstream.url, api_key=key, max_retries=0, timeout=10)
    _OPEN.append(api)
    return api


async def post(
    upstream: MockUpstream, path: str, body: dict[str, Any], key: str | None = KEY
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(upstream.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_url_and_lifecycle() -> None:
    upstream = MockUpstream()
    with pytest.raises(RuntimeError):
        _ = upstream.url  # no port before start
    await upstream.start()
    try:
        assert upstream.url == f"http://127.0.0.1:{upstream.port}/v1"
        assert upstream.base_url == f"http://127.0.0.1:{upstream.port}"
        with pytest.raises(RuntimeError):
            await upstream.start()
    finally:
        await upstream.stop()
    await upstream.stop()  # stopping twice is harmless


async def test_chat_non_stream_with_openai_client(upstream: MockUpstream) -> None:
    api = client(upstream)
    reply = await api.chat.completions.create(
        model="gpt-test",
        messages=[
            {"role": "system", "content": "You are terse"},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        response_format={"type": "json_object"},
    )
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-test"
    assert reply.choices[0].message.role == "assistant"
    text = reply.choices[0].message.content or ""
    assert len(text.split()) == 16  # tokens_per_response
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3 + 6  # words of every message content
    assert reply.usage.completion_tokens == 16
    assert reply.usage.total_tokens == 25
    # tools and response_format are accepted and kept for assertions
    recorded = upstream.requests[-1]
    assert recorded.body["tools"][0]["function"]["name"] == "f"
    assert recorded.body["response_format"] == {"type": "json_object"}
    assert recorded.api_key == KEY
    assert recorded.headers["authorization"] == f"Bearer {KEY}"  # case-insensitive


async def test_replies_are_deterministic_and_capped(upstream: MockUpstream) -> None:
    api = client(upstream)
    first = await api.chat.completions.create(model="gpt-test", messages=USER, max_tokens=5)
    again = await api.chat.completions.create(model="gpt-test", messages=USER, max_tokens=5)
    other = await api.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Something else entirely"}]
    )
    assert first.choices[0].message.content == again.choices[0].message.content
    assert len((first.choices[0].message.content or "").split()) == 5
    assert first.choices[0].finish_reason == "length"
    assert (other.choices[0].message.content or "")[:20] != first.choices[0].message.content
    # max_completion_tokens wins over max_tokens, as at OpenAI
    capped = await api.chat.completions.create(
        model="gpt-test", messages=USER, max_completion_tokens=3
    )
    assert capped.usage is not None and capped.usage.completion_tokens == 3
    # a max at the natural length is not a cut
    exact = await api.chat.completions.create(model="gpt-test", messages=USER, max_tokens=16)
    assert exact.choices[0].finish_reason == "stop"


async def test_tokens_per_response_n_and_stop() -> None:
    async with MockUpstream(tokens_per_response=4) as upstream:
        api = client(upstream, key="anything")  # no api_key: any key is accepted
        reply = await api.chat.completions.create(model="m", messages=USER, n=3)
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert all(len((c.message.content or "").split()) == 4 for c in reply.choices)
        assert reply.usage is not None and reply.usage.completion_tokens == 12
        words = (reply.choices[0].message.content or "").split()
        stopped = await api.chat.completions.create(model="m", messages=USER, stop=[words[2]])
        assert (stopped.choices[0].message.content or "").split() == words[:2]
        assert stopped.choices[0].finish_reason == "stop"


async def test_chat_stream_with_usage(upstream: MockUpstream) -> None:
    api = client(upstream)
    stream = await api.chat.completions.create(
        model="gpt-test",
        messages=USER,
        stream=True,
        n=2,
        max_tokens=6,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {0: "", 1: ""}
    roles: set[int] = set()
    finishes: dict[int, str | None] = {}
    usage = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.add(choice.index)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert roles == {0, 1}
    assert all(len(t.split()) == 6 for t in texts.values())
    assert finishes == {0: "length", 1: "length"}
    assert usage is not None and usage.completion_tokens == 12 and usage.prompt_tokens == 6
    # the streamed words are the non-streamed reply
    whole = await api.chat.completions.create(model="gpt-test", messages=USER, n=2, max_tokens=6)
    assert [c.message.content for c in whole.choices] == [texts[0], texts[1]]
    assert upstream.requests[0].stream and not upstream.requests[1].stream


async def test_stream_without_usage_has_no_usage_field(upstream: MockUpstream) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            upstream.url + "/chat/completions",
            json={"model": "m", "messages": USER, "stream": True, "max_tokens": 2},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events)
    assert b'"usage"' not in raw
    assert len(events) == 1 + 2 + 1 + 1  # role, two words, finish, [DONE]


async def test_completions(upstream: MockUpstream) -> None:
    api = client(upstream)
    text = await api.completions.create(model="gpt-test", prompt="Once upon a time", max_tokens=5)
    assert text.object == "text_completion"
    assert len(text.choices[0].text.split()) == 5
    assert text.choices[0].finish_reason == "length"
    assert text.usage is not None and text.usage.prompt_tokens == 4
    streamed = ""
    usage = None
    stream = await api.completions.create(
        model="gpt-test",
        prompt="Once upon a time",
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        streamed += "".join(c.text for c in chunk.choices)
        usage = chunk.usage or usage
    assert streamed == text.choices[0].text
    assert usage is not None and usage.completion_tokens == 5
    batch = await api.completions.create(model="gpt-test", prompt=["a b", "c d e"], max_tokens=2)
    assert len(batch.choices) == 2
    assert batch.usage is not None and batch.usage.prompt_tokens == 5


async def test_embeddings_float_and_base64(upstream: MockUpstream) -> None:
    api = client(upstream)
    default = await api.embeddings.create(model="embed-test", input=["a cat", "a kitten"])
    # the openai client asks for base64 unless told otherwise, and decodes it
    assert upstream.requests[-1].body["encoding_format"] == "base64"
    floats = await api.embeddings.create(
        model="embed-test", input=["a cat", "a kitten"], encoding_format="float"
    )
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(floats.data[0].embedding) == 16
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == 4
    sized = await api.embeddings.create(model="embed-test", input="x", dimensions=4)
    assert len(sized.data[0].embedding) == 4
    status, raw = await post(
        upstream, "/embeddings", {"model": "e", "input": "a cat", "encoding_format": "base64"}
    )
    assert status == 200
    decoded = struct.unpack("<16f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == floats.data[0].embedding


async def test_models(upstream: MockUpstream) -> None:
    api = client(upstream)
    assert [m.id for m in (await api.models.list()).data] == ["gpt-test", "embed-test"]
    assert (await api.models.retrieve("gpt-test")).id == "gpt-test"
    with pytest.raises(openai.NotFoundError):
        await api.models.retrieve("nope")


async def test_auth_errors_have_openai_shape(upstream: MockUpstream) -> None:
    for key in ("sk-wrong", None):
        status, body = await post(upstream, "/chat/completions", {"messages": USER}, key=key)
        assert status == 401
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await client(upstream, key="sk-wrong").chat.completions.create(model="m", messages=USER)


async def test_bad_requests(upstream: MockUpstream) -> None:
    status, body = await post(upstream, "/chat/completions", {"model": "m"})
    assert status == 400 and body["error"]["param"] == "messages"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            upstream.url + "/chat/completions",
            data=b"{not json",
            headers={"Authorization": f"Bearer {KEY}"},
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    status, body = await post(upstream, "/nowhere", {})
    assert status == 404 and "error" in body
    assert upstream.counts["/v1/nowhere"] == 1


async def test_key_rotation_and_several_keys(upstream: MockUpstream) -> None:
    old, new = client(upstream, KEY), client(upstream, "sk-new")
    await old.models.list()
    upstream.api_key = "sk-new"
    with pytest.raises(openai.AuthenticationError):
        await old.models.list()
    await new.models.list()
    assert upstream.api_key == "sk-new"
    upstream.api_keys = {KEY, "sk-new"}
    await old.models.list()
    await new.models.list()
    assert upstream.api_key is None  # ambiguous with two keys
    upstream.api_keys = set()
    with pytest.raises(openai.AuthenticationError):
        await new.models.list()
    upstream.api_key = None  # auth off
    await client(upstream, "whatever").models.list()
    with pytest.raises(ValueError):
        MockUpstream(api_key="a", api_keys=["b"])


async def test_keep_alive_connections_are_counted(upstream: MockUpstream) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(10):
            async with session.post(
                upstream.url + "/chat/completions",
                json={"model": "m", "messages": USER, "stream": True},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as response:
                await response.read()
    assert upstream.connections_opened == 1
    api = client(upstream)
    for _ in range(5):
        await api.chat.completions.create(model="m", messages=USER)
    assert upstream.connections_opened == 2  # the openai client pools too
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(3):
            async with session.get(
                upstream.url + "/models", headers={"Authorization": f"Bearer {KEY}"}
            ) as response:
                await response.read()
    assert upstream.connections_opened == 5


async def test_observability() -> None:
    async with MockUpstream(api_key=KEY, token_delay_s=0.05) as upstream:
        before = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                upstream.url + "/chat/completions",
                json={"model": "m", "messages": USER, "stream": True},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as response,
        ):
            await response.content.readline()
            assert upstream.active_streams == 1
            assert upstream.active_requests == 1
            response.close()  # the client goes away mid-stream
        await upstream.wait_until(lambda u: u.active_streams == 0 and u.active_requests == 0)
        assert upstream.counts == {"/v1/chat/completions": 1}
        recorded = upstream.requests[0]
        assert recorded.method == "POST" and recorded.path == "/v1/chat/completions"
        assert before <= recorded.received_at <= time.monotonic()
        assert recorded.prompt == "What is the capital of France?"
        assert KEY not in repr(recorded)
        assert "Bearer ***" in repr(recorded)
        assert KEY not in repr(upstream)
        upstream.clear()
        assert upstream.requests == [] and not upstream.counts


async def test_record_requests_off_keeps_counts() -> None:
    async with MockUpstream(record_requests=False) as upstream:
        await client(upstream).models.list()
        assert upstream.requests == []
        assert upstream.counts["/v1/models"] == 1


async def test_delays() -> None:
    async with MockUpstream(token_delay_s=0.02, first_byte_delay_s=0.1) as upstream:
        api = client(upstream)
        start = time.monotonic()
        stream = await api.chat.completions.create(
            model="m", messages=USER, stream=True, max_tokens=5
        )
        first = time.monotonic() - start
        async for _ in stream:
            pass
        total = time.monotonic() - start
        assert first >= 0.1
        assert total >= 0.1 + 5 * 0.02
        start = time.monotonic()
        await api.chat.completions.create(model="m", messages=USER, max_tokens=5)
        assert time.monotonic() - start >= 0.1 + 5 * 0.02  # non-stream waits the same


async def test_restart_on_the_same_port() -> None:
    upstream = MockUpstream()
    await upstream.start()
    url = upstream.url
    await upstream.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(url + "/models"):
            pass
    await upstream.start()
    try:
        assert upstream.url == url
        async with aiohttp.ClientSession() as session, session.get(url + "/models") as response:
            assert response.status == 200
    finally:
        await upstream.stop()


async def test_stop_does_not_wait_for_a_stalled_stream() -> None:
    upstream = MockUpstream()
    await upstream.start()
    upstream.script(Fault.stall_after(1, 30.0))
    session = aiohttp.ClientSession()
    try:
        response = await session.post(
            upstream.url + "/chat/completions", json={"messages": USER, "stream": True}
        )
        await response.content.readline()
        start = time.monotonic()
        await upstream.stop()
        assert time.monotonic() - start < 2.0
        assert upstream.active_streams == 0
    finally:
        await session.close()


async def test_concurrent_load_is_served() -> None:
    async with MockUpstream(record_requests=False) as upstream:
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> int:
                async with session.post(
                    upstream.url + "/chat/completions",
                    json={
                        "messages": [{"role": "user", "content": f"q {i}"}],
                        "stream": i % 2 == 0,
                    },
                ) as response:
                    await response.read()
                    return response.status

            statuses = await asyncio.gather(*(one(i) for i in range(400)))
        assert statuses == [200] * 400
        assert upstream.counts["/v1/chat/completions"] == 400
        assert upstream.connections_opened <= 16


async def test_a_prompt_over_one_mebibyte_gets_through(upstream: MockUpstream) -> None:
    big = "word " * 300_000  # 1.5 MB
    reply = await client(upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": big}], max_tokens=1
    )
    assert reply.usage is not None and reply.usage.prompt_tokens == 300_000


def test_the_kit_exports_the_mock() -> None:
    import inference_runtime.testing as kit

    assert {"Fault", "MockUpstream", "RecordedRequest"} <= set(kit.__all__)
    assert kit.MockUpstream is MockUpstream
    assert kit.RecordedRequest.__name__ == "RecordedRequest"
    with pytest.raises(AttributeError):
        _ = kit.NoSuchThing  # type: ignore[attr-defined]
