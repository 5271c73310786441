"""Sampling never fails a step over one request's parameters: a temperature so small that
dividing by it overflows the logits is greedy decoding."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from inference_runtime.engine.runners.sampling import new_state, sample
from inference_runtime.types import SamplingParams


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-45, 1e-6])
def test_a_vanishing_temperature_is_greedy(temperature: float) -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    states = [
        new_state(SamplingParams(temperature=temperature, seed=7), device=torch.device("cpu")),
        new_state(SamplingParams(temperature=1.0, seed=7), device=torch.device("cpu")),
        new_state(SamplingParams(temperature=0.0), device=torch.device("cpu")),
    ]
    choices = sample(logits, states)
    assert choices[0].token_id == int(logits[0].argmax())
    assert choices[2].token_id == int(logits[2].argmax())


def test_a_small_but_usable_temperature_still_samples() -> None:
    logits = torch.zeros(1, 10)
    state = new_state(SamplingParams(temperature=1e-4, seed=3), device=torch.device("cpu"))
    assert state.generator is not None
    assert 0 <= sample(logits, [state])[0].token_id < 10


def test_penalised_rows_with_a_vanishing_temperature_do_not_fail() -> None:
    logits = torch.randn(1, 20)
    params = SamplingParams(temperature=1e-300, presence_penalty=1.5, seed=1)
    state = new_state(params, device=torch.device("cpu"))
    state.counts[int(logits[0].argmax())] = 3
    assert 0 <= sample(logits, [state])[0].token_id < 20
