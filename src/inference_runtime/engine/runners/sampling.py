"""Choosing the next token of each sequence from its logits.

Greedy rows take the argmax in one batched call. Sampled rows get, in order: presence and
frequency penalties, temperature, top-k, top-p, then a draw from their own generator (seeded per
request, so a seed reproduces the same text whatever else shares the batch). Logprobs are those
of the model's raw distribution, as OpenAI reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inference_runtime.types import SamplingParams


@dataclass
class SamplerState:
    """What sampling keeps per sequence across steps."""

    params: SamplingParams
    generator: torch.Generator | None
    counts: dict[int, int]
    """Output token counts, for the presence and frequency penalties."""


GREEDY_BELOW = 1e-5
"""A temperature under this is greedy decoding (as in vLLM): dividing logits by 1e-300
overflows them to inf, and a draw from those probabilities fails the whole step."""


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


def new_state(params: SamplingParams, *, device: torch.device) -> SamplerState:
    generator = None
    if not is_greedy(params):
        generator = torch.Generator(device=device)
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
    return SamplerState(params=params, generator=generator, counts={})


@dataclass(frozen=True)
class Choice:
    token_id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...]


def sample(logits: torch.Tensor, states: list[SamplerState]) -> list[Choice]:
    """One token per row of ``logits`` ([rows, vocab], float32)."""
    rows = logits.shape[0]
    token_ids = [0] * rows
    greedy = [i for i, s in enumerate(states) if is_greedy(s.params) and not _penalised(s)]
    if greedy:
        picked = logits[greedy].argmax(dim=-1).tolist()
        for i, token in zip(greedy, picked, strict=True):
            token_ids[i] = token
    for i, state in enumerate(states):
        if i not in greedy:
            token_ids[i] = _sample_row(logits[i], state)
    for i, state in enumerate(states):
        state.counts[token_ids[i]] = state.counts.get(token_ids[i], 0) + 1
    return _with_logprobs(logits, states, token_ids)


def _penalised(state: SamplerState) -> bool:
    p = state.params
    return p.presence_penalty != 0.0 or p.frequency_penalty != 0.0


def _sample_row(row: torch.Tensor, state: SamplerState) -> int:
    p = state.params
    row = row.clone()
    if _penalised(state) and state.counts:
        ids = torch.tensor(list(state.counts), device=row.device)
        counts = torch.tensor(list(state.counts.values()), dtype=row.dtype, device=row.device)
        row[ids] -= p.presence_penalty + p.frequency_penalty * counts
    if is_greedy(p):
        return int(row.argmax())
    row = row / p.temperature
    if p.top_k is not None and 0 < p.top_k < row.shape[0]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        row = torch.full_like(row, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(row, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        # whatever the parameters did to this row, it is this request's token, not a reason
        # to fail the step of every sequence in the batch
        return int(torch.nan_to_num(row, nan=float("-inf")).argmax())
    return int(torch.multinomial(probs, 1, generator=state.generator))


def _with_logprobs(
    logits: torch.Tensor, states: list[SamplerState], token_ids: list[int]
) -> list[Choice]:
    wanted = [i for i, s in enumerate(states) if s.params.logprobs]
    if not wanted:
        return [Choice(t, None, ()) for t in token_ids]
    logprobs = torch.log_softmax(logits[wanted], dim=-1)
    result = [Choice(t, None, ()) for t in token_ids]
    for row, i in enumerate(wanted):
        chosen = float(logprobs[row, token_ids[i]])
        k = states[i].params.top_logprobs or 0
        top: tuple[tuple[int, float], ...] = ()
        if k:
            values, ids = torch.topk(logprobs[row], k)
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        result[i] = Choice(token_ids[i], chosen, top)
    return result
