"""A typo in ``runtime_config`` or a model that does not exist is refused when the deployment is
checked (before it is committed), naming the key or the path, for every runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from inference_runtime.cluster.manager import check_deployment
from inference_runtime.errors import RequestError
from inference_runtime.types import Deployment
from inference_runtime.types.transformers_config import TransformersConfig


def deployment(runtime: str, model: str = "", **config: Any) -> Deployment:
    return Deployment(name="d", runtime=runtime, model=model, runtime_config=config)


@pytest.mark.parametrize(
    ("runtime", "typo"),
    [
        ("fake", "token_latncy_ms"),
        ("transformers", "max_modl_len"),
        ("embeddings", "max_batch_sise"),
        ("openai", "base_ulr"),
        ("anthropic", "anthropic_versoin"),
    ],
)
def test_an_unknown_key_is_refused_naming_it(runtime: str, typo: str, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=typo) as refused:
        check_deployment(deployment(runtime, str(tmp_path), **{typo: 1}), local=False)
    assert refused.value.param is not None and refused.value.param.startswith("runtime_config")


@pytest.mark.parametrize(
    ("runtime", "config", "field"),
    [
        ("fake", {"output_tokens": "many"}, "output_tokens"),
        ("fake", {"token_latency_ms": -1}, "token_latency_ms"),
        ("transformers", {"dtype": "float8"}, "dtype"),
        ("openai", {"max_concurrent": 0}, "max_concurrent"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(
    runtime: str, config: dict[str, Any], field: str
) -> None:
    with pytest.raises(RequestError, match=field):
        check_deployment(deployment(runtime, **config), local=False)


@pytest.mark.parametrize("runtime", ["transformers", "embeddings"])
def test_a_model_path_that_does_not_exist_is_refused(runtime: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(RequestError, match="no-such-model") as refused:
        check_deployment(deployment(runtime, missing), local=True)
    assert refused.value.param == "model"
    # with Ray the replicas load on other nodes: the path is theirs to check
    check_deployment(deployment(runtime, missing), local=False)


def test_good_settings_pass() -> None:
    check_deployment(deployment("fake", token_latency_ms=1, output_tokens=3), local=True)
    check_deployment(deployment("openai", base_url="http://127.0.0.1:9/v1"), local=True)


def test_the_transformers_schema_is_the_runners() -> None:
    from inference_runtime.engine.runners import transformers

    assert msgspec.structs.asdict(TransformersConfig()) == transformers._SETTINGS
