"""The ``ModelRunner`` protocol: what an engine core needs from a model, local or not.

The engine core owns scheduling; a runner only turns a scheduled batch into one new token per
sequence. Runners raise ``ContextPoisoned`` / ``OutOfMemory`` / ``Unrecoverable`` (errors.py) when
the device is in trouble; the two-tier supervision decides what follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from inference_runtime.types import EngineRequest, SamplingParams


class RunnerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a runner is and can do."""

    runtime: str
    """The runtime kind (``fake``, ``transformers``, ``vllm``, ...)."""
    transport: str
    """``local`` (runs in this process's device) or ``remote`` (calls a provider)."""
    max_context: int
    """Prompt plus generated tokens must fit in this many tokens."""
    capabilities: frozenset[str]
    """Sampling parameters it honours beyond ``max_tokens`` and ``stop`` (which the engine
    enforces for every runner): e.g. ``temperature``, ``top_p``, ``seed``, ``logprobs``."""
    kinds: frozenset[str] = frozenset({"chat", "completions"})
    """Endpoints it serves: ``chat``, ``completions``, ``embeddings``."""
    max_token_chars: int | None = None
    """The most characters one token of its vocabulary stands for: a prompt of more than
    ``max_context`` times this many characters cannot fit, and is refused before it is
    encoded. None: no such bound (no early refusal)."""


class ScheduledSequence(msgspec.Struct, kw_only=True):
    """One sequence in a step, as the runner sees it."""

    seq_id: str
    prompt_ids: list[int]
    output_ids: list[int]
    sampling: SamplingParams
    prefill: bool
    """True on the sequence's first step: the runner processes the prompt, then samples."""
    prompt_text: str = ""


class ScheduledBatch(msgspec.Struct, kw_only=True):
    """What one engine step runs."""

    sequences: list[ScheduledSequence]
    released: list[str] = []
    """Sequences finished or aborted since the last step: free their state before running."""

    @property
    def num_prefill_tokens(self) -> int:
        return sum(len(s.prompt_ids) for s in self.sequences if s.prefill)


class TokenOutput(msgspec.Struct, frozen=True, gc=False):
    """The token one step produced for one sequence."""

    token_id: int
    text: str
    """The text this token adds (already detokenized, may be empty)."""
    eos: bool = False
    logprob: float | None = None
    top_logprobs: tuple[tuple[str, float], ...] = ()
    token_text: str = ""
    """The token's own text, for logprobs (``text`` may hold back or merge bytes)."""


class ModelRunner(Protocol):
    """A model behind an engine core. All methods are called from one task at a time."""

    @property
    def info(self) -> RunnerInfo: ...

    async def load(self) -> None:
        """Load weights onto the device. Called once, from the context's ``pre_start``."""

    def encode(self, request: EngineRequest) -> tuple[list[int], str]:
        """The prompt's token ids (chat template applied) and its text."""
        ...

    async def execute(self, batch: ScheduledBatch) -> dict[str, TokenOutput]:
        """Run one step: a new token for every sequence in the batch, keyed by ``seq_id``."""
        ...

    def release(self, seq_ids: Sequence[str]) -> None:
        """Free the state (KV cache) of sequences that left the batch."""

    async def rebuild(self) -> None:
        """Make the context usable again after it was poisoned (reload on the same device)."""

    async def close(self) -> None:
        """Free the device; the runner is not used again."""
