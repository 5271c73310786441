"""Stop strings, holdback, and the continuous-batching scheduler (no actors)."""

from __future__ import annotations

from typing import Any

import pytest

from inference_runtime.engine.runner import TokenOutput
from inference_runtime.engine.scheduler import Scheduler
from inference_runtime.engine.sequence import Sequence, SequenceStatus
from inference_runtime.errors import Backpressure
from inference_runtime.types import EngineRequest, SamplingParams


class NullSink:
    def on_chunk(self, chunk: Any) -> None: ...
    def on_finish(self, index: int, usage: Any) -> None: ...
    def on_error(self, index: int, error: BaseException, usage: Any) -> None: ...


def make_seq(
    rid: str, *, prompt_len: int = 3, max_tokens: int = 100, stop: tuple[str, ...] = ()
) -> Sequence:
    request = EngineRequest(
        request_id=rid,
        deployment="d",
        prompt="x",
        sampling=SamplingParams(max_tokens=max_tokens, stop=stop),
    )
    return Sequence(
        request=request,
        prompt_ids=list(range(prompt_len)),
        prompt_text="x",
        max_tokens=max_tokens,
        sink=NullSink(),
        arrival=0.0,
    )


def feed(seq: Sequence, pieces: list[str]) -> str:
    emitted = ""
    for i, piece in enumerate(pieces):
        emitted += seq.append(TokenOutput(token_id=i + 1, text=piece)).text
        if seq.finish_reason:
            break
    return emitted


def test_stop_string_across_tokens_never_leaks() -> None:
    seq = make_seq("a", stop=("END",))
    assert feed(seq, ["hello ", "wor", "ld E", "N", "D more"]) == "hello world "
    assert seq.finish_reason == "stop"


def test_holdback_released_when_no_stop() -> None:
    seq = make_seq("a", stop=("XYZ",), max_tokens=4)
    assert feed(seq, ["ab", "cX", "Yd", "e"]) == "abcXYde"
    assert seq.finish_reason == "length"


def test_earliest_stop_wins() -> None:
    seq = make_seq("a", stop=("cd", "b"))
    assert feed(seq, ["abcd"]) == "a"


def test_eos_finishes_with_stop() -> None:
    seq = make_seq("a")
    seq.append(TokenOutput(token_id=5, text="hi"))
    chunk = seq.append(TokenOutput(token_id=0, text="", eos=True))
    assert chunk.finish_reason == "stop"
    assert seq.num_output_tokens == 2


def test_max_tokens_length() -> None:
    seq = make_seq("a", max_tokens=2)
    assert feed(seq, ["a", "b", "c"]) == "ab"
    assert seq.finish_reason == "length"


def test_new_sequences_join_running_batch() -> None:
    sched = Scheduler(max_num_seqs=4, max_batched_tokens=100, queue_capacity=4)
    sched.add([make_seq("a")])
    batch, _ = sched.schedule()
    assert [s.prefill for s in batch.sequences] == [True]
    sched.add([make_seq("b")])
    batch, _ = sched.schedule()  # prefill first: the newcomer's first token comes at once
    assert [(s.seq_id, s.prefill) for s in batch.sequences] == [("b/0", True)]
    sched.add([make_seq("c")])
    batch, _ = sched.schedule()  # then a decode step, which a newcomer may join
    assert [(s.seq_id, s.prefill) for s in batch.sequences] == [
        ("a/0", False),
        ("b/0", False),
        ("c/0", True),
    ]


def test_max_num_seqs_and_token_budget() -> None:
    sched = Scheduler(max_num_seqs=2, max_batched_tokens=10, queue_capacity=10)
    sched.add([make_seq(str(i), prompt_len=4) for i in range(4)])
    _, seqs = sched.schedule()
    assert len(seqs) == 2  # slots
    sched2 = Scheduler(max_num_seqs=8, max_batched_tokens=10, queue_capacity=10)
    sched2.add([make_seq(str(i), prompt_len=4) for i in range(4)])
    _, seqs = sched2.schedule()
    assert len(seqs) == 2  # token budget: 4 + 4 <= 10 < 12
    big = Scheduler(max_num_seqs=8, max_batched_tokens=10, queue_capacity=10)
    big.add([make_seq("huge", prompt_len=50)])
    _, seqs = big.schedule()
    assert len(seqs) == 1  # a prompt over the budget runs alone rather than never


def test_finished_leave_at_once_and_are_released() -> None:
    sched = Scheduler(max_num_seqs=2, max_batched_tokens=100, queue_capacity=2)
    sched.add([make_seq("a", max_tokens=1), make_seq("b", max_tokens=5)])
    _, seqs = sched.schedule()
    outputs = {s.seq_id: TokenOutput(token_id=1, text="x") for s in seqs}
    _, finished = sched.update(seqs, outputs)
    assert [s.seq_id for s in finished] == ["a/0"]
    assert list(sched.running) == ["b/0"]
    batch, _ = sched.schedule()
    assert batch.released == ["a/0"]


def test_backpressure_when_full() -> None:
    sched = Scheduler(max_num_seqs=1, max_batched_tokens=100, queue_capacity=1, retry_after=2)
    sched.add([make_seq("a"), make_seq("b")])
    with pytest.raises(Backpressure) as info:
        sched.add([make_seq("c")])
    assert info.value.retry_after == 2


def test_abort_waiting_and_running() -> None:
    sched = Scheduler(max_num_seqs=1, max_batched_tokens=100, queue_capacity=2)
    a, b = make_seq("a"), make_seq("b")
    sched.add([a, b])
    _, seqs = sched.schedule()
    assert sched.abort("b/0") is b
    assert sched.abort("a/0") is a
    assert a.status is SequenceStatus.ABORTED
    assert not sched.has_work
    assert sched.released == ["a/0"]
    # an abort during a step: its output is ignored
    chunks, finished = sched.update(seqs, {"a/0": TokenOutput(token_id=1, text="x")})
    assert chunks == []
    assert finished == []
    assert sched.abort("nope") is None


def test_an_isolated_sequence_never_shares_a_step() -> None:
    """A suspect of a failed step runs alone in every step of its life, in turns with the
    batch, so a step that fails with it in it holds nothing else."""
    sched = Scheduler(max_num_seqs=8, max_batched_tokens=100, queue_capacity=8)
    a, b = make_seq("a", max_tokens=3), make_seq("b", max_tokens=3)
    suspect = make_seq("s", max_tokens=3)
    suspect.isolated = True
    sched.add([a, suspect, b])
    steps: list[list[str]] = []
    released: list[str] = []
    for _ in range(20):
        if not sched.has_work:
            break
        batch, seqs = sched.schedule()
        released += batch.released
        steps.append([s.seq_id for s in seqs])
        sched.update(seqs, {s.seq_id: TokenOutput(token_id=1, text="x") for s in seqs})
    assert not sched.has_work
    with_suspect = [step for step in steps if "s/0" in step]
    assert with_suspect == [["s/0"]] * 3  # every one of its steps, alone
    assert sum(step.count("a/0") for step in steps) == 3
    assert (released + sched.released).count("s/0") == 1  # its runner state is freed once


def test_an_isolated_sequence_is_aborted_and_failed_like_the_others() -> None:
    sched = Scheduler(max_num_seqs=2, max_batched_tokens=100, queue_capacity=2)
    suspect, other = make_seq("s"), make_seq("o")
    suspect.isolated = True
    sched.add([suspect, other])
    assert not sched.has_room(3)  # it holds a place like any other
    _, seqs = sched.schedule()
    assert seqs == [suspect]
    assert sched.fail_running() == [suspect]  # it was running: its context is lost
    assert sched.abort("o/0") is other
    again = make_seq("t")
    again.isolated = True
    sched.add([again])
    sched.schedule()
    assert sched.abort("t/0") is again
    assert sched.released == ["t/0"]
    assert not sched.has_work
