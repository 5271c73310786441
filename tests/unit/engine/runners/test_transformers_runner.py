"""The transformers runner on a tiny local Llama: equal to ``model.generate`` token for token,
alone, in a batch, and when requests join and leave mid-flight; sampling; faults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from inference_runtime.actors import ActorSystem, Props
from inference_runtime.engine import AbortRequest, AddRequest, EngineCoreActor, GetEngineStats
from inference_runtime.engine.runners.transformers import TransformersRunner
from inference_runtime.errors import ContextLengthExceeded, ReplicaFailed
from inference_runtime.testing import RecordingSink
from inference_runtime.types import (
    ChatMessage,
    Deployment,
    EngineRequest,
    ReplicaState,
    SamplingParams,
    ServingConfig,
)
from support.tiny_llama import build_tiny_llama

PROMPTS = ["the quick brown", "a journey of", "what is the capital", "actors carry control and"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def deployment(model_dir: Path, **config: Any) -> Deployment:
    return Deployment(
        name="tiny",
        runtime="transformers",
        model=str(model_dir),
        runtime_config={"dtype": "float32", "kv_rows": 2, "kv_length": 16, **config},
        serving=ServingConfig(max_concurrent=8),
    )


def reference(runner: TransformersRunner, prompt: str, n: int) -> list[int]:
    ids = runner.tokenizer(prompt)["input_ids"]
    with torch.inference_mode():
        out = runner.model.generate(
            torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return [int(t) for t in out[0, len(ids) :]]


class Engine:
    """An EngineCoreActor over a real TransformersRunner, in a fresh actor system."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.runner = TransformersRunner(dep)

    async def __aenter__(self) -> Engine:
        self.system = ActorSystem.create("tr")
        self.ref = self.system.actor_of(
            Props(lambda: EngineCoreActor(self.dep, "r0", runner_factory=lambda: self.runner)),
            "engine",
        )
        for _ in range(2000):
            if (await self.ref.ask(GetEngineStats())).state is ReplicaState.HEALTHY:
                break
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.system.shutdown()

    async def add(self, rid: str, prompt: str, **sampling: Any) -> RecordingSink:
        sink = RecordingSink()
        request = EngineRequest(
            request_id=rid, deployment="tiny", prompt=prompt, sampling=SamplingParams(**sampling)
        )
        await self.ref.ask(AddRequest((request,), sink))
        return sink


def ids_of(sink: RecordingSink) -> list[int]:
    return [t for c in sink.chunks for t in c.token_ids]


async def test_greedy_alone_equals_generate(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        for prompt in PROMPTS[:2]:
            sink = await engine.add(prompt, prompt, temperature=0.0, max_tokens=24)
            await sink.done
            assert ids_of(sink) == reference(engine.runner, prompt, 24)


async def test_greedy_in_a_batch_equals_generate(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        sinks = await asyncio.gather(
            *(engine.add(str(i), p, temperature=0.0, max_tokens=20) for i, p in enumerate(PROMPTS))
        )
        await asyncio.gather(*(s.done for s in sinks))
        for prompt, sink in zip(PROMPTS, sinks, strict=True):
            assert ids_of(sink) == reference(engine.runner, prompt, 20), prompt
        assert engine.runner.cache is not None
        assert engine.runner.cache.live == 0  # every row freed


async def test_requests_join_and_leave_mid_flight(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        first = await engine.add("a", PROMPTS[0], temperature=0.0, max_tokens=40)
        while len(first.chunks) < 5:
            await asyncio.sleep(0.001)
        short = await engine.add("b", PROMPTS[1], temperature=0.0, max_tokens=3)
        await short.done  # leaves while "a" goes on
        late = await engine.add("c", PROMPTS[2], temperature=0.0, max_tokens=30)
        await asyncio.gather(first.done, late.done)
        assert ids_of(first) == reference(engine.runner, PROMPTS[0], 40)
        assert ids_of(short) == reference(engine.runner, PROMPTS[1], 3)
        assert ids_of(late) == reference(engine.runner, PROMPTS[2], 30)


async def test_seeded_sampling_is_reproducible(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        params = {"temperature": 0.9, "top_p": 0.9, "top_k": 50, "seed": 7, "max_tokens": 16}
        alone = await engine.add("x", PROMPTS[0], **params)
        await alone.done
        crowd = await asyncio.gather(
            engine.add("y", PROMPTS[0], **params),
            engine.add("z", PROMPTS[1], temperature=1.0, max_tokens=16),
        )
        await asyncio.gather(*(s.done for s in crowd))
        assert ids_of(alone) == ids_of(crowd[0])
        other = await engine.add("w", PROMPTS[0], **{**params, "seed": 8})
        await other.done
        assert ids_of(other) != ids_of(alone)


async def test_penalties_and_logprobs(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        plain = await engine.add("p", PROMPTS[3], temperature=0.0, max_tokens=30)
        penalised = await engine.add(
            "q", PROMPTS[3], temperature=0.0, max_tokens=30, frequency_penalty=2.0
        )
        await asyncio.gather(plain.done, penalised.done)
        assert len(set(ids_of(penalised))) >= len(set(ids_of(plain)))
        probe = await engine.add(
            "l", PROMPTS[0], temperature=0.0, max_tokens=4, logprobs=True, top_logprobs=3
        )
        await probe.done
        entries = [lp for c in probe.chunks if c.logprobs for lp in c.logprobs]
        assert len(entries) == 4
        for _text, logprob, top in entries:
            assert logprob <= 0.0
            assert len(top) == 3
            assert top[0][1] == pytest.approx(logprob, abs=1e-4)  # greedy: the best one


async def test_stop_strings_on_text(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        full = await engine.add("f", PROMPTS[0], temperature=0.0, max_tokens=30)
        await full.done
        text = full.text()
        stop = text[len(text) // 2 : len(text) // 2 + 3]
        cut = await engine.add("c", PROMPTS[0], temperature=0.0, max_tokens=30, stop=(stop,))
        await cut.done
        assert cut.text() == text[: text.index(stop)]
        assert cut.chunks[-1].finish_reason == "stop"


async def test_chat_template_and_context_length(model_dir: Path) -> None:
    runner = TransformersRunner(deployment(model_dir, max_model_len=40))
    await runner.load()
    request = EngineRequest(
        request_id="t",
        deployment="tiny",
        messages=(ChatMessage(role="user", content="hello"),),
    )
    _ids, text = runner.encode(request)
    assert text == "<|user|>hello\n<|assistant|>"
    assert runner.info.max_context == 40
    await runner.close()
    async with Engine(deployment(model_dir, max_model_len=40)) as engine:
        with pytest.raises(ContextLengthExceeded):
            await engine.add("long", "the quick brown fox " * 20, max_tokens=5)


async def test_abort_frees_the_row(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        sink = await engine.add("a", PROMPTS[0], temperature=0.0, max_tokens=200)
        while len(sink.chunks) < 3:
            await asyncio.sleep(0.001)
        engine.ref.tell(AbortRequest("a"))
        for _ in range(500):
            stats = await engine.ref.ask(GetEngineStats())
            if stats.running == 0 and engine.runner.live_sequences == 0:
                break
            await asyncio.sleep(0.002)
        assert engine.runner.live_sequences == 0
        assert engine.runner.cache is not None
        assert engine.runner.cache.live == 0


async def test_device_error_poisons_and_rebuild_reloads(model_dir: Path) -> None:
    async with Engine(deployment(model_dir)) as engine:
        runner = engine.runner
        original = runner.model.forward

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        runner.model.forward = broken
        sink = await engine.add("bad", PROMPTS[0], max_tokens=3)
        await sink.done
        assert isinstance(sink.error(), ReplicaFailed)
        for _ in range(2000):
            stats = await engine.ref.ask(GetEngineStats())
            if stats.context_restarts == 1 and stats.state is ReplicaState.HEALTHY:
                break
            await asyncio.sleep(0.01)
        assert stats.context_restarts == 1
        assert runner.model.forward is not broken  # reloaded: a fresh model object
        del original
        ok = await engine.add("ok", PROMPTS[1], temperature=0.0, max_tokens=5)
        await ok.done
        assert ids_of(ok) == reference(runner, PROMPTS[1], 5)


async def test_unequal_prompts_prefilled_in_one_step(model_dir: Path) -> None:
    from inference_runtime.engine.runner import ScheduledBatch, ScheduledSequence

    runner = TransformersRunner(deployment(model_dir))
    await runner.load()
    prompts = ["a", "the quick brown fox jumps over", "what is the capital of"]
    greedy = SamplingParams(temperature=0.0)
    seqs = [
        ScheduledSequence(
            seq_id=str(i),
            prompt_ids=runner.tokenizer(p)["input_ids"],
            output_ids=[],
            sampling=greedy,
            prefill=True,
        )
        for i, p in enumerate(prompts)
    ]
    assert len({len(s.prompt_ids) for s in seqs}) == 3
    for _ in range(12):
        out = await runner.execute(ScheduledBatch(sequences=seqs))
        for s in seqs:
            s.output_ids.append(out[s.seq_id].token_id)
            s.prefill = False
    for prompt, s in zip(prompts, seqs, strict=True):
        assert s.output_ids == reference(runner, prompt, 12), prompt
    await runner.close()


async def test_the_log_shows_every_phase_of_the_load(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = TransformersRunner(deployment(model_dir))
    with caplog.at_level("INFO", logger="inference_runtime.engine"):
        await runner.load()
    await runner.close()
    lines = [r.getMessage() for r in caplog.records]
    phases = [line for line in lines if "] " in line and line.startswith("loading ")]
    assert [p.split("] ")[1].split(" (")[0] for p in phases] == [
        "tokenizer",
        "weights",
        "moving to cpu",
        "KV cache",
    ]
    assert "[1/4]" in phases[0] and "[4/4]" in phases[-1]
    assert any(line.startswith("loaded ") and "parameters" in line for line in lines)


async def test_the_longest_token_bounds_what_any_token_decodes_to(model_dir: Path) -> None:
    runner = TransformersRunner(deployment(model_dir))
    await runner.load()
    try:
        bound = runner.info.max_token_chars
        assert bound is not None and bound >= 1
        vocab = runner.tokenizer.get_vocab()
        assert all(len(runner.tokenizer.decode([i])) <= bound for i in vocab.values())
    finally:
        await runner.close()
