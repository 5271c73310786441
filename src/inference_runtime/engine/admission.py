"""Admission checks of an engine core: parameters the runner honours, and the context window.
Both fail before any work is done. A big prompt is encoded in a worker thread, never on the
loop that serves every other request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence as Seq

from inference_runtime.engine.runner import ModelRunner, RunnerInfo
from inference_runtime.engine.sequence import Sequence
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.errors import ContextLengthExceeded, RequestError, UnsupportedParameter
from inference_runtime.types import EngineRequest, SamplingParams

# parameter -> its neutral value; a runner lacking the capability accepts only that value
_NEUTRAL: dict[str, object] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": None,
    "seed": None,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logprobs": False,
    "top_logprobs": None,
}

# parameter -> the values a sampler takes; outside them a runner would raise mid-step (a seed
# beyond int64 overflows torch's generator) and fail every sequence of the batch with it
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (-1, 2**31 - 1),
    "seed": (-(2**63), 2**63 - 1),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "top_logprobs": (0, 20),
    "max_tokens": (1, 2**31 - 1),
}


def check_sampling(sampling: SamplingParams, *, capabilities: frozenset[str], runtime: str) -> None:
    """The request's own error (a 400) for a value no sampler takes, or one this runner cannot
    honour; the gateway checks the same ranges, this holds for every way in."""
    for name, (low, high) in _RANGES.items():
        value = getattr(sampling, name)
        if value is not None and not low <= value <= high:
            raise RequestError(f"{name} must be between {low:g} and {high:g}", param=name)
    for name, neutral in _NEUTRAL.items():
        if name in capabilities:
            continue
        value = getattr(sampling, name)
        if value != neutral:
            raise UnsupportedParameter(name, f"not supported by runtime '{runtime}'")


OFF_LOOP_CHARS = 32_768
"""A prompt of more characters is encoded in a worker thread: tokenizing costs about a
microsecond a character, so this keeps one request's encoding under ~50 ms of the loop."""

Encoded = tuple[list[int], str]
"""A prompt's token ids and its text, as ``ModelRunner.encode`` gives them."""


def prompt_chars(request: EngineRequest) -> int:
    """The characters the runner encodes for ``request`` (its template aside)."""
    if request.messages is not None:
        return sum(len(m.content) if isinstance(m.content, str) else len(m.text())
                   for m in request.messages)  # fmt: skip
    return len(request.prompt or "")


def encodes_off_loop(request: EngineRequest) -> bool:
    return prompt_chars(request) > OFF_LOOP_CHARS


def check_size(request: EngineRequest, info: RunnerInfo) -> None:
    """Refuse a prompt that cannot fit whatever its tokens: more characters than the context
    holds tokens times the longest token's characters. Costs no encoding (a 4 MB prompt would
    otherwise be tokenized only to be refused)."""
    if info.max_token_chars is None:
        return
    chars = prompt_chars(request)
    if chars <= info.max_context * info.max_token_chars:
        return
    max_tokens = request.sampling.max_tokens or 1
    raise ContextLengthExceeded(
        prompt_tokens=-(-chars // info.max_token_chars),
        max_tokens=max_tokens,
        max_context=info.max_context,
        at_least=True,
    )


async def encode_off_loop(runner: ModelRunner, requests: Seq[EngineRequest]) -> Encoded:
    """The checks that need no encoding, then the encoding in a worker thread (the loop goes
    on serving meanwhile)."""
    first = requests[0]
    info = runner.info
    check_sampling(first.sampling, capabilities=info.capabilities, runtime=info.runtime)
    check_size(first, info)
    return await asyncio.to_thread(runner.encode, first)


def build_sequences(
    runner: ModelRunner,
    requests: Seq[EngineRequest],
    sink: SequenceSink,
    *,
    arrival: float,
    encoded: Encoded | None = None,
) -> list[Sequence]:
    """One ``Sequence`` per choice, after the checks; the prompt is encoded once (here, unless
    ``encoded`` holds what ``encode_off_loop`` gave)."""
    info = runner.info
    first = requests[0]
    check_sampling(first.sampling, capabilities=info.capabilities, runtime=info.runtime)
    if encoded is None:
        check_size(first, info)
    prompt_ids, prompt_text = encoded if encoded is not None else runner.encode(first)
    room = info.max_context - len(prompt_ids)
    max_tokens = first.sampling.max_tokens if first.sampling.max_tokens is not None else room
    if room < 1 or max_tokens > room:
        raise ContextLengthExceeded(
            prompt_tokens=len(prompt_ids),
            max_tokens=max(max_tokens, 1),
            max_context=info.max_context,
        )
    return [
        Sequence(
            request=request,
            prompt_ids=prompt_ids,
            prompt_text=prompt_text,
            max_tokens=max_tokens,
            sink=sink,
            arrival=arrival,
        )
        for request in requests
    ]
