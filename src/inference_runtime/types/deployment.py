"""The ``Deployment`` value object: what to serve, where, and under which limits."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec

from inference_runtime.types.convert import typed
from inference_runtime.types.vllm_config import VllmConfig

RUNTIMES = ("fake", "transformers", "embeddings", "vllm", "openai", "anthropic")
"""Runtime kinds a deployment may name."""
REMOTE_RUNTIMES = ("openai", "anthropic")
"""Runtimes whose model runs at a provider: requests are forwarded, fields passed through."""

ROUTING_POLICIES = ("least_loaded", "power_of_two", "round_robin", "session_affinity")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


MAX_GPU_MEMORY_GIB = 1 << 20
"""A PiB: more than any device has; placement does integer arithmetic on it."""


def _rule(field: str, rule: str) -> ValueError:
    return ValueError(f"{field}: {rule}")


def _first_infinite(value: Any, path: str = "") -> str | None:
    """The path of the first infinite or NaN number in a spec (JSON's 1e400 decodes to inf)."""
    if isinstance(value, float):
        return path if not math.isfinite(value) else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        sub = f"{path}{key}" if str(key).startswith("[") else f"{path}.{key}" if path else key
        found = _first_infinite(item, sub)
        if found is not None:
            return found
    return None


class ServingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Capacity of each replica and what happens when it is used up."""

    max_concurrent: int = 64
    """Sequences a replica runs at once (its batch size)."""
    queue_capacity: int = 256
    """Sequences a replica holds waiting beyond ``max_concurrent``; more is backpressure."""
    max_batched_tokens: int = 8192
    """Token budget of one engine step (a decode costs 1, a prefill its prompt length)."""
    on_capacity_exhausted: Literal["reject", "queue", "fallback"] = "reject"
    """``reject``: 429 with Retry-After; ``queue``: wait up to ``queue_timeout_s``;
    ``fallback``: try the deployments in ``fallbacks``, in order."""
    queue_timeout_s: float = 30.0
    """How long ``queue`` waits for capacity before answering 429."""
    retry_after_s: float = 1.0
    """The Retry-After hint given with a 429 for backpressure."""
    max_tokens: int | None = None
    """The most tokens a request may ask to generate (``max_tokens`` or
    ``max_completion_tokens``); asking more is a 400, asking nothing means this many."""

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise _rule("serving.max_concurrent", "must be >= 1")
        if self.max_batched_tokens < 1:
            raise _rule("serving.max_batched_tokens", "must be >= 1")
        if self.queue_capacity < 0:
            raise _rule("serving.queue_capacity", "must be >= 0")
        if self.queue_timeout_s <= 0:
            raise _rule("serving.queue_timeout_s", "must be > 0")
        if self.retry_after_s <= 0:
            raise _rule("serving.retry_after_s", "must be > 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise _rule("serving.max_tokens", "must be >= 1")


class Pricing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Price per million tokens, in the operator's currency."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise _rule("pricing", "prices must be >= 0")

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class Budget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Spend limits over rolling windows; enforced at admission with worst-case reservations
    (the prompt bounded by its UTF-8 bytes, the completion by ``max_tokens``: a request that
    sets none is held to ``serving.max_tokens``, else 4096), so settled spend never passes a
    limit."""

    max_spend_per_hour: float | None = None
    max_spend_per_day: float | None = None
    on_exceeded: Literal["reject", "warn", "throttle"] = "reject"
    """``reject``: 429 ``budget_exceeded``; ``warn``: serve and log; ``throttle``: hold the
    request until the window has room (up to the queue timeout), then reject."""

    def __post_init__(self) -> None:
        if self.max_spend_per_hour is None and self.max_spend_per_day is None:
            raise _rule("budget", "set max_spend_per_hour, max_spend_per_day, or both")
        for name in ("max_spend_per_hour", "max_spend_per_day"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise _rule(f"budget.{name}", "must be > 0")


class Deployment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One served model: clients address it by ``name`` (the API's ``model`` field)."""

    name: str
    """The id clients send as ``model``; unique among deployments."""
    runtime: str
    """How the model runs: one of ``RUNTIMES``."""
    model: str = ""
    """What the runtime loads or calls (a folder, a file, an upstream model); default: name."""
    runtime_config: dict[str, Any] = {}
    """Settings of the runtime (for ``fake``: token_latency_ms, prefill_latency_ms, ...)."""
    replicas: int = 1
    """Independent copies; requests are routed among them."""
    gpus: int = 0
    """GPUs per replica (local runtimes)."""
    gpu_memory_gib: float | None = None
    """Free GPU memory each of a replica's GPUs must offer. Unset: a replica takes its GPUs
    whole; set: replicas share a GPU while each still finds this much free on it."""
    serving: ServingConfig = ServingConfig()
    fallbacks: tuple[str, ...] = ()
    """Deployments to try, in order, when this one has no capacity or no healthy replica."""
    budget: Budget | None = None
    pricing: Pricing = Pricing()
    idempotent: bool = True
    """May a request be retried on another replica when one fails before the first token?"""
    routing: str = "least_loaded"
    """Routing policy among replicas: one of ``ROUTING_POLICIES``."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise _rule(
                "name",
                f"{self.name!r} must be 1-128 characters of letters, digits and ._:/@+- "
                "starting with a letter or digit",
            )
        if self.runtime not in RUNTIMES:
            raise _rule("runtime", f"{self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.runtime == "vllm":
            VllmConfig.of(self.runtime_config)  # unknown keys and bad values: refused now
        if self.replicas < 0:
            raise _rule("replicas", "must be >= 0")
        if self.gpus < 0:
            raise _rule("gpus", "must be >= 0")
        if self.gpu_memory_gib is not None and not 0 < self.gpu_memory_gib <= MAX_GPU_MEMORY_GIB:
            raise _rule(
                "gpu_memory_gib", f"must be > 0 and <= {MAX_GPU_MEMORY_GIB} (or unset: whole GPUs)"
            )
        infinite = _first_infinite(self.to_dict())
        if infinite is not None:
            raise _rule(infinite, "must be a finite number")
        if self.gpus and self.runtime in ("openai", "anthropic"):
            raise _rule("gpus", f"a remote runtime ({self.runtime}) uses no GPU; set gpus: 0")
        if self.routing not in ROUTING_POLICIES:
            raise _rule("routing", f"{self.routing!r} is not one of {', '.join(ROUTING_POLICIES)}")
        if self.name in self.fallbacks:
            raise _rule("fallbacks", "a deployment cannot fall back to itself")
        if self.serving.on_capacity_exhausted == "fallback" and not self.fallbacks:
            raise _rule(
                "serving.on_capacity_exhausted", "'fallback' needs a non-empty fallbacks list"
            )

    @property
    def remote(self) -> bool:
        return self.runtime in REMOTE_RUNTIMES

    @property
    def model_id(self) -> str:
        """What the runtime loads or calls."""
        return self.model or self.name

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        """Validate a mapping (from YAML or JSON); errors name the field and the rule."""
        return typed(data, cls, what="invalid deployment")

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result
