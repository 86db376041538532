"""tests/waiting.py on a fake clock: a wait lasts as long as its work moves, never a set time."""

import pytest

from tests import waiting

pytestmark = pytest.mark.once


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(waiting.time, "monotonic", fake.monotonic)
    return fake


def test_it_returns_what_the_condition_returned_as_soon_as_it_holds(clock):
    calls = []

    def condition():
        calls.append(clock.now)
        return "ready" if len(calls) == 3 else None

    assert waiting.wait_for(condition, what="x", sleep=clock.sleep) == "ready"
    assert clock.now == pytest.approx(2 * waiting.POLL_SECONDS)


def test_it_keeps_waiting_past_the_stall_period_while_progress_moves(clock):
    # Work that needs 50 stall periods, moving all the while (a loaded machine).
    def condition():
        return clock.now >= 50 * 10

    waiting.wait_for(
        condition, what="slow work", progress=lambda: int(clock.now), stall=10, sleep=clock.sleep
    )
    assert clock.now >= 500


def test_it_fails_once_nothing_moved_for_the_stall_period_saying_what_it_saw(clock):
    with pytest.raises(waiting.WaitTimeout) as failed:
        waiting.wait_for(
            lambda: False,
            what="attempt 2 to resume",
            progress=lambda: min(clock.now, 30) // 1,  # moves for 30 s, then stops
            describe=lambda: "step 7, attempt 1",
            stall=10,
            sleep=clock.sleep,
        )
    assert 40 <= clock.now <= 42
    message = str(failed.value)
    assert "attempt 2 to resume" in message and "nothing moved for 10 s" in message
    assert "last seen: step 7, attempt 1" in message


def test_work_that_moves_forever_without_getting_there_fails_at_the_overall_limit(clock):
    with pytest.raises(waiting.WaitTimeout, match="although it kept moving"):
        waiting.wait_for(
            lambda: False,
            what="never",
            progress=lambda: clock.now,
            stall=10,
            limit=100,
            sleep=clock.sleep,
        )
    assert 100 <= clock.now <= 101


def test_without_a_progress_measure_the_wait_is_one_stall_period(clock):
    with pytest.raises(waiting.WaitTimeout, match="nothing moved for 5 s"):
        waiting.wait_for(lambda: False, what="an event", stall=5, sleep=clock.sleep)
    assert 5 <= clock.now <= 5.2
