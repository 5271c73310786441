"""OpenAI request bodies, validated at the edge with msgspec.

Every field OpenAI documents is known here. A field we do not know is refused the way OpenAI
refuses it; a known field this runtime cannot honour is refused by name (never dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from inference_runtime.errors import RequestError, UnsupportedParameter
from inference_runtime.gateway import json_body
from inference_runtime.gateway.messages import Message, validate_messages
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.types import Deployment, SamplingParams

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
MAX_STOP = 4
MAX_N = 128
MAX_PROMPTS = 2048
"""Prompts of one completions request (as OpenAI's embeddings take inputs): what the edge
turns into engine requests is bounded before any of that work is done."""
MAX_COUNT = 2**31 - 1
"""The largest token count or token id taken (no model comes near it): a bigger one is a
400 here, never an overflow inside a runner."""
SEED_RANGE = (-(2**63), 2**63 - 1)
"""OpenAI's ``seed`` is an int64; samplers seed their generators with it as it is."""
MAX_LOGPROBS = 5
"""The most ``logprobs`` a completions request may ask for (OpenAI's limit)."""
MAX_TOP_LOGPROBS = 20
LOGIT_BIAS_RANGE = (-100.0, 100.0)
OVER_CAPACITY = "over_replica_capacity"
"""The code of a 400 for a request no replica of its deployment could ever hold."""

# Known, not honoured, yet harmless: the value that asks for nothing is accepted locally.
_NO_OPS: dict[str, object] = {"response_format": {"type": "text"}, "tool_choice": "none"}

# Known to OpenAI but not honoured by the local engines (remote providers pass them through).
_NOT_HONOURED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "logit_bias",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "service_tier",
    "web_search_options",
    "best_of",
    "suffix",
    "echo",
)


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False


class _Common(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # known, not honoured locally: presence is an error (see _NOT_HONOURED)
    tools: Any | UnsetType = UNSET
    tool_choice: Any | UnsetType = UNSET
    functions: Any | UnsetType = UNSET
    function_call: Any | UnsetType = UNSET
    parallel_tool_calls: Any | UnsetType = UNSET
    response_format: Any | UnsetType = UNSET
    logit_bias: Any | UnsetType = UNSET
    modalities: Any | UnsetType = UNSET
    audio: Any | UnsetType = UNSET
    prediction: Any | UnsetType = UNSET
    reasoning_effort: Any | UnsetType = UNSET
    service_tier: Any | UnsetType = UNSET
    web_search_options: Any | UnsetType = UNSET
    best_of: Any | UnsetType = UNSET
    suffix: Any | UnsetType = UNSET
    echo: Any | UnsetType = UNSET


class ChatCompletionRequest(_Common, kw_only=True):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


class CompletionRequest(_Common, kw_only=True):
    prompt: str | list[Any]
    logprobs: int | None = None


class RemoteChatCompletionRequest(ChatCompletionRequest, forbid_unknown_fields=False):
    """For a remote deployment: fields we do not know are the provider's (passed through)."""


class RemoteCompletionRequest(CompletionRequest, forbid_unknown_fields=False):
    """For a remote deployment: fields we do not know are the provider's (passed through)."""


class _Model(msgspec.Struct):
    model: str


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    cls: msgspec.json.Decoder(cls)
    for cls in (
        ChatCompletionRequest,
        CompletionRequest,
        RemoteChatCompletionRequest,
        RemoteCompletionRequest,
        _Model,
    )
}


def peek_model(body: bytes) -> str:
    """The ``model`` of a body, to choose the deployment (and so the schema) first."""
    return decode(body, _Model).model


_PATH = re.compile(r"at `\$\.?([^`\[]*)")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


INT_GOT_FLOAT = re.compile(r"Expected `int[^`]*`, got `float`")
"""msgspec's words for a whole number written with a fraction where an integer is due."""


def decode_typed(body: bytes, decoder: Callable[[bytes], T]) -> T:
    """``decoder(body)``, depth-bounded, where a whole number written with a fraction (``2.0``)
    is the integer it is: JSON has one number type, and JSON Schema's ``integer`` (the
    OpenAPI document's) takes ``2.0``. Only a body the strict decode refused pays for this."""
    try:
        return json_body.decode(body, decoder)
    except msgspec.ValidationError as error:
        if not INT_GOT_FLOAT.search(str(error)):
            raise
    return decoder(_encode(whole_numbers(json_body.decode(body))))


def whole_numbers(value: Any) -> Any:
    """``value`` with every integral float an int (depth already bounded by ``json_body``)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value


def decode(body: bytes, cls: type[T]) -> T:
    """Parse and type-check a body; errors become a 400 naming the parameter."""
    try:
        result: T = decode_typed(body, _decoders[cls].decode)
    except msgspec.ValidationError as error:
        text = str(error)
        unknown = _UNKNOWN.search(text)
        if unknown:
            raise RequestError(
                f"Unrecognized request argument supplied: {unknown.group(1)}",
                param=unknown.group(1),
                code="unrecognized_argument",
            ) from None
        path = _PATH.search(text)
        missing = _MISSING.search(text)
        param = path.group(1) if path and path.group(1) else None
        if missing:
            param = f"{param}.{missing.group(1)}" if param else missing.group(1)
        raise RequestError(f"Invalid request: {text}", param=param) from None
    except msgspec.DecodeError as error:
        raise RequestError(f"The body is not valid JSON: {error}") from None
    return result


def _range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise RequestError(f"{name} must be between {low:g} and {high:g}, got {value}", param=name)


def _not_honoured(req: _Common) -> None:
    for name in _NOT_HONOURED:
        value = getattr(req, name)
        if value is not UNSET and value is not None and value != _NO_OPS.get(name, UNSET):
            raise UnsupportedParameter(name, "not supported by this deployment's runtime")


def validate_common(req: _Common, *, remote: bool = False) -> None:
    """Ranges and consistency; for a local deployment also the fields it cannot honour
    (a remote one forwards them to its provider)."""
    if not remote:
        _not_honoured(req)
    if not req.model:
        raise RequestError("model must not be empty", param="model")
    _range("n", req.n, 1, MAX_N)
    _range("temperature", req.temperature, 0.0, 2.0)
    _range("top_p", req.top_p, 0.0, 1.0)
    _range("presence_penalty", req.presence_penalty, -2.0, 2.0)
    _range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)
    _range("top_k", req.top_k, -1, MAX_COUNT)  # -1 or 0: disabled
    _range("max_tokens", req.max_tokens, 1, MAX_COUNT)
    _range("seed", req.seed, *SEED_RANGE)
    if remote:
        _logit_bias(req.logit_bias)
    if req.stream_options is not None and not req.stream:
        raise RequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    stops = stop_list(req.stop)
    if len(stops) > MAX_STOP:
        raise RequestError(f"stop takes at most {MAX_STOP} sequences", param="stop")


def _logit_bias(bias: Any) -> None:
    """OpenAI's shape: token ids (as strings) to a bias in [-100, 100]."""
    if bias is UNSET or bias is None:
        return
    if not isinstance(bias, dict):
        raise RequestError(
            "logit_bias must be an object of token ids to biases", param="logit_bias"
        )
    for key, value in bias.items():
        if not (len(key) <= 10 and key.isascii() and key.isdigit() and int(key) <= MAX_COUNT):
            raise RequestError(f"logit_bias: {key!r} is not a token id", param="logit_bias")
        if type(value) not in (int, float) or not (
            LOGIT_BIAS_RANGE[0] <= value <= LOGIT_BIAS_RANGE[1]
        ):
            raise RequestError(
                f"logit_bias[{key}] must be a number between -100 and 100", param="logit_bias"
            )


def validate_chat(
    req: ChatCompletionRequest, *, remote: bool = False, deployment: Deployment | None = None
) -> None:
    """``deployment``: the one it goes to; its remoteness wins over ``remote``, and ``n`` is
    checked against what one of its replicas can ever admit."""
    if deployment is not None:
        remote = deployment.remote
    validate_common(req, remote=remote)
    validate_messages(req.messages, remote=remote)
    both = req.max_tokens is not None and req.max_completion_tokens is not None
    if both and req.max_tokens != req.max_completion_tokens:
        raise RequestError(
            "max_tokens and max_completion_tokens disagree; set one",
            param="max_tokens",
            code="conflicting_parameters",
        )
    _range("max_completion_tokens", req.max_completion_tokens, 1, MAX_COUNT)
    if req.top_logprobs is not None:
        if not req.logprobs:
            raise RequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        _range("top_logprobs", req.top_logprobs, 0, MAX_TOP_LOGPROBS)
    if deployment is not None:
        check_admissible(deployment, n=req.n, prompts=1)


def validate_completion(req: CompletionRequest, *, deployment: Deployment) -> list[str]:
    """Every check of a completions request; its prompts."""
    validate_common(req, remote=deployment.remote)
    _range("logprobs", req.logprobs, 0, MAX_LOGPROBS)
    prompts = prompts_of(req)
    check_admissible(deployment, n=req.n, prompts=len(prompts))
    return prompts


def check_admissible(deployment: Deployment, *, n: int, prompts: int) -> None:
    """A request one replica could never admit is the request's 400, not a 429 that no retry
    passes. Every prompt of a request goes to the same replica; a local one holds each choice
    as a sequence, a remote one each prompt as one upstream call (``n`` travels inside it)."""
    serving = deployment.serving
    if not deployment.remote:
        bound = serving.max_concurrent + serving.queue_capacity
        if n * prompts <= bound:
            return
        what = "serving.max_concurrent + serving.queue_capacity"
        param = "n" if n > bound or prompts == 1 else "prompt"
        raise RequestError(
            f"{param}: {prompts} prompt(s) x n={n} is {n * prompts} sequences; a replica of "
            f"{deployment.name!r} holds at most {bound} ({what})",
            param=param,
            code=OVER_CAPACITY,
        )
    if prompts <= 1 + serving.queue_capacity:  # max_concurrent is at least 1
        return
    bound = RemoteConfig.of(deployment).max_concurrent + serving.queue_capacity
    if prompts > bound:
        raise RequestError(
            f"prompt: {prompts} prompts are {prompts} upstream calls; a replica of "
            f"{deployment.name!r} holds at most {bound} (runtime_config.max_concurrent + "
            "serving.queue_capacity)",
            param="prompt",
            code=OVER_CAPACITY,
        )


def stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def sampling_of(req: ChatCompletionRequest | CompletionRequest) -> SamplingParams:
    """Map the API's parameters to the engine's (OpenAI's defaults where absent)."""
    max_tokens = req.max_tokens
    logprobs, top_logprobs = False, None
    if isinstance(req, ChatCompletionRequest):
        if req.max_completion_tokens is not None:
            max_tokens = req.max_completion_tokens
        logprobs, top_logprobs = req.logprobs, req.top_logprobs
    elif req.logprobs is not None:
        logprobs, top_logprobs = True, req.logprobs
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k if req.top_k not in (None, 0, -1) else None,
        seed=req.seed,
        stop=stop_list(req.stop),
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def prompts_of(req: CompletionRequest) -> list[str]:
    prompt = req.prompt
    if isinstance(prompt, str):
        return [prompt]
    if len(prompt) > MAX_PROMPTS:
        raise RequestError(f"prompt takes at most {MAX_PROMPTS} prompts", param="prompt")
    if prompt and all(isinstance(p, str) for p in prompt):
        return [str(p) for p in prompt]
    if not prompt:
        raise RequestError("prompt must not be empty", param="prompt")
    raise UnsupportedParameter("prompt", "token-id prompts are not supported by this runtime")
