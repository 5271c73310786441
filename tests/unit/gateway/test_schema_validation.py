"""The edge's checks of a request body: every numeric field in its range, messages a deployment
can see, and fan-outs a replica could ever admit, each a 400 naming its parameter."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from inference_runtime.errors import RequestError, UnsupportedParameter
from inference_runtime.gateway import schema
from inference_runtime.types import Deployment
from inference_runtime.types.deployment import ServingConfig

USER = [{"role": "user", "content": "hi"}]


def _local(**serving: Any) -> Deployment:
    return Deployment(name="fake", runtime="fake", serving=ServingConfig(**serving))


def _remote(**serving: Any) -> Deployment:
    return Deployment(
        name="gpt",
        runtime="openai",
        runtime_config={"base_url": "http://127.0.0.1:9/v1", "max_concurrent": 2},
        serving=ServingConfig(**serving),
    )


def _chat(deployment: Deployment, **fields: Any) -> None:
    body = msgspec.json.encode({"model": deployment.name, "messages": USER, **fields})
    kind = schema.RemoteChatCompletionRequest if deployment.remote else schema.ChatCompletionRequest
    schema.validate_chat(schema.decode(body, kind), deployment=deployment)


def _completion(deployment: Deployment, **fields: Any) -> list[str]:
    body = msgspec.json.encode({"model": deployment.name, "prompt": "hi", **fields})
    kind = schema.RemoteCompletionRequest if deployment.remote else schema.CompletionRequest
    return schema.validate_completion(schema.decode(body, kind), deployment=deployment)


OUT_OF_RANGE = [
    ("seed", 2**70),
    ("seed", 2**63),
    ("seed", -(2**63) - 1),
    ("n", 0),
    ("n", 129),
    ("max_tokens", 0),
    ("max_tokens", 2**31),
    ("max_completion_tokens", 2**40),
    ("temperature", 2.5),
    ("temperature", -0.1),
    ("top_p", 1.5),
    ("top_k", -2),
    ("top_k", 2**62),
    ("presence_penalty", 2.1),
    ("frequency_penalty", -2.1),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
@pytest.mark.parametrize("deployment", [_local(), _remote()], ids=["local", "remote"])
def test_every_numeric_field_out_of_range_is_a_400_naming_it(
    deployment: Deployment, field: str, value: float
) -> None:
    with pytest.raises(RequestError) as caught:
        _chat(deployment, **{field: value})
    assert caught.value.param == field


def test_the_edges_of_the_ranges_are_taken() -> None:
    _chat(_local(), seed=2**63 - 1, temperature=2, top_p=0, top_k=-1, max_tokens=2**31 - 1)
    _chat(_local(), seed=-(2**63), presence_penalty=-2, frequency_penalty=2)
    _chat(_local(), logprobs=True, top_logprobs=20)


def test_logprobs_of_completions_and_top_logprobs_of_chat_are_bounded() -> None:
    with pytest.raises(RequestError) as caught:
        _completion(_local(), logprobs=6)
    assert caught.value.param == "logprobs"
    with pytest.raises(RequestError) as caught:
        _chat(_local(), logprobs=True, top_logprobs=21)
    assert caught.value.param == "top_logprobs"


@pytest.mark.parametrize(
    "bias", [{"abc": 1}, {"-1": 1}, {"12": 101}, {"12": "x"}, [1], {"9" * 5000: 1}]
)
def test_logit_bias_is_token_ids_to_biases_within_100(bias: Any) -> None:
    with pytest.raises(RequestError) as caught:
        _chat(_remote(), logit_bias=bias)
    assert caught.value.param == "logit_bias"
    _chat(_remote(), logit_bias={"12": -100, "7": 55.5})


def test_prompts_are_capped_before_any_engine_request_is_built() -> None:
    prompts = ["x"] * (schema.MAX_PROMPTS + 1)
    with pytest.raises(RequestError) as caught:
        _completion(_local(queue_capacity=10**6), prompt=prompts)
    assert caught.value.param == "prompt"


def test_n_beyond_what_a_replica_ever_admits_is_a_400_naming_n() -> None:
    small = _local(max_concurrent=2, queue_capacity=3)
    _chat(small, n=5)
    with pytest.raises(RequestError) as caught:
        _chat(small, n=6)
    assert caught.value.param == "n"
    assert "5" in str(caught.value)
    assert _completion(small, prompt=["a", "b"], n=2) == ["a", "b"]
    with pytest.raises(RequestError) as caught:
        _completion(small, prompt=["a", "b", "c"], n=2)
    assert caught.value.param == "prompt"


def test_a_remote_replica_admits_each_prompt_as_one_call() -> None:
    remote = _remote(queue_capacity=1)  # max_concurrent 2: three calls at most
    _chat(remote, n=100)  # n travels inside one upstream call
    _completion(remote, prompt=["a", "b", "c"])
    with pytest.raises(RequestError) as caught:
        _completion(remote, prompt=["a", "b", "c", "d"])
    assert caught.value.param == "prompt"


@pytest.mark.parametrize("kind", ["image_url", "input_audio", "file"])
def test_a_part_a_local_runtime_cannot_see_is_a_400_naming_the_part(kind: str) -> None:
    content = [{"type": "text", "text": "what is this?"}, {"type": kind, kind: {"url": "x"}}]
    messages = [{"role": "user", "content": content}]
    with pytest.raises(UnsupportedParameter) as caught:
        _chat(_local(), messages=messages)
    assert caught.value.param == "messages[0].content[1]"
    _chat(_remote(), messages=messages)  # forwarded untouched


def test_a_message_without_content_needs_tool_calls() -> None:
    for messages in ([{"role": "user"}], [{"role": "user", "content": []}]):
        for deployment in (_local(), _remote()):
            with pytest.raises(RequestError) as caught:
                _chat(deployment, messages=messages)
            assert caught.value.param == "messages[0].content"
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    history = [
        *USER,
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    _chat(_remote(), messages=history)
    with pytest.raises(RequestError) as caught:
        _chat(_remote(), messages=[*USER, {"role": "user", "tool_calls": calls}])
    assert caught.value.param == "messages[1].content"
    with pytest.raises(UnsupportedParameter) as caught:  # locally tools are not honoured
        _chat(_local(), messages=history)
    assert caught.value.param == "messages[1].tool_calls"


def test_the_harmless_no_ops_are_accepted_locally() -> None:
    _chat(_local(), response_format={"type": "text"}, tool_choice="none")
    with pytest.raises(UnsupportedParameter) as caught:
        _chat(_local(), response_format={"type": "json_object"})
    assert caught.value.param == "response_format"
    with pytest.raises(UnsupportedParameter) as caught:
        _chat(_local(), tool_choice="auto")
    assert caught.value.param == "tool_choice"


def test_a_whole_number_written_with_a_fraction_is_that_integer() -> None:
    """JSON has one number type and the OpenAPI document's ``integer`` takes ``2.0``."""
    body = msgspec.json.encode(
        {"model": "fake", "messages": USER, "n": 2.0, "seed": 7.0, "max_tokens": 5.0}
    )
    req = schema.decode(body, schema.ChatCompletionRequest)
    assert (req.n, req.seed, req.max_tokens) == (2, 7, 5)
    assert type(req.n) is int
    with pytest.raises(RequestError) as caught:
        schema.decode(msgspec.json.encode({"model": "fake", "messages": USER, "n": 2.5}),
                      schema.ChatCompletionRequest)  # fmt: skip
    assert caught.value.param == "n"


def test_embedding_token_ids_and_dimensions_are_bounded() -> None:
    from inference_runtime.gateway.embeddings import decode_request, inputs_of

    assert inputs_of(decode_request(b'{"model": "e", "input": [1, 2.0, 3]}')) == ((1, 2, 3),)
    for body in (b'{"model": "e", "input": [1, 2147483648]}',
                 b'{"model": "e", "input": [[1], [1180591620717411303424]]}'):  # fmt: skip
        with pytest.raises(RequestError) as caught:
            inputs_of(decode_request(body))
        assert caught.value.param == "input"
    with pytest.raises(RequestError) as caught:
        decode_request(b'{"model": "e", "input": "x", "dimensions": 1180591620717411303424}')
    assert caught.value.param == "dimensions"
