"""Each runtime's ``runtime_config`` and model, checked before a deployment is committed.

A typo in ``runtime_config`` or a model path that does not exist would otherwise be accepted
into the catalog and fail every replica start, forever. Every runtime has its own schema (its
runner's, read without importing torch or vLLM): ``fake`` (``testing.fake_runner``),
``transformers`` (``types.transformers_config``), ``embeddings`` (its runner's settings),
``vllm`` (checked by ``Deployment`` itself), the remote ones (``remote.config``). The runners'
modules are named, not imported, as ``engine.runtimes`` names runners: whoever imports the
cluster (the gateway) does not load them until a deployment of theirs is checked.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from inference_runtime.errors import RequestError
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.testing.fake_runner import FakeSettings
from inference_runtime.types import Deployment
from inference_runtime.types.transformers_config import TransformersConfig

_EMBEDDINGS = "inference_runtime.engine.runners.embeddings"
_SETTINGS: dict[str, Callable[[Deployment], Any]] = {
    "fake": lambda d: FakeSettings.of(d.runtime_config),
    "transformers": lambda d: TransformersConfig.of(d.runtime_config),
    "embeddings": lambda d: _named(_EMBEDDINGS, "EmbeddingSettings").from_config(d.runtime_config),
    "openai": RemoteConfig.of,
    "anthropic": RemoteConfig.of,
}
_MODELS: dict[str, tuple[str, str]] = {
    "transformers": ("inference_runtime.engine.runners.model_source", "resolve"),
    "embeddings": (_EMBEDDINGS, "resolve_model_path"),
}
_FIELD = re.compile(r"^(runtime_config(?:\.[A-Za-z0-9_.-]+)?)\b")


def check_runtime_config(deployment: Deployment, *, local: bool) -> None:
    """Refuse (400 naming the key or the path) a ``runtime_config`` its runtime does not know,
    and, when replicas run in this process (``local``), a model this machine does not have."""
    check = _SETTINGS.get(deployment.runtime)
    if check is not None:
        try:
            check(deployment)
        except (ValueError, TypeError) as error:
            message = str(error)
            match = _FIELD.match(message)
            param = match.group(1) if match else "runtime_config"
            raise RequestError(message, param=param) from None
    resolver = _MODELS.get(deployment.runtime) if local else None
    if resolver is not None:
        try:
            _named(*resolver)(deployment.model_id)
        except ValueError as error:
            raise RequestError(str(error), param="model") from None


def _named(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)
