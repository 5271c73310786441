"""The OpenAI-compatible provider: the upstream request, streamed frames and whole replies."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_runtime.errors import UpstreamError
from inference_runtime.gateway.responses import completion_body
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.openai_api import OpenAIStream, build_request
from inference_runtime.remote.sse import SSEEvent, SSEParser
from inference_runtime.testing import mock_upstream_replies as replies
from inference_runtime.types import ChatMessage, EngineRequest, Secret, TokenChunk, Usage

CONFIG = RemoteConfig(base_url="http://upstream/v1", model="up")


def group(n: int = 1, *, stream: bool = True, chat: bool = True) -> tuple[EngineRequest, ...]:
    body = {"model": "ours", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": False}
    return tuple(
        EngineRequest(
            request_id="r",
            deployment="d",
            messages=(ChatMessage("user", "hi"),) if chat else None,
            prompt=None if chat else "hi",
            choice_index=i,
            passthrough=body,
            stream=stream,
        )
        for i in range(n)
    )


def test_build_request_streamed_and_whole() -> None:
    url, headers, body = build_request(group(2), config=CONFIG, key=Secret("sk-1"))
    sent = msgspec.json.decode(body)
    assert url == "http://upstream/v1/chat/completions"
    assert headers["Accept"] == "text/event-stream"
    assert headers["Authorization"] == "Bearer sk-1"
    assert (sent["model"], sent["n"], sent["stream"]) == ("up", 2, True)
    assert sent["stream_options"] == {"include_usage": True}
    _, headers, body = build_request(
        group(stream=False), config=CONFIG, key=Secret("sk-1"), stream=False
    )
    sent = msgspec.json.decode(body)
    assert headers["Accept"] == "application/json"
    assert sent["stream"] is False and "stream_options" not in sent


def stream_of(frames: list[replies.Frame], n: int = 1) -> tuple[OpenAIStream, list[TokenChunk]]:
    stream = OpenAIStream(group(n))
    parser = SSEParser()
    chunks = stream.feed_read(parser, b"".join(f.data for f in frames))
    return stream, chunks


def test_a_streamed_reply_as_one_batch() -> None:
    gens = [replies.generate("p", choice=i, natural=5, max_tokens=None) for i in range(2)]
    frames = replies.openai_frames(
        rid="x", model="m", created=1, chat=True, gens=gens, prompt_tokens=3, include_usage=True
    )
    stream, chunks = stream_of(frames, 2)
    assert stream.done and stream.usage == Usage(prompt_tokens=3, completion_tokens=10)
    assert stream.finished == {0: "stop", 1: "stop"}
    assert stream.chunks_out == len(chunks) == 12  # 5 words and a finish, per choice
    for i, gen in enumerate(gens):
        assert "".join(c.text for c in chunks if c.index == i) == gen.text
    assert all(c.extra is None for c in chunks)


def test_delta_fields_besides_the_text_are_passed_on() -> None:
    stream = OpenAIStream(group())
    delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "c"}]}
    frame = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}], "x": 1}
    [chunk] = stream.feed(SSEEvent(None, msgspec.json.encode(frame)))
    assert chunk.text == "" and chunk.extra == {"tool_calls": [{"index": 0, "id": "c"}]}
    assert stream.feed(SSEEvent(None, b"  [DONE] ")) == [] and stream.done


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"choices": [{"delta": ', "not JSON"),
        (b"[1, 2]", "malformed reply"),
        (b'{"choices": [{"index": "zero"}]}', "malformed reply"),
        (b'{"choices": [{"index": 3, "delta": {"content": "x"}}]}', "choice 3, not asked for"),
        (b'{"error": {"message": "overloaded"}}', "failed mid-stream: overloaded"),
        (b'{"choices": [{"delta": {"content": 7}}]}', "content is not text"),
    ],
)
def test_malformed_frames_raise(data: bytes, message: str) -> None:
    with pytest.raises(UpstreamError, match=message):
        OpenAIStream(group()).feed(SSEEvent(None, data))
    with pytest.raises(UpstreamError, match=message):
        OpenAIStream(group()).feed_body(data)


def test_a_whole_reply() -> None:
    gens = [replies.generate("p", choice=i, natural=6, max_tokens=4) for i in range(2)]
    body = replies.openai_body(rid="x", model="m", created=1, chat=True, gens=gens, prompt_tokens=2)
    stream = OpenAIStream(group(2, stream=False))
    chunks = stream.feed_body(body)
    assert stream.done and stream.usage == Usage(prompt_tokens=2, completion_tokens=8)
    assert [(c.index, c.text, c.finish_reason) for c in chunks] == [
        (0, gens[0].text, "length"),
        (1, gens[1].text, "length"),
    ]
    assert stream.finished == {0: "length", 1: "length"}
    text = replies.openai_body(
        rid="x", model="m", created=1, chat=False, gens=gens[:1], prompt_tokens=2
    )
    [chunk] = OpenAIStream(group(stream=False, chat=False)).feed_body(text)
    assert chunk.text == gens[0].text and chunk.extra is None


def test_a_whole_reply_without_usage_is_counted() -> None:
    body = {
        "choices": [{"index": 0, "message": {"content": "abcdefgh" * 4}, "finish_reason": "stop"}]
    }
    stream = OpenAIStream(group(stream=False))
    stream.feed_body(msgspec.json.encode(body))
    assert stream.usage is None
    assert stream.chunks_out == 8  # 32 characters, about 4 a token


def test_whole_tool_calls_keep_apart_in_the_assembled_reply() -> None:
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    message = {"role": "assistant", "content": None, "tool_calls": calls, "refusal": None}
    body = {
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    stream = OpenAIStream(group(stream=False))
    chunks = stream.feed_body(msgspec.json.encode(body))
    assert stream.chunks_out > 0  # something reached the client side: no retry after this
    reply = msgspec.json.decode(
        completion_body(
            response_id="r", model="m", chat=True, chunks=chunks, choices=1, usage=stream.usage
        )
        if stream.usage
        else b""
    )
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == calls


def test_typed_and_untyped_deltas_give_the_same_chunks() -> None:
    stream = OpenAIStream(group())
    frames = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}}]},
        {"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": None}]},
        {"choices": [{"index": 0, "delta": {"refusal": "no"}}]},
        {"choices": [{"index": 0, "delta": {"content": "b", "reasoning_content": "r"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    ]
    chunks = stream.feed_read(
        SSEParser(), b"".join(b"data: %b\n\n" % msgspec.json.encode(f) for f in frames)
    )
    assert [(c.text, c.extra, c.finish_reason) for c in chunks] == [
        ("a", None, None),
        ("", {"refusal": "no"}, None),
        ("b", {"reasoning_content": "r"}, None),
        ("", None, "stop"),
    ]


# -- word frames read through a learned template give what a full decode gives ---------------

_texts = st.text(max_size=8)
_frames = st.one_of(
    _texts.map(lambda t: {"choices": [{"index": 0, "delta": {"content": t}}]}),
    _texts.map(lambda t: {"choices": [{"index": 0, "delta": {"content": t}}], "usage": None}),
    _texts.map(lambda t: {"choices": [{"index": 1, "delta": {"content": t}}]}),
    _texts.map(
        lambda t: {"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": "stop"}]}
    ),
    _texts.map(lambda t: {"choices": [{"index": 0, "delta": {"content": t, "refusal": t}}]}),
    _texts.map(lambda t: {"choices": [{"index": 0, "delta": {"content": t, "tool_calls": []}}]}),
    _texts.map(lambda t: {"model": t, "choices": [{"index": 0, "delta": {"content": t}}]}),
    st.just({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
)


def _payload(frame: dict[str, Any], escaped: bool) -> bytes:
    if escaped:  # an upstream that escapes every non-ASCII character (Python's json does)
        return json.dumps(frame).encode()
    return msgspec.json.encode(frame)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_frames, max_size=12), escaped=st.booleans())
def test_word_template_gives_the_chunks_of_a_full_decode(
    frames: list[dict[str, Any]], escaped: bool
) -> None:
    payloads = [_payload(f, escaped) for f in frames]
    with_template = OpenAIStream(group(2))
    got = with_template._feed_payloads(list(payloads))
    without = OpenAIStream(group(2))
    expected: list[TokenChunk] = []
    for data in payloads:  # one at a time, the template never learned
        without._word = None
        expected += without._feed_payloads([data])
        without._word = None
    # runs of words come as one chunk each (a WordRun): word for word what a decode gives
    assert [c for chunk in got for c in chunk.expanded()] == expected
    assert sum(c.num_tokens for c in got) == sum(c.num_tokens for c in expected)
    assert with_template.chunks_out == without.chunks_out
    assert (with_template.usage, with_template.finished) == (without.usage, without.finished)


def test_a_run_of_word_frames_is_one_chunk_with_the_upstream_strings() -> None:
    stream = OpenAIStream(group())
    words = ["Hi", ' the"re', "\u00e9t\u00e9", " \\n", "😀"]
    frames = [
        b'{"id":"x","choices":[{"index":0,"delta":{"content":' + msgspec.json.encode(w) + b"}}]}"
        for w in words
    ]
    first, run = stream._feed_payloads(frames)
    assert first.text == "Hi" and first.words is None  # the frame the template is learned on
    assert run.words is not None and run.words.texts == words[1:] and run.num_tokens == 4
    assert run.words.encoded == [msgspec.json.encode(w) for w in words[1:]]
    assert stream.chunks_out == 5
    # a frame that only looks like a word frame ends the run; it is decoded in full
    odd = b'{"id":"x","choices":[{"index":0,"delta":{"content":"a","refusal":"b"}}]}'
    chunks = stream._feed_payloads([frames[1], frames[2], odd, frames[3]])
    assert [c.num_tokens for c in chunks] == [1, 1, 1, 1]
    assert chunks[2].extra == {"refusal": "b"}
    empty = b'{"id":"x","choices":[{"index":0,"delta":{"content":""}}]}'
    chunks = stream._feed_payloads([frames[1], empty, frames[2], frames[3]])
    assert [c.text for c in chunks] == [w for w in words[1:4]]  # frame by frame after a miss
    chunks = stream._feed_payloads([frames[2], frames[3]])
    assert [(c.text, c.num_tokens) for c in chunks] == [("", 2)]  # the next read: a run again


def test_a_word_template_is_learned_only_when_proven() -> None:
    stream = OpenAIStream(group())
    stream._feed_payloads([b'{"model":"hi","choices":[{"index":0,"delta":{"content":"hi"}}]}'])
    assert stream._word is None  # the text's encoding occurs twice: not learned
    stream._feed_payloads([b'{"choices":[{"index":0,"delta":{"content":"\\u0068i"}}]}'])
    assert stream._word is None  # encoded otherwise by the upstream: not found, not learned
    [chunk] = stream._feed_payloads([b'{"choices":[{"index":0,"delta":{"content":"yo"}}]}'])
    assert stream._word is not None and chunk.text == "yo"
    chunks = stream._feed_payloads(
        [
            b'{"choices":[{"index":0,"delta":{"content":"a\\"b\\u00e9"}}]}',  # one string
            b'{"choices":[{"index":0,"delta":{"content":"a","x":"b"}}]}',  # not one string
            b'{"choices":[{"index":0,"delta":{"content":""}}]}',  # empty: no chunk
        ]
    )
    assert [(c.text, c.extra) for c in chunks] == [('a"b\u00e9', None), ("a", {"x": "b"})]


def test_a_cap_the_gateway_set_goes_upstream_unless_the_client_set_one() -> None:
    from inference_runtime.types import SamplingParams

    config = RemoteConfig(base_url="http://127.0.0.1:1/v1", model="m")
    capped = SamplingParams(max_tokens=7)
    for passthrough, expected in (
        ({"messages": []}, {"max_tokens": 7}),
        ({"messages": [], "max_tokens": 5}, {"max_tokens": 5}),
        ({"messages": [], "max_completion_tokens": 5}, {"max_completion_tokens": 5}),
    ):
        request = EngineRequest(
            request_id="r", deployment="d", messages=(), sampling=capped, passthrough=passthrough
        )
        _, _, body = build_request((request,), config=config, key=Secret("k"))
        sent = json.loads(body)
        assert {k: sent[k] for k in expected} == expected
        assert not ("max_tokens" in sent and "max_completion_tokens" in sent)
