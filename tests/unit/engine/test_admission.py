"""Admission's checks: a value no sampler takes is the request's own 400, whatever way it came
in (the gateway checks the same ranges), before any work is done on the replica."""

from __future__ import annotations

import pytest

from inference_runtime.engine.admission import check_sampling
from inference_runtime.errors import RequestError, UnsupportedParameter
from inference_runtime.types import SamplingParams

ALL = frozenset({"temperature", "top_p", "top_k", "seed", "presence_penalty",
                 "frequency_penalty", "logprobs", "top_logprobs"})  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 2**70), ("seed", -(2**63) - 1), ("temperature", 3.0), ("top_k", 2**40),
     ("top_logprobs", 50), ("max_tokens", 0), ("presence_penalty", -9.0)],
)  # fmt: skip
def test_a_value_no_sampler_takes_is_a_request_error(field: str, value: float) -> None:
    sampling = SamplingParams(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(RequestError) as caught:
        check_sampling(sampling, capabilities=ALL, runtime="transformers")
    assert caught.value.param == field
    assert not caught.value.retryable  # answered, never retried onto another replica


def test_int64_seeds_are_taken_and_capabilities_still_hold() -> None:
    for seed in (2**63 - 1, -(2**63), 0):
        check_sampling(SamplingParams(seed=seed), capabilities=ALL, runtime="transformers")
    with pytest.raises(UnsupportedParameter):
        check_sampling(SamplingParams(seed=1), capabilities=frozenset(), runtime="fake")
