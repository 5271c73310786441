"""``FakeRunner``: a deterministic model for tests and demos (``runtime: fake``), with faults.

Tokens are words derived from the prompt (and, when sampling, from the seed), so the same request
gives the same answer. ``runtime_config``:

- ``token_latency_ms`` (0): time of one decode step.
- ``prefill_latency_ms`` (0): extra time of a step that prefills at least one prompt.
- ``load_latency_ms`` (0): time to load (and to rebuild after a poisoned context).
- ``max_context`` (4096): context window in tokens (prompt tokens are whitespace-separated words).
- ``output_tokens`` (32): the natural answer length; then the sequence ends with EOS.
- ``poison_marker``: a prompt containing it raises ``ContextPoisoned`` (the context stays
  poisoned until rebuilt). ``oom_marker``: raises ``OutOfMemory`` for that sequence.
  ``fatal_marker``: raises ``Unrecoverable``. ``hang_marker``: the step never returns (a hung
  device: only a health check on the engine's progress notices).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Sequence
from typing import Any

import msgspec

from inference_runtime.engine.runner import (
    RunnerInfo,
    ScheduledBatch,
    ScheduledSequence,
    TokenOutput,
)
from inference_runtime.errors import ContextPoisoned, OutOfMemory, Unrecoverable
from inference_runtime.types import Deployment, EngineRequest
from inference_runtime.types.convert import typed

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "river",
    "mountain",
    "cloud",
    "stone",
    "light",
    "shadow",
    "garden",
    "window",
    "paper",
    "signal",
    "engine",
    "harbor",
    "forest",
    "silver",
    "winter",
    "summer",
    "market",
    "candle",
    "bridge",
    "valley",
    "ocean",
    "planet",
    "number",
    "letter",
    "music",
    "story",
    "answer",
    "question",
    "model",
    "token",
    "actor",
    "system",
    "replica",
    "stream",
    "batch",
    "kernel",
    "vector",
    "matrix",
    "tensor",
    "gradient",
]
EOS_ID = 0


MAX_LATENCY_MS = 3_600_000.0
"""An hour: the most any simulated latency may be."""


class FakeSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``fake`` deployment's ``runtime_config`` (see the module docstring); a key not here is
    refused when the deployment is checked, not when a replica starts."""

    token_latency_ms: float = 0.0
    """Time of one decode step."""
    prefill_latency_ms: float = 0.0
    """Extra time of a step that prefills at least one prompt."""
    load_latency_ms: float = 0.0
    """Time to load (and to rebuild after a poisoned context)."""
    max_context: int = 4096
    """Context window in tokens (whitespace-separated words)."""
    output_tokens: int = 32
    """The natural answer length; then EOS."""
    poison_marker: str | None = None
    """A prompt containing it raises ``ContextPoisoned``."""
    oom_marker: str | None = None
    """A prompt containing it raises ``OutOfMemory`` for that sequence."""
    fatal_marker: str | None = None
    """A prompt containing it raises ``Unrecoverable``."""
    hang_marker: str | None = None
    """A prompt containing it makes the step never return."""

    def __post_init__(self) -> None:
        for name in ("token_latency_ms", "prefill_latency_ms", "load_latency_ms"):
            value = getattr(self, name)
            # a latency of 1e308 ms would make every request wait forever
            if not 0 <= value <= MAX_LATENCY_MS:
                raise ValueError(f"runtime_config.{name}: must be 0 to {MAX_LATENCY_MS:g} ms")
        if self.max_context < 1 or self.output_tokens < 1:
            raise ValueError("runtime_config: max_context and output_tokens must be >= 1")

    @classmethod
    def of(cls, runtime_config: dict[str, Any]) -> FakeSettings:
        """Validate a ``runtime_config``; errors name the key (unknown, or of the wrong type)."""
        return typed(runtime_config, cls, what="runtime_config (runtime 'fake')")


def _stable(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def word_id(word: str) -> int:
    known = _WORD_IDS.get(word)
    return known if known is not None else 1 + _stable(word) % 50_000


_WORD_IDS: dict[str, int] = {}
_WORD_IDS.update({w: word_id(w) for w in WORDS})


class FakeRunner:
    """Implements ``ModelRunner`` with no model at all."""

    def __init__(self, deployment: Deployment, *, device: str = "cpu") -> None:
        cfg = FakeSettings.of(deployment.runtime_config)
        self.token_latency = cfg.token_latency_ms / 1000
        self.prefill_latency = cfg.prefill_latency_ms / 1000
        self.load_latency = cfg.load_latency_ms / 1000
        self.output_tokens = cfg.output_tokens
        self.poison_marker = cfg.poison_marker
        self.oom_marker = cfg.oom_marker
        self.fatal_marker = cfg.fatal_marker
        self.hang_marker = cfg.hang_marker
        self.device = device
        self._info = RunnerInfo(
            runtime="fake",
            transport="local",
            max_context=cfg.max_context,
            capabilities=frozenset({"temperature", "top_p", "seed"}),
        )
        self.loaded = False
        self.poisoned = False
        self.closed = False
        self.loads = 0
        self.rebuilds = 0
        self.steps = 0
        self._rngs: dict[str, random.Random] = {}

    @property
    def info(self) -> RunnerInfo:
        return self._info

    async def load(self) -> None:
        await asyncio.sleep(self.load_latency)
        self.loaded = True
        self.loads += 1

    def encode(self, request: EngineRequest) -> tuple[list[int], str]:
        if request.messages is not None:
            text = "".join(f"<{m.role}> {m.text()}\n" for m in request.messages) + "<assistant>"
        else:
            text = request.prompt or ""
        return [word_id(w) for w in text.split()], text

    async def execute(self, batch: ScheduledBatch) -> dict[str, TokenOutput]:
        if not self.loaded or self.closed:
            raise ContextPoisoned("fake runner used before load or after close")
        self.release(batch.released)
        if self.poisoned:
            raise ContextPoisoned("fake context is poisoned; it must be rebuilt")
        prefills = [s for s in batch.sequences if s.prefill]
        self._inject_faults(prefills)
        if self.hang_marker and any(self.hang_marker in s.prompt_text for s in prefills):
            await asyncio.Event().wait()  # nothing ever sets it
        delay = self.token_latency + (self.prefill_latency if prefills else 0.0)
        await asyncio.sleep(delay)
        self.steps += 1
        return {s.seq_id: self._next_token(s) for s in batch.sequences}

    def _inject_faults(self, prefills: list[ScheduledSequence]) -> None:
        for seq in prefills:
            if self.fatal_marker and self.fatal_marker in seq.prompt_text:
                raise Unrecoverable(f"fatal marker in {seq.seq_id}")
            if self.oom_marker and self.oom_marker in seq.prompt_text:
                raise OutOfMemory(f"out of memory on {seq.seq_id}", sequence_ids=(seq.seq_id,))
            if self.poison_marker and self.poison_marker in seq.prompt_text:
                self.poisoned = True
                raise ContextPoisoned(f"poison marker in {seq.seq_id}")

    def _next_token(self, seq: ScheduledSequence) -> TokenOutput:
        position = len(seq.output_ids)
        if position >= self.output_tokens:
            return TokenOutput(token_id=EOS_ID, text="", eos=True)
        sampling = seq.sampling
        if sampling.temperature == 0.0:
            index = _stable(tuple(seq.prompt_ids), position) % len(WORDS)
        else:
            rng = self._rngs.get(seq.seq_id)
            if rng is None:
                seed = sampling.seed if sampling.seed is not None else random.getrandbits(64)
                rng = self._rngs[seq.seq_id] = random.Random(_stable(tuple(seq.prompt_ids), seed))
            span = max(1, round(len(WORDS) * min(1.0, sampling.top_p)))
            index = rng.randrange(span)
        word = WORDS[index]
        return TokenOutput(token_id=word_id(word), text=word if position == 0 else " " + word)

    def release(self, seq_ids: Sequence[str]) -> None:
        for seq_id in seq_ids:
            self._rngs.pop(seq_id, None)

    @property
    def live_sequences(self) -> int:
        return len(self._rngs)

    async def rebuild(self) -> None:
        await asyncio.sleep(self.load_latency)
        self._rngs.clear()
        self.poisoned = False
        self.loaded = True
        self.rebuilds += 1

    async def close(self) -> None:
        self._rngs.clear()
        self.closed = True
