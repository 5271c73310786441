"""``TransformersConfig``: a ``runtime: transformers`` deployment's ``runtime_config``, typed
and checked when the deployment is checked (plain data: the runner itself imports torch, which
validating a config must not). The runner's own defaults (``engine/runners/transformers.py``)
are these; a test holds the two together."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from inference_runtime.types.convert import typed


class TransformersConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype; ``auto`` is bfloat16 where the device supports it, else float32."""
    max_model_len: int | None = None
    """Context window in tokens; default: the model's."""
    kv_rows: int = 8
    """Initial rows (sequences) of the KV buffer; it grows on demand."""
    kv_length: int = 256
    """Initial length (tokens) of the KV buffer; it grows on demand."""

    def __post_init__(self) -> None:
        for name in ("max_model_len", "kv_rows", "kv_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"runtime_config.{name}: must be >= 1")

    @classmethod
    def of(cls, runtime_config: dict[str, Any]) -> TransformersConfig:
        """Validate a ``runtime_config``; errors name the key (unknown, or of the wrong type)."""
        return typed(runtime_config, cls, what="runtime_config (runtime 'transformers')")
