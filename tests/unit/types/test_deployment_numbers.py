"""Numbers in a deployment spec are finite and in range when the spec is read: a value that
would overflow placement's arithmetic, or make a fake replica wait forever, is refused naming
its field instead of failing an actor later."""

from __future__ import annotations

from typing import Any

import pytest

from inference_runtime.testing.fake_runner import FakeSettings
from inference_runtime.types import Deployment


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"gpu_memory_gib": 1e308}, "gpu_memory_gib"),
        ({"pricing": {"input_per_mtok": float("inf")}}, "pricing.input_per_mtok"),
        ({"serving": {"queue_timeout_s": float("inf")}}, "serving.queue_timeout_s"),
        ({"runtime_config": {"nested": [1, float("nan")]}}, "runtime_config.nested[1]"),
    ],
)
def test_infinite_or_huge_numbers_are_refused_naming_the_field(
    extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Deployment.from_dict({"name": "d", "runtime": "fake", **extra})


def test_reasonable_numbers_are_kept() -> None:
    spec = Deployment.from_dict(
        {"name": "d", "runtime": "fake", "gpu_memory_gib": 80.0, "pricing": {"input_per_mtok": 1}}
    )
    assert spec.gpu_memory_gib == 80.0


@pytest.mark.parametrize("name", ["token_latency_ms", "prefill_latency_ms", "load_latency_ms"])
def test_a_fake_latency_that_never_ends_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FakeSettings.of({name: 1e308})
    assert getattr(FakeSettings.of({name: 5}), name) == 5
