"""The Anthropic provider's translation, both ways: OpenAI chat bodies to Messages API calls
(system prompt, merged turns, stop sequences, tools, refusals) and Messages API events to our
chunks (text, tool_use deltas, stop reasons, usage, error events, malformed data)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from inference_runtime.errors import RequestError, UnsupportedParameter, UpstreamError
from inference_runtime.remote.anthropic_api import DEFAULT_MAX_TOKENS, AnthropicStream
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.providers import provider_for
from inference_runtime.remote.sse import SSEEvent, SSEParser
from inference_runtime.testing.mock_upstream_anthropic import anthropic_frames
from inference_runtime.testing.mock_upstream_replies import Generation
from inference_runtime.types import (
    ChatMessage,
    Deployment,
    EngineRequest,
    SamplingParams,
    Secret,
    TokenChunk,
    Usage,
)

CONFIG = RemoteConfig.of(
    Deployment(
        name="claude",
        runtime="anthropic",
        model="claude-test",
        runtime_config={"headers": {"x-org": "o1"}, "anthropic_version": "2023-06-01"},
    )
)
USER = [{"role": "user", "content": "hi"}]


def build(
    body: dict[str, Any] | None = None, *, n: int = 1, key: str = "sk-ant", **fields: Any
) -> tuple[str, dict[str, str], dict[str, Any]]:
    group = tuple(
        EngineRequest(
            request_id="r1",
            deployment="claude",
            messages=fields.pop("messages", (ChatMessage("user", "hi"),)),
            choice_index=i,
            passthrough=body,
            **fields,
        )
        for i in range(n)
    )
    url, headers, raw = provider_for("anthropic").build_request(
        group, config=CONFIG, key=Secret(key)
    )
    return url, headers, msgspec.json.decode(raw)


def test_url_headers_and_defaults() -> None:
    url, headers, body = build({"model": "claude", "messages": USER})
    assert url == "https://api.anthropic.com/v1/messages"
    assert headers == {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "anthropic-version": "2023-06-01",
        "x-org": "o1",
        "x-api-key": "sk-ant",
    }
    assert body == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": True,
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert "x-api-key" not in build({"messages": USER}, key="")[1]


def test_system_prompt_merged_turns_and_sampling() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "four"},
    ]
    _, _, body = build(
        {
            "messages": messages,
            "max_completion_tokens": 7,
            "max_tokens": 99,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "stop": ["END", "\n\n"],
            "user": "u-42",
            "presence_penalty": 0,
            "logprobs": False,
            "response_format": {"type": "text"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
    )
    assert body["system"] == "Be brief.\n\nUse French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]
    assert body["max_tokens"] == 7
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.5, 0.9, 5)
    assert body["stop_sequences"] == ["END", "\n\n"]
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # Anthropic's own
    for gone in ("stop", "user", "presence_penalty", "logprobs", "response_format"):
        assert gone not in body
    assert build({"messages": USER, "stop": "END"})[2]["stop_sequences"] == ["END"]


def test_typed_fields_without_passthrough() -> None:
    sampling = SamplingParams(max_tokens=9, temperature=0.2, stop=("x",))
    _, _, body = build(
        None,
        messages=(ChatMessage("system", "sys"), ChatMessage("user", "hi")),
        sampling=sampling,
    )
    assert body["system"] == "sys"
    assert body["max_tokens"] == 9 and body["temperature"] == 0.2
    assert body["stop_sequences"] == ["x"]
    assert "top_p" not in body  # a default is left out: newer models refuse both together
    with pytest.raises(UnsupportedParameter, match="seed"):
        build(None, sampling=SamplingParams(seed=3))


def test_tools_and_tool_choice() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Find a thing",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "noop", "parameters": {}}},
    ]
    body = build({"messages": USER, "tools": tools, "tool_choice": "required"})[2]
    assert body["tools"] == [
        {
            "name": "lookup",
            "description": "Find a thing",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
        {"name": "noop", "input_schema": {"type": "object"}},
    ]
    assert body["tool_choice"] == {"type": "any"}
    choices = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for openai, anthropic in choices.items():
        assert build({"messages": USER, "tool_choice": openai})[2]["tool_choice"] == anthropic
    named = {"type": "function", "function": {"name": "lookup"}}
    body = build({"messages": USER, "tool_choice": named, "parallel_tool_calls": False})[2]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "lookup",
        "disable_parallel_tool_use": True,
    }
    body = build({"messages": USER, "tools": tools, "parallel_tool_calls": False})[2]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in build({"messages": USER, "parallel_tool_calls": True})[2]


def test_tool_round_trip_messages() -> None:
    function = {"name": "lookup", "arguments": '{"q": "x"}'}
    call = {"id": "toolu_1", "type": "function", "function": function}
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
        {"role": "user", "content": "thanks"},
    ]
    turns = build({"messages": messages})[2]["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
    }
    assert turns[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"},
            {"type": "text", "text": "thanks"},
        ],
    }
    function["arguments"] = "{not json"
    with pytest.raises(RequestError, match="toolu_1"):
        build({"messages": messages})


def test_image_parts() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    blocks = build({"messages": [{"role": "user", "content": content}]})[2]["messages"][0]
    assert blocks["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", True),
        ("top_logprobs", 2),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1.0),
        ("seed", 7),
        ("logit_bias", {"50256": -100}),
        ("response_format", {"type": "json_object"}),
        ("functions", [{"name": "f"}]),
        ("reasoning_effort", "high"),
        ("metadata", {"k": "v"}),
        ("temperature", 1.5),
        ("n", 2),
        ("tool_choice", "sometimes"),
        ("tools", [{"type": "code_interpreter"}]),
    ],
)
def test_refused_fields_are_named(field: str, value: Any) -> None:
    with pytest.raises(UnsupportedParameter) as refused:
        build({"messages": USER, field: value})
    assert refused.value.param == field
    assert field in str(refused.value)


def test_refused_requests() -> None:
    with pytest.raises(UnsupportedParameter, match="n must be 1") as refused:
        build({"messages": USER, "n": 2}, n=2)
    assert refused.value.param == "n"
    group = (EngineRequest(request_id="r", deployment="claude", prompt="once upon"),)
    with pytest.raises(UnsupportedParameter, match="chat completions") as refused:
        provider_for("anthropic").build_request(group, config=CONFIG, key=Secret(""))
    assert refused.value.param == "prompt"
    for message in (
        {"role": "function", "name": "f", "content": "x"},
        {"role": "user", "name": "bob", "content": "x"},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    ):
        with pytest.raises(UnsupportedParameter) as refused:
            build({"messages": [message, *USER]})
        assert refused.value.param == "messages"
    with pytest.raises(RequestError, match="user message"):
        build({"messages": [{"role": "system", "content": "only a system prompt"}]})


# -- the stream ------------------------------------------------------------------------------


def event(name: str, data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(name, msgspec.json.encode({"type": name, **data}))


def stream(choice_index: int = 0) -> AnthropicStream:
    request = EngineRequest(request_id="r1", deployment="claude", choice_index=choice_index)
    return AnthropicStream((request,))


def test_the_mock_event_sequence_to_chunks() -> None:
    gen = Generation(pieces=["Hello", " there"], finish="stop")
    frames = anthropic_frames(rid="msg_1", model="m", gen=gen, input_tokens=12)
    parser, s = SSEParser(), stream()
    chunks: list[TokenChunk] = []
    for frame in frames:
        for ev in parser.feed(frame.data):
            chunks.extend(s.feed(ev))
    assert [c.text for c in chunks] == ["Hello", " there", ""]
    assert chunks[-1].finish_reason == "stop"
    assert s.done and s.finished == {0: "stop"} and s.chunks_out == 3
    assert s.usage == Usage(prompt_tokens=12, completion_tokens=2)


def test_tool_use_deltas_in_openai_streaming_shape() -> None:
    s = stream(choice_index=3)
    s.feed(event("message_start", {"message": {"usage": {"input_tokens": 5}}}))
    s.feed(event("content_block_start", {"index": 0, "content_block": {"type": "text"}}))
    [text] = s.feed(
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Ok"}})
    )
    assert text.text == "Ok" and text.index == 3
    block = {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {}}
    [start] = s.feed(event("content_block_start", {"index": 1, "content_block": block}))
    json_delta = {"type": "input_json_delta", "partial_json": '{"q": '}
    [part] = s.feed(event("content_block_delta", {"index": 1, "delta": json_delta}))
    empty = {"type": "input_json_delta", "partial_json": ""}
    assert s.feed(event("content_block_delta", {"index": 1, "delta": empty})) == []
    assert start.extra == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_9",
                "type": "function",
                "function": {"name": "lookup", "arguments": ""},
            }
        ]
    }
    assert part.extra == {
        "tool_calls": [{"index": 0, "type": "function", "function": {"arguments": '{"q": '}}]
    }
    assert s.feed(event("ping", {})) == []
    assert s.feed(event("content_block_stop", {"index": 1})) == []
    delta = {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 17}}
    [end] = s.feed(event("message_delta", delta))
    assert end.finish_reason == "tool_calls"
    assert (s.finished, s.done) == ({3: "tool_calls"}, False)  # done only on message_stop
    assert s.feed(event("message_stop", {})) == [] and s.done
    assert s.usage == Usage(prompt_tokens=5, completion_tokens=17)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    s = stream()
    [chunk] = s.feed(event("message_delta", {"delta": {"stop_reason": reason}}))
    assert chunk.finish_reason == finish == s.finished[0]


def test_cached_prompt_tokens_count_as_prompt() -> None:
    s = stream()
    usage = {"input_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
    s.feed(event("message_start", {"message": {"usage": usage}}))
    s.feed(event("message_delta", {"delta": {}, "usage": {"output_tokens": 4}}))
    assert s.usage == Usage(prompt_tokens=110, completion_tokens=4)


def test_error_event_and_malformed_data_raise() -> None:
    overloaded = {"error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamError, match="Overloaded"):
        stream().feed(event("error", overloaded))
    for data in (b'{"type": "content_block_delta", "delta": {"te', b"[1, 2]"):
        with pytest.raises(UpstreamError, match="malformed"):
            stream().feed(SSEEvent("content_block_delta", data))
    orphan = {"index": 4, "delta": {"type": "input_json_delta", "partial_json": "{}"}}
    with pytest.raises(UpstreamError, match="tool_use"):
        stream().feed(event("content_block_delta", orphan))
    assert stream().feed(SSEEvent("ping", b"")) == []
    assert stream().feed(event("some_future_event", {"x": 1})) == []
