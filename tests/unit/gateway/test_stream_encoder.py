"""The streamed response path: frames spliced as bytes, batches handed over once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from inference_runtime.gateway.responses import StreamEncoder, _logprobs
from inference_runtime.gateway.stream import ResponseStream
from inference_runtime.types import TokenChunk, Usage, WordRun

_encode = msgspec.json.Encoder().encode


def as_dicts(base: dict[str, Any], chat: bool, usage: bool, chunks: list[TokenChunk]) -> bytes:
    """The frames built as whole dicts and encoded (what the spliced frames must equal)."""
    started: set[int] = set()
    out = b""
    for chunk in chunks:
        if not (chunk.text or chunk.finish_reason or chunk.logprobs or chunk.extra):
            continue
        logprobs = _logprobs([chunk], chat=chat) if chunk.logprobs else None
        choice: dict[str, Any]
        if chat:
            delta: dict[str, Any] = {}
            if chunk.index not in started:
                started.add(chunk.index)
                delta = {"role": "assistant", "content": chunk.text}
            elif chunk.text:
                delta["content"] = chunk.text
            delta.update(chunk.extra or {})
            choice = {"index": chunk.index, "delta": delta, "logprobs": logprobs}
        else:
            choice = {"index": chunk.index, "text": chunk.text, "logprobs": logprobs}
        choice["finish_reason"] = chunk.finish_reason
        body = {**base, "choices": [choice]}
        if usage:
            body["usage"] = None
        out += b"data: " + _encode(body) + b"\n\n"
    return out


CHUNKS = [
    TokenChunk("r", 0, 'He said "hi" \u00e9\U0001f600'),
    TokenChunk("r", 1, "x"),
    TokenChunk("r", 0, " w"),
    TokenChunk("r", 0, ""),  # held back: no frame
    TokenChunk("r", 0, "", extra={"tool_calls": [{"index": 0, "id": "c"}]}),
    TokenChunk("r", 0, "a", extra={"refusal": "no"}),
    TokenChunk("r", 0, "b", logprobs=(("b", -0.5, (("b", -0.5), ("c", -1.0))),)),
    TokenChunk("r", 0, "", finish_reason="stop"),
    TokenChunk("r", 1, "", finish_reason="length"),
]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("include_usage", [True, False])
def test_spliced_frames_are_the_encoded_dicts(chat: bool, include_usage: bool) -> None:
    encoder = StreamEncoder(
        response_id='chatcmpl-"1"', model="m\u00e9", chat=chat, include_usage=include_usage
    )
    base = dict(encoder._base)
    assert encoder.frames(CHUNKS[:3]) + encoder.frames(CHUNKS[3:]) == as_dicts(
        base, chat, include_usage, CHUNKS
    )
    usage = encoder.usage_frame(Usage(prompt_tokens=1, completion_tokens=2))
    assert bool(usage) is include_usage


def _run(index: int, words: list[str], *, escaped: bool = False) -> TokenChunk:
    encoded = [
        (json.dumps(w) if escaped else msgspec.json.encode(w).decode()).encode() for w in words
    ]
    return TokenChunk("r", index, "", words=WordRun(encoded, words))


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("escaped", [True, False])
def test_a_word_run_gives_the_frames_of_its_words(chat: bool, escaped: bool) -> None:
    words = ['He said "hi"', " \u00e9\U0001f600", "\n\\", " x"]
    batches = [
        [_run(0, words[:2], escaped=escaped)],  # a choice's first words: the role goes first
        [TokenChunk("r", 1, "y"), _run(0, words, escaped=escaped), _run(1, words[1:])],
        [TokenChunk("r", 0, "", finish_reason="stop")],
    ]
    encoder = StreamEncoder(response_id="c", model="m", chat=chat, include_usage=True)
    got = b"".join(encoder.frames(batch) for batch in batches)
    one_by_one = [part for batch in batches for chunk in batch for part in chunk.expanded()]
    expected = as_dicts(dict(encoder._base), chat, True, one_by_one)
    if escaped:  # the upstream's own escapes pass through: the same JSON, other bytes
        assert [json.loads(f[6:]) for f in got.split(b"\n\n")[:-1]] == [
            json.loads(f[6:]) for f in expected.split(b"\n\n")[:-1]
        ]
    else:
        assert got == expected


async def test_a_batch_wakes_the_reader_once() -> None:
    stream = ResponseStream()
    woke = 0

    async def reader() -> list[list[TokenChunk]]:
        nonlocal woke
        batches = []
        while batch := await stream.next_batch():
            woke += 1
            batches.append(batch)
        return batches

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0)
    stream.push_many(CHUNKS[:4])
    stream.push_many([])
    await asyncio.sleep(0)
    stream.push(CHUNKS[4])
    stream.push_many(CHUNKS[5:])
    await asyncio.sleep(0)
    stream.finish(Usage(completion_tokens=3))
    stream.push_many(CHUNKS)  # after the end: dropped
    assert await task == [CHUNKS[:4], CHUNKS[4:]]
    assert woke == 2 and stream.emitted == len(CHUNKS)


async def test_a_whole_response_reader_wakes_only_at_the_end() -> None:
    stream = ResponseStream(wake_each_chunk=False)
    task = asyncio.ensure_future(stream.next_batch())
    await asyncio.sleep(0)
    stream.push_many(CHUNKS[:2])
    await asyncio.sleep(0)
    assert not task.done()
    stream.push_many(CHUNKS[2:])
    stream.fail(RuntimeError("gone"))
    assert await task == CHUNKS
    assert await stream.next_batch() == [] and isinstance(stream.error, RuntimeError)


async def test_request_flow_counts_a_batch_once() -> None:
    from inference_runtime.gateway.request_flow import RequestFlow, RequestJob
    from inference_runtime.types import Deployment, EngineRequest

    deployment = Deployment.from_dict({"name": "d", "runtime": "fake"})
    stream = ResponseStream()
    request = EngineRequest(request_id="r", deployment="d")
    job = RequestJob("r", deployment, [(request, request)], stream, lambda name: None)
    actor = RequestFlow(job, coordinator=None, metrics=None)  # type: ignore[arg-type]
    clock = iter([1.0, 1.5, 2.5])
    actor.now = lambda: next(clock)
    words = [TokenChunk("r", i % 2, "w") for i in range(6)]  # 3 tokens of each choice
    actor.on_chunks(words)
    actor.on_chunks(words[:2])
    actor.on_chunks([TokenChunk("r", 0, "", finish_reason="stop")])
    assert actor.completion_tokens == 8
    assert actor.first_token_at == 1.0 and actor.last_token_at == 2.5
    # choice 0's gaps: two within the first batch (together: 0), then 0.5 and 1.0 between reads
    assert actor.itl == [0.0, 0.0, 0.5, 1.0]
    assert stream.emitted == 0  # queued: sent only once the handler takes them
    assert len(await stream.next_batch()) == 9
    assert stream.emitted == 9


def test_a_whole_body_reads_word_runs_as_their_words() -> None:
    from inference_runtime.gateway.responses import completion_body

    words = ["a", " b\u00e9", ' "c"']
    chunks = [_run(0, words), TokenChunk("r", 0, "", finish_reason="stop")]
    plain = [TokenChunk("r", 0, w) for w in words] + chunks[1:]
    usage = Usage(prompt_tokens=1, completion_tokens=3)
    body = completion_body(
        response_id="c", model="m", chat=True, chunks=chunks, choices=1, usage=usage
    )
    whole = json.loads(body)
    assert whole["choices"][0]["message"]["content"] == 'a b\u00e9 "c"'
    again = completion_body(
        response_id="c", model="m", chat=True, chunks=plain, choices=1, usage=usage
    )
    assert {**json.loads(again), "created": 0} == {**whole, "created": 0}
