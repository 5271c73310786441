"""Continuous batching: which sequences run in the next engine step.

A sequence that arrives while others decode joins at the next step; a finished or aborted one
leaves at once and its slot is free for the next step. The token budget bounds the work of one
step: each decode costs one token, each prefill its prompt length (a prompt larger than the whole
budget runs alone, so it cannot starve).

Prefill first: when sequences are waiting while others decode, the next step runs their prefills
alone, so a new request's first token does not wait for a decode step too; the step after always
decodes (new prefills may join it), so a stream of arrivals cannot stall the running ones.

Isolated sequences (a suspect of a failed step: ``Sequence.isolated``) never share a step: each
runs alone in its turn, between the batch's steps, for its whole life, so a step that fails
with one in it names its culprit and takes no innocent with it.
"""

from __future__ import annotations

from collections import deque

from inference_runtime.engine.runner import ScheduledBatch, TokenOutput
from inference_runtime.engine.sequence import Sequence, SequenceStatus
from inference_runtime.errors import Backpressure
from inference_runtime.types import TokenChunk


class Scheduler:
    """Waiting and running queues of one replica (plain state; the engine core drives it)."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_batched_tokens: int,
        queue_capacity: int,
        retry_after: float = 1.0,
    ) -> None:
        if max_num_seqs < 1 or max_batched_tokens < 1 or queue_capacity < 0:
            raise ValueError("max_num_seqs and max_batched_tokens must be >= 1, queue >= 0")
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.queue_capacity = queue_capacity
        self.retry_after = retry_after
        self.waiting: deque[Sequence] = deque()
        self.running: dict[str, Sequence] = {}
        self.released: list[str] = []
        self.solo: deque[Sequence] = deque()
        """Isolated sequences, waiting or running, in the order of their turns."""
        self._prefill_only_last = False
        self._solo_last = False

    # -- admission ---------------------------------------------------------------------

    def has_room(self, count: int = 1) -> bool:
        held = len(self.running) + len(self.waiting) + len(self.solo)
        return held + count <= self.max_num_seqs + self.queue_capacity

    def add(self, sequences: list[Sequence]) -> None:
        """Queue sequences (all choices of a request together); Backpressure when full."""
        if not self.has_room(len(sequences)):
            raise Backpressure(
                f"replica is at capacity ({len(self.running)} running, "
                f"{len(self.waiting)} waiting)",
                retry_after=self.retry_after,
            )
        for seq in sequences:
            (self.solo if seq.isolated else self.waiting).append(seq)

    def abort(self, seq_id: str) -> Sequence | None:
        """Remove a sequence wherever it is; its runner state is released at the next step."""
        seq = self.running.pop(seq_id, None)
        if seq is not None:
            self.released.append(seq_id)
        else:
            seq = _take(self.waiting, seq_id) or _take(self.solo, seq_id)
            if seq is not None and seq.status is SequenceStatus.RUNNING:  # a solo one
                self.released.append(seq_id)
        if seq is not None:
            seq.status = SequenceStatus.ABORTED
        return seq

    # -- one step ----------------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.solo)

    def schedule(self) -> tuple[ScheduledBatch, list[Sequence]]:
        """The next step's batch: every running sequence decodes, waiting ones join while
        slots and the token budget allow; or, every other step while there are isolated
        sequences, one of them alone. Returns the batch and the sequences in it."""
        solo_turn = bool(self.solo) and (not self._solo_last or not (self.running or self.waiting))
        self._solo_last = solo_turn
        if solo_turn:
            seq = self.solo[0]
            self.solo.rotate(-1)
            return self._batch([seq])
        prefill_only = (
            bool(self.waiting)
            and bool(self.running)
            and len(self.running) < self.max_num_seqs
            and not self._prefill_only_last
        )
        self._prefill_only_last = prefill_only
        seqs = [] if prefill_only else list(self.running.values())
        budget = self.max_batched_tokens - len(seqs)
        while self.waiting and len(self.running) < self.max_num_seqs:
            head = self.waiting[0]
            cost = len(head.prompt_ids)
            if cost > budget and seqs:
                break
            self.waiting.popleft()
            budget -= cost
            seqs.append(head)
            self.running[head.seq_id] = head
        return self._batch(seqs)

    def _batch(self, seqs: list[Sequence]) -> tuple[ScheduledBatch, list[Sequence]]:
        batch = ScheduledBatch(sequences=[s.scheduled() for s in seqs], released=self.released)
        self.released = []
        for seq in seqs:
            seq.status = SequenceStatus.RUNNING
        return batch, seqs

    def update(
        self, seqs: list[Sequence], outputs: dict[str, TokenOutput]
    ) -> tuple[list[tuple[Sequence, TokenChunk]], list[Sequence]]:
        """Apply a step's tokens. Returns the chunks to emit and the sequences that finished
        (already out of the running set). Sequences aborted during the step are skipped."""
        chunks: list[tuple[Sequence, TokenChunk]] = []
        finished: list[Sequence] = []
        for seq in seqs:
            if seq.status is not SequenceStatus.RUNNING:
                continue
            out = outputs.get(seq.seq_id)
            if out is None:
                continue
            chunks.append((seq, seq.append(out)))
            if seq.finish_reason is not None:
                seq.status = SequenceStatus.FINISHED
                if seq.isolated:
                    self.solo.remove(seq)
                else:
                    del self.running[seq.seq_id]
                self.released.append(seq.seq_id)
                finished.append(seq)
        return chunks, finished

    def drain_all(self) -> list[Sequence]:
        """Take every sequence out (the replica failed); their runner state is gone with it."""
        seqs = [*self.running.values(), *self.waiting, *self.solo]
        self.running.clear()
        self.waiting.clear()
        self.solo.clear()
        self.released = []
        for seq in seqs:
            seq.status = SequenceStatus.ABORTED
        return seqs

    def fail_running(self) -> list[Sequence]:
        """Take the running sequences out (their context was lost); waiting ones stay."""
        seqs = list(self.running.values())
        self.running.clear()
        started = [s for s in self.solo if s.status is SequenceStatus.RUNNING]
        for seq in started:
            self.solo.remove(seq)
        seqs += started
        self.released = []
        for seq in seqs:
            seq.status = SequenceStatus.ABORTED
        return seqs


def _take(queue: deque[Sequence], seq_id: str) -> Sequence | None:
    for candidate in queue:
        if candidate.seq_id == seq_id:
            queue.remove(candidate)
            return candidate
    return None
