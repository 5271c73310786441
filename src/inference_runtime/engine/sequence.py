"""``Sequence``: one choice of one request inside an engine, and its stop rules."""

from __future__ import annotations

import enum

from inference_runtime.engine.runner import ScheduledSequence, TokenOutput
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.types import EngineRequest, TokenChunk


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


class Sequence:
    """Generation state of one sequence; text is checked for stop strings as it grows.

    Text that could be the start of a stop string is held back until it is known not to be,
    so a client never sees any part of a stop string.
    """

    __slots__ = (
        "arrival",
        "emitted",
        "finish_reason",
        "first_token_at",
        "holdback",
        "isolated",
        "max_tokens",
        "output_ids",
        "prompt_ids",
        "prompt_text",
        "request",
        "scheduled_view",
        "seq_id",
        "sink",
        "status",
        "stops",
        "text",
    )

    def __init__(
        self,
        *,
        request: EngineRequest,
        prompt_ids: list[int],
        prompt_text: str,
        max_tokens: int,
        sink: SequenceSink,
        arrival: float,
        isolated: bool = False,
    ) -> None:
        self.request = request
        self.isolated = isolated
        """Runs in steps of its own: its request was in a step that failed, so if it fails
        again it is alone there (the culprit, for sure), and no other request is in its step."""
        self.seq_id = request.sequence_id
        self.prompt_ids = prompt_ids
        self.prompt_text = prompt_text
        self.max_tokens = max_tokens
        self.sink = sink
        self.arrival = arrival
        self.output_ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stops = tuple(s for s in request.sampling.stop if s)
        self.holdback = max((len(s) for s in self.stops), default=1) - 1
        self.status = SequenceStatus.WAITING
        self.finish_reason: str | None = None
        self.first_token_at: float | None = None
        self.scheduled_view = ScheduledSequence(
            seq_id=self.seq_id,
            prompt_ids=self.prompt_ids,
            output_ids=self.output_ids,
            sampling=request.sampling,
            prefill=True,
            prompt_text=prompt_text,
        )

    def scheduled(self) -> ScheduledSequence:
        """What the runner sees of this sequence: one object for its whole life (it shares the
        output list), only the prefill flag changes."""
        view = self.scheduled_view
        view.prefill = self.status is SequenceStatus.WAITING
        return view

    def append(self, out: TokenOutput) -> TokenChunk:
        """Add one token; return its chunk (its text is empty while held back, but the token
        is always reported so that usage stays exact even for a cancelled request)."""
        self.output_ids.append(out.token_id)
        if out.eos:
            self.finish_reason = "stop"
        else:
            self.text += out.text
            if self.stops and self._hit_stop():
                self.finish_reason = "stop"
            elif len(self.output_ids) >= self.max_tokens:
                self.finish_reason = "length"
        end = (
            len(self.text)
            if self.finish_reason
            else max(self.emitted, len(self.text) - self.holdback)
        )
        delta = self.text[self.emitted : end]
        self.emitted = end
        logprobs = None
        if out.logprob is not None:
            logprobs = ((out.token_text or out.text, out.logprob, out.top_logprobs),)
        return TokenChunk(
            request_id=self.request.request_id,
            index=self.request.choice_index,
            text=delta,
            token_ids=(out.token_id,),
            finish_reason=self.finish_reason,
            logprobs=logprobs,
        )

    def _hit_stop(self) -> bool:
        window_start = max(0, self.emitted - self.holdback)
        best = -1
        for stop in self.stops:
            at = self.text.find(stop, window_start)
            if at != -1 and (best == -1 or at < best):
                best = at
        if best == -1:
            return False
        self.text = self.text[:best]
        return True

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_ids)
