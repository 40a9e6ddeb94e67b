from __future__ import annotations

import time

import pytest

from apps.capabilities.services.debug_echo import handler as echo
from apps.capabilities.services.debug_fail import handler as fail
from apps.capabilities.services.debug_noop import handler as noop
from apps.capabilities.services.debug_sleep import handler as sleep
from myspinbot.errors import Cancelled, PermanentError, TransientError
from tests.capabilities.conftest import ContextFactory


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(sleep.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(sleep.time, "sleep", fake.sleep)
    return fake


def test_noop_returns_empty_output(make_context: ContextFactory) -> None:
    ctx, recorder = make_context({"anything": 1})

    assert noop.run(ctx) == {}
    assert recorder.reports == []


def test_echo_returns_params_and_inputs(make_context: ContextFactory) -> None:
    ctx, _ = make_context({"text": "hi"}, inputs={"script": {"words": 12}})

    assert echo.run(ctx) == {"params": {"text": "hi"}, "inputs": {"script": {"words": 12}}}


def test_sleep_reports_progress_every_slice(make_context: ContextFactory, clock: FakeClock) -> None:
    ctx, recorder = make_context({"seconds": 0.5})

    assert sleep.run(ctx) == {"slept": 0.5}

    assert clock.sleeps == pytest.approx([0.2, 0.2, 0.1])
    assert [fraction for fraction, _ in recorder.reports] == pytest.approx([0.4, 0.8, 1.0])
    assert [message for _, message in recorder.reports] == [
        "slept 0.2 of 0.5 s",
        "slept 0.4 of 0.5 s",
        "slept 0.5 of 0.5 s",
    ]


def test_sleep_defaults_to_one_second(make_context: ContextFactory, clock: FakeClock) -> None:
    ctx, recorder = make_context()

    assert sleep.run(ctx) == {"slept": 1}
    assert len(clock.sleeps) == 5
    assert recorder.reports[-1][0] == pytest.approx(1.0)


def test_sleep_zero_seconds_reports_done(make_context: ContextFactory, clock: FakeClock) -> None:
    ctx, recorder = make_context({"seconds": 0})

    assert sleep.run(ctx) == {"slept": 0}
    assert clock.sleeps == []
    assert recorder.reports == [(1.0, "slept 0 s")]


def test_sleep_stops_at_the_first_slice_after_cancel(
    make_context: ContextFactory, clock: FakeClock
) -> None:
    ctx, recorder = make_context({"seconds": 3600}, cancel_after=2)

    with pytest.raises(Cancelled):
        sleep.run(ctx)

    assert clock.sleeps == [0.2, 0.2]
    assert len(recorder.reports) == 2


def test_sleep_really_sleeps(make_context: ContextFactory) -> None:
    ctx, recorder = make_context({"seconds": 0.3})
    started = time.monotonic()

    assert sleep.run(ctx) == {"slept": 0.3}

    assert time.monotonic() - started >= 0.3
    assert len(recorder.reports) == 2
    assert recorder.reports[-1][0] == 1.0


def test_fail_fails_transiently_then_succeeds(make_context: ContextFactory) -> None:
    first, _ = make_context({"times": 2}, attempt=1)
    second, _ = make_context({"times": 2}, attempt=2)
    third, _ = make_context({"times": 2}, attempt=3)

    for ctx in (first, second):
        with pytest.raises(TransientError) as caught:
            fail.run(ctx)
        assert (caught.value.code, caught.value.retryable) == ("debug_transient", True)
        assert caught.value.details == {"attempt": ctx.attempt, "times": 2}
    assert fail.run(third) == {"attempt": 3}


def test_fail_defaults_to_failing_once(make_context: ContextFactory) -> None:
    first, _ = make_context(attempt=1)
    second, _ = make_context(attempt=2)

    with pytest.raises(TransientError):
        fail.run(first)
    assert fail.run(second) == {"attempt": 2}


def test_fail_times_zero_succeeds_at_once(make_context: ContextFactory) -> None:
    ctx, _ = make_context({"times": 0}, attempt=1)

    assert fail.run(ctx) == {"attempt": 1}


def test_fail_permanent_uses_default_code(make_context: ContextFactory) -> None:
    ctx, _ = make_context({"permanent": True, "times": 0}, attempt=1)

    with pytest.raises(PermanentError) as caught:
        fail.run(ctx)

    assert (caught.value.code, caught.value.retryable) == ("debug_permanent", False)
    assert caught.value.message == "debug.fail failed permanently on attempt 1"


def test_fail_permanent_uses_given_code(make_context: ContextFactory) -> None:
    ctx, _ = make_context({"permanent": True, "code": "bad_input"}, attempt=2)

    with pytest.raises(PermanentError) as caught:
        fail.run(ctx)

    assert caught.value.code == "bad_input"
