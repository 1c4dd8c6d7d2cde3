"""Nothing an exporter does reaches the application (core v2, classes 1, 2, 3 and 5).

An exporter's ``export()`` or ``aclose()`` may raise anything at all; the batch is counted
``EXPORT_FAILED``, the lane lives on, the body never sees it, and leaving the tracer neither
hangs nor changes what ``async with`` raises.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import pytest

import spanlane
from _gates import assert_accounting
from spanlane import DropReason, RetryableExportError, RetryPolicy, SpanRecord, open_tracer
from spanlane.exporters import BaseExporter, MemoryExporter
from spanlane.testing import Fault, FaultyExporter

pytestmark = pytest.mark.anyio

#: A bound on any test here that could hang: far above what it needs, and only a safety net.
HANG_GUARD = 30.0


class CustomBase(BaseException):
    """A BaseException of the exporter's own."""


def _foreign_cancellation() -> BaseException:
    """What asyncio raises from awaiting a future that something else cancelled."""
    return asyncio.CancelledError("a future someone else cancelled")


BASE_EXCEPTIONS: list[Callable[[], BaseException]] = [
    KeyboardInterrupt,
    lambda: SystemExit(3),
    GeneratorExit,
    CustomBase,
    _foreign_cancellation,
    lambda: MemoryError("pretend"),
    lambda: RecursionError("deep"),
]
IDS = [
    "KeyboardInterrupt",
    "SystemExit",
    "GeneratorExit",
    "custom",
    "foreign-cancel",
    "Memory",
    "Recursion",
]


class AwaitsACancelledFuture(BaseExporter):
    """The real shape of a foreign cancellation on asyncio: awaiting a future that another
    part of the program cancelled."""

    def __init__(self) -> None:
        self.calls = 0

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.calls += 1
        if self.calls == 1:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future


@pytest.mark.parametrize("error", BASE_EXCEPTIONS, ids=IDS)
async def test_any_exception_from_export_fails_only_its_batch(
    error: Callable[[], BaseException],
) -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.raising(error)])
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(exporter, max_batch_size=1) as tracer:
            with tracer.span("first"):
                pass
            report = await tracer.flush()
            assert report.completed
            # The lane lives: later records are exported.
            with tracer.span("second"):
                pass
            await anyio.lowlevel.checkpoint()
            await tracer.flush()
            assert [r.name for r in inner.spans] == ["second"]
    lane = tracer.stats().lanes[0]
    assert lane.dropped == {DropReason.EXPORT_FAILED: 1}
    assert lane.exported == 1
    assert_accounting(tracer)


@pytest.mark.parametrize("error", BASE_EXCEPTIONS, ids=IDS)
async def test_an_exporter_raising_never_cancels_the_body_or_changes_its_exception(
    error: Callable[[], BaseException],
) -> None:
    exporter = FaultyExporter(MemoryExporter(), lambda call, batch: Fault.raising(error))

    class BodyError(Exception):
        pass

    body = BodyError("the body's own")
    # The whole program is the block: its own exception must come out of it unchanged.
    with anyio.fail_after(HANG_GUARD), pytest.raises(BodyError) as caught:  # noqa: PT012
        async with open_tracer(exporter, max_batch_size=1, flush_interval=0.001) as tracer:
            for _ in range(5):
                with tracer.span("x"):
                    pass
                # Awaits in the body: a cancellation leaking from the worker would land here.
                await tracer.flush()
                await anyio.lowlevel.checkpoint()
            raise body
    assert caught.value is body
    assert tracer.stats().lanes[0].dropped == {DropReason.EXPORT_FAILED: 5}


@pytest.mark.parametrize("backend_only", ["asyncio"])
async def test_a_real_foreign_cancellation_on_asyncio_fails_only_its_batch(
    anyio_backend: str, backend_only: str
) -> None:
    if anyio_backend != backend_only:
        pytest.skip("asyncio futures exist on asyncio only")
    exporter = AwaitsACancelledFuture()
    async with open_tracer(exporter, max_batch_size=1) as tracer:
        with tracer.span("lost"):
            pass
        await tracer.flush()
        with tracer.span("kept"):
            pass
        await tracer.flush()
        await anyio.lowlevel.checkpoint()
    lane = tracer.stats().lanes[0]
    assert lane.dropped == {DropReason.EXPORT_FAILED: 1}
    assert lane.exported == 1


class ClosesBadly(BaseExporter):
    """An aclose() that raises, or cancels a task and awaits it, or swallows cancellation."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.exported: list[str] = []
        self.closed = False

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.exported.extend(record.name for record in batch)

    async def aclose(self) -> None:
        self.closed = True
        if self.how == "keyboard":
            raise KeyboardInterrupt
        if self.how == "system-exit":
            raise SystemExit(1)
        if self.how == "custom":
            raise CustomBase()
        if self.how == "cancel-and-await":
            # The asyncio idiom: task.cancel(); await task. On asyncio the CancelledError of the
            # inner task comes out of the await; here it is simulated for both backends.
            raise anyio.get_cancelled_exc_class()()
        if self.how == "swallows":
            # Swallows the grace's cancellation once, then sleeps again: cancelled again.
            try:
                await anyio.sleep(math.inf)
            except BaseException:
                pass
            await anyio.sleep(math.inf)


@pytest.mark.parametrize(
    "how", ["keyboard", "system-exit", "custom", "cancel-and-await", "swallows"]
)
async def test_aclose_raising_or_swallowing_anything_is_bounded_and_never_escapes(
    how: str,
) -> None:
    exporter = ClosesBadly(how)
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(exporter, drain_timeout=1.0) as tracer:
            with tracer.span("x"):
                pass
    assert exporter.closed
    assert exporter.exported == ["x"]
    assert tracer.stats().lanes[0].exported == 1
    assert tracer.closed


async def test_aclose_of_the_asyncio_idiom_cancel_then_await_a_task(anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("asyncio tasks exist on asyncio only")

    class OwnsATask(BaseExporter):
        async def export(self, batch: Sequence[SpanRecord]) -> None:
            if not hasattr(self, "task"):
                self.task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))

        async def aclose(self) -> None:
            self.task.cancel()
            await self.task  # raises the task's CancelledError into aclose()

    exporter = OwnsATask()
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(exporter) as tracer:
            with tracer.span("x"):
                pass
    assert exporter.task.cancelled()
    assert tracer.stats().lanes[0].exported == 1


class FeedsItself(BaseExporter):
    """Creates spans while exporting and never awaits: a loop the worker must not spin in."""

    def __init__(self, tracer_box: list[spanlane.Tracer]) -> None:
        self.tracer_box = tracer_box
        self.exports = 0

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.exports += 1
        tracer = self.tracer_box[0]
        for _ in range(len(batch)):
            with tracer.span("made by the exporter"):
                pass


async def test_spans_started_inside_an_exporter_do_not_record() -> None:
    box: list[spanlane.Tracer] = []
    exporter = FeedsItself(box)
    async with open_tracer(exporter, max_batch_size=1) as tracer:
        box.append(tracer)
        with tracer.span("from the app"):
            pass
        await tracer.flush()
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
    assert exporter.exports == 1
    assert tracer.stats().spans_started == 1


class NeverAwaits(BaseExporter):
    """Returns without ever yielding to the loop."""

    def __init__(self) -> None:
        self.exports = 0

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.exports += 1


async def test_the_worker_yields_between_batches_so_other_tasks_run() -> None:
    """A steady supply of records and an exporter that never awaits cannot freeze the loop:
    a task that only checkpoints keeps making progress while the lane exports."""
    exporter = NeverAwaits()
    ticks = 0
    async with open_tracer(exporter, max_batch_size=1, buffer_size=10_000) as tracer:
        for _ in range(2_000):
            with tracer.span("x"):
                pass

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await tracer.flush()
            tg.cancel_scope.cancel()
    assert exporter.exports == 2_000
    # The worker checkpointed after each batch, and the ticker ran in between.
    assert ticks >= 100


class BrokenRetryable(RetryableExportError):
    """A subclass that skipped ``super().__init__``."""

    def __init__(self) -> None:
        pass


class LoudError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def _retryable_with(value: object) -> RetryableExportError:
    error = RetryableExportError("transient")
    error.retry_after = value  # type: ignore[assignment]
    return error


class LoudRetryable(RetryableExportError):
    def __str__(self) -> str:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "error",
    [
        BrokenRetryable,
        lambda: _retryable_with(math.nan),
        lambda: _retryable_with("soon"),
        lambda: _retryable_with(-5),
        lambda: _retryable_with(math.inf),
        lambda: _retryable_with(10**400),
        LoudError,
        LoudRetryable,
    ],
    ids=["no-init", "nan", "str", "negative", "inf", "huge-int", "loud-str", "loud-retryable"],
)
async def test_a_buggy_error_never_kills_the_lane(error: Callable[[], BaseException]) -> None:
    inner = MemoryExporter()
    calls: list[int] = []

    def script(call: int, batch: Sequence[SpanRecord]) -> Fault | None:
        calls.append(call)
        return Fault.raising(error) if call == 0 else None

    exporter = FaultyExporter(inner, script)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(exporter, max_batch_size=1, retry=policy) as tracer:
            with tracer.span("first"):
                pass
            await tracer.flush()
            with tracer.span("second"):
                pass
            await tracer.flush()
            # Still open, still exporting: nothing counted CLOSED while the tracer is open.
            assert DropReason.CLOSED not in tracer.stats().lanes[0].dropped
    names = [record.name for record in inner.spans]
    assert "second" in names
    assert_accounting(tracer)


async def test_exporter_failures_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    exporter = FaultyExporter(MemoryExporter(), lambda call, batch: Fault.raising(LoudError))
    with caplog.at_level(logging.WARNING, logger="spanlane"):
        async with open_tracer(exporter, max_batch_size=1) as tracer:
            for _ in range(50):
                with tracer.span("x"):
                    pass
                await tracer.flush()
    warnings = [r for r in caplog.records if "export_failed" in r.getMessage()]
    assert len(warnings) == 1
    assert tracer.stats().lanes[0].dropped == {DropReason.EXPORT_FAILED: 50}


async def test_one_failing_lane_does_not_touch_the_others() -> None:
    good = MemoryExporter(name="good")
    bad = FaultyExporter(MemoryExporter(name="bad"), lambda c, b: Fault.raising(KeyboardInterrupt))
    async with open_tracer(good, bad, max_batch_size=1) as tracer:
        for _ in range(3):
            with tracer.span("x"):
                pass
    good_stats, bad_stats = tracer.stats().lanes
    assert good_stats.exported == 3
    assert bad_stats.dropped == {DropReason.EXPORT_FAILED: 3}
    assert len(good.spans) == 3
