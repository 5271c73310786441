"""Admission checks of an engine core: parameters the runner honours, and the context window.
Both fail before any work is done."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from inference_runtime.engine.runner import ModelRunner
from inference_runtime.engine.sequence import Sequence
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.errors import ContextLengthExceeded, UnsupportedParameter
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


def check_sampling(sampling: SamplingParams, *, capabilities: frozenset[str], runtime: str) -> None:
    for name, neutral in _NEUTRAL.items():
        if name in capabilities:
            continue
        value = getattr(sampling, name)
        if value != neutral:
            raise UnsupportedParameter(name, f"not supported by runtime '{runtime}'")
    if sampling.max_tokens is not None and sampling.max_tokens < 1:
        raise UnsupportedParameter("max_tokens", "must be >= 1")


def build_sequences(
    runner: ModelRunner,
    requests: Seq[EngineRequest],
    sink: SequenceSink,
    *,
    arrival: float,
) -> list[Sequence]:
    """One ``Sequence`` per choice, after the checks; the prompt is encoded once."""
    info = runner.info
    first = requests[0]
    check_sampling(first.sampling, capabilities=info.capabilities, runtime=info.runtime)
    prompt_ids, prompt_text = runner.encode(first)
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
