from __future__ import annotations

import pytest

from myspinbot.errors import Cancelled
from tests.capabilities.conftest import ContextFactory


def test_progress_reports_fraction_and_message(make_context: ContextFactory) -> None:
    ctx, recorder = make_context()

    ctx.progress(0.25, "a quarter")
    ctx.progress(0.5)

    assert recorder.reports == [(0.25, "a quarter"), (0.5, None)]


def test_progress_clamps_to_zero_and_one(make_context: ContextFactory) -> None:
    ctx, recorder = make_context()

    ctx.progress(-0.5)
    ctx.progress(1.7, "over")

    assert recorder.reports == [(0.0, None), (1.0, "over")]


def test_progress_raises_cancelled_after_reporting(make_context: ContextFactory) -> None:
    ctx, recorder = make_context(cancel_after=2)

    ctx.progress(0.1)
    with pytest.raises(Cancelled, match=r"^job job-1 was cancelled \(node node-1\)$"):
        ctx.progress(0.2)

    assert recorder.reports == [(0.1, None), (0.2, None)]


def test_cancelled_reads_the_callback(make_context: ContextFactory) -> None:
    ctx, _ = make_context(cancel_after=0)

    assert ctx.cancelled() is True
