"""``Deadline``: a timeout only when its own timer cut the wait; any other cancel stays one."""

from __future__ import annotations

import asyncio

import pytest

from inference_runtime.remote.deadline import Deadline


async def test_a_wait_past_the_deadline_is_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), Deadline(loop.time() + 0.05):
        await asyncio.sleep(5)
    assert 0.04 <= loop.time() - started < 2
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_wait_within_the_deadline_is_untouched_and_the_timer_is_gone() -> None:
    loop = asyncio.get_running_loop()
    with Deadline(loop.time() + 0.05) as deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.08)  # past the old deadline: nothing fires into this task
    assert not deadline.expired


async def test_moving_the_deadline_later_lets_a_longer_wait_through() -> None:
    loop = asyncio.get_running_loop()
    with Deadline(loop.time() + 0.03) as deadline:
        deadline.move(loop.time() + 1.0)
        await asyncio.sleep(0.08)
    assert not deadline.expired

    async def reads() -> None:
        with Deadline(loop.time() + 1.0) as deadline:
            await asyncio.sleep(0)
            deadline.move(loop.time() + 0.03)  # as each read of a stream does
            await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await reads()


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()

    async def call() -> None:
        with Deadline(loop.time() + 5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_outside_after_the_deadline_fired_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()
    deadlines: list[Deadline] = []

    async def call() -> None:
        with Deadline(loop.time() + 5) as deadline:
            deadlines.append(deadline)
            await asyncio.sleep(5)

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0)
    deadlines[0]._expire()  # the timer fires...
    task.cancel()  # ... and the client goes away in the same turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines[0].expired


async def test_a_deadline_needs_a_task() -> None:
    loop = asyncio.get_running_loop()
    raised: asyncio.Future[BaseException] = loop.create_future()

    def in_a_callback() -> None:  # the loop runs, but no task does
        try:
            Deadline(loop.time() + 1)
        except RuntimeError as error:
            raised.set_result(error)

    loop.call_soon(in_a_callback)
    assert "needs a task" in str(await raised)
