"""Our sampling parameters as vLLM's ``SamplingParams`` arguments, and what a vLLM stream yields
to the engine actor. Plain Python: vLLM is not imported here."""

from __future__ import annotations

from typing import Any, NamedTuple

from inference_runtime.errors import UnsupportedParameter
from inference_runtime.types import SamplingParams

CAPABILITIES = frozenset(
    {"temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty",
     "logprobs", "top_logprobs"}
)  # fmt: skip
"""What vLLM honours beyond ``max_tokens`` and ``stop`` (everything our API carries)."""
DEFAULT_MAX_LOGPROBS = 20
"""vLLM's default ``max_logprobs`` (also OpenAI's limit of ``top_logprobs``)."""


class Delta(NamedTuple):
    """What one vLLM output adds to one sequence (several tokens when the consumer lagged)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    """None while generating; ``stop``, ``length`` or ``abort``."""
    logprobs: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...] | None = None


def sampling_kwargs(
    sampling: SamplingParams, *, max_tokens: int, max_logprobs: int = DEFAULT_MAX_LOGPROBS
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one choice. What vLLM would refuse is
    refused here, naming our parameter (a 400 before any work)."""
    top_logprobs = sampling.top_logprobs or 0
    if sampling.logprobs and top_logprobs > max_logprobs:
        raise UnsupportedParameter(
            "top_logprobs",
            f"at most {max_logprobs} with this deployment (runtime_config.max_logprobs)",
        )
    if not sampling.logprobs and sampling.top_logprobs:
        raise UnsupportedParameter("top_logprobs", "requires logprobs: true")
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        # ours: None, 0 or -1 disable it; vLLM's: 0 disables it
        "top_k": sampling.top_k if sampling.top_k is not None and sampling.top_k > 0 else 0,
        "seed": sampling.seed,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "stop": list(sampling.stop) or None,
        "logprobs": top_logprobs if sampling.logprobs else None,
    }
    return kwargs


def gpu_indices_of(device: str) -> tuple[int, ...] | None:
    """The GPUs a placement's ``device`` names: ``cuda:1,3`` -> (1, 3); ``cuda`` or ``cpu`` ->
    None (the engine sees what the process sees)."""
    kind, _, indices = device.partition(":")
    if kind != "cuda" or not indices:
        return None
    return tuple(int(i) for i in indices.split(","))
