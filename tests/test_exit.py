"""Leaving the tracer: bounded whatever is open or queued, and the trio edge cases (core v2,
classes 9 and 10).

No timing assertions: each test is guarded by a generous ``fail_after`` (a hang fails it), and
the accounting says what happened. The exit time itself is measured in ``benchmarks/exit.py``.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

import spanlane
from spanlane import DropReason, SpanRecord, Tracer, open_tracer
from spanlane._runtime import absorb_loop_cancellation
from spanlane.exporters import BaseExporter, MemoryExporter
from spanlane.testing import Fault, FaultyExporter

HANG_GUARD = 60.0


@pytest.mark.anyio
async def test_exit_with_a_hung_exporter_and_30k_open_spans_counts_every_span() -> None:
    hung = FaultyExporter(MemoryExporter(), lambda call, batch: Fault.hang())
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(
            hung, drain_timeout=0.5, buffer_size=64, max_batch_size=64
        ) as tracer:
            with tracer.span("first"):
                pass
            open_spans = [tracer.start_span(f"open {number}") for number in range(30_000)]
    stats = tracer.stats()
    assert stats.spans_started == stats.spans_ended == 30_001
    lane = stats.lanes[0]
    assert lane.offered == 30_001
    assert lane.queued == lane.in_flight == 0
    assert lane.balanced
    assert lane.dropped.get(DropReason.SHUTDOWN_TIMEOUT, 0) >= 30_001 - 64
    # Every open span was claimed: ending one now is a no-op and counts nothing more.
    open_spans[0].end()
    assert tracer.stats().spans_ended == 30_001
    assert not open_spans[-1].is_recording


@pytest.mark.anyio
async def test_never_ended_spans_are_not_kept_alive_by_the_tracer() -> None:
    async with open_tracer(MemoryExporter()) as tracer:
        for number in range(1_000):
            tracer.start_span(f"dropped {number}")
        gc.collect()
        assert len(tracer.open_spans) == 0
    stats = tracer.stats()
    assert stats.spans_started == stats.spans_ended == 1_000


def _backends() -> list[str]:
    return ["asyncio", "trio"]


@pytest.mark.parametrize("backend", _backends())
def test_a_tracer_never_exited_is_drained_when_the_loop_ends(backend: str) -> None:
    exporter = MemoryExporter()
    holder: list[Tracer] = []

    async def main() -> None:
        tracer = open_tracer(exporter, drain_timeout=2.0)
        holder.append(tracer)
        await tracer.__aenter__()
        with tracer.span("done"):
            pass
        holder.append(tracer.start_span("left open"))  # type: ignore[arg-type]

    anyio.run(main, backend=backend)  # neither TrioInternalError nor a hang
    tracer = holder[0]
    stats = tracer.stats()
    assert tracer.closed
    lane = stats.lanes[0]
    assert lane.balanced
    assert lane.queued == lane.in_flight == 0
    assert lane.offered == 2
    assert lane.exported + lane.dropped_total == 2
    assert exporter.closed


def test_a_scope_cancellation_is_never_taken_for_the_loops_teardown() -> None:
    """asyncio only: the native ``Task.cancel()`` that a worker absorbs at the loop's end has no
    trio counterpart. anyio cancels a scope with ``Task.cancel()`` too; a worker that absorbed
    that would have it delivered again at every await, and spin instead of finishing."""

    async def main() -> bool:
        with anyio.CancelScope() as scope:
            scope.cancel()
            try:
                await anyio.sleep(1)
            except asyncio.CancelledError:
                return absorb_loop_cancellation()
        raise AssertionError("the cancelled scope did not cancel")

    assert anyio.run(main, backend="asyncio") is False


@pytest.mark.parametrize("backend", _backends())
def test_a_tracer_garbage_collected_open_ends_the_run_cleanly(backend: str) -> None:
    exporter = MemoryExporter()

    async def main() -> None:
        tracer = open_tracer(exporter, drain_timeout=2.0)
        await tracer.__aenter__()
        with tracer.span("done"):
            pass
        del tracer
        gc.collect()
        await anyio.lowlevel.checkpoint()

    anyio.run(main, backend=backend)
    assert [record.name for record in exporter.spans] == ["done"]
    assert exporter.closed


class InterruptsWhileDraining(BaseExporter):
    """Hangs in export; when the drain starts, sends the process a Ctrl-C (SIGINT)."""

    def __init__(self) -> None:
        self.hanging = False
        self.closing = False

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.hanging = True
        await anyio.sleep_forever()


@pytest.mark.parametrize("backend", _backends())
def test_ctrl_c_during_the_drain_cuts_it_short_and_reaches_the_application(
    backend: str,
) -> None:
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signals are delivered to the main thread only")
    exporter = InterruptsWhileDraining()
    holder: list[Tracer] = []

    async def main() -> None:
        async with open_tracer(exporter, drain_timeout=HANG_GUARD, max_batch_size=1) as tracer:
            holder.append(tracer)
            with tracer.span("stuck"):
                pass
            with tracer.span("queued"):
                pass
            while not exporter.hanging:
                await anyio.lowlevel.checkpoint()
            # The first Ctrl-C arrives during the drain, after the body is done. It is raised
            # on the loop's thread, as a terminal's Ctrl-C is (signal.raise_signal in another
            # thread would signal that thread, and the loop would notice only at its next
            # timer).
            token = anyio.lowlevel.current_token()
            threading.Timer(
                0.2,
                token.backend_class.run_sync_soon,
                (signal.raise_signal, (signal.SIGINT,), token.native_token),
            ).start()

    with pytest.raises(KeyboardInterrupt):
        anyio.run(main, backend=backend)
    tracer = holder[0]
    lane = tracer.stats().lanes[0]
    # Cut short, not hung for HANG_GUARD seconds: what the lane held is counted.
    assert lane.queued == lane.in_flight == 0
    assert lane.offered == lane.exported + lane.dropped_total == 2
    assert lane.dropped.get(DropReason.SHUTDOWN_TIMEOUT) == 2


@pytest.mark.parametrize("backend", _backends())
def test_ctrl_c_in_the_body_still_reaches_the_application_and_drains(backend: str) -> None:
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signals are delivered to the main thread only")
    exporter = MemoryExporter()
    holder: list[Tracer] = []

    async def main() -> None:
        async with open_tracer(exporter) as tracer:
            holder.append(tracer)
            with tracer.span("before"):
                pass
            signal.raise_signal(signal.SIGINT)
            for _ in range(1_000):  # a Ctrl-C arrives at the next checkpoint at the latest
                await anyio.sleep(0.001)

    with pytest.raises(KeyboardInterrupt):
        anyio.run(main, backend=backend)
    assert [record.name for record in exporter.spans] == ["before"]
    assert holder[0].closed


@pytest.mark.anyio
async def test_exit_is_bounded_when_aclose_and_export_both_hang() -> None:
    exporter = FaultyExporter(
        MemoryExporter(), lambda call, batch: Fault.hang(), hang_on_close=True
    )
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(exporter, drain_timeout=0.3) as tracer:
            with tracer.span("x"):
                pass
    assert tracer.stats().lanes[0].dropped == {DropReason.SHUTDOWN_TIMEOUT: 1}


@pytest.mark.anyio
async def test_using_a_tracer_with_a_plain_with_says_to_use_async_with() -> None:
    tracer = open_tracer(MemoryExporter())
    with pytest.raises(TypeError, match="async with"), tracer:
        pass  # pragma: no cover


@pytest.mark.anyio
async def test_a_span_on_a_tracer_never_entered_is_non_recording() -> None:
    tracer = open_tracer(MemoryExporter())
    span = tracer.start_span("too early")
    assert not span.is_recording
    assert span is spanlane.current_span() or not span.is_recording


class IgnoresCancellation(BaseExporter):
    """An export that swallows every cancellation until the test lets it go."""

    max_concurrent_exports = 4

    def __init__(self) -> None:
        self.released = anyio.Event()

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        while not self.released.is_set():
            try:
                await self.released.wait()
            except BaseException:  # the misbehaviour under test
                pass


@pytest.mark.anyio
async def test_exports_that_ignore_cancellation_leave_the_books_closed_at_exit() -> None:
    """The exit cannot stop such exports (nothing in Python can), but it counts what they hold:
    after the exit nothing is queued or in flight, whatever the tasks still do."""
    exporter = IgnoresCancellation()
    with anyio.fail_after(HANG_GUARD):
        async with open_tracer(
            spanlane.lane(exporter, max_batch_size=2, flush_interval=0.01),
            drain_timeout=0.2,
        ) as tracer:
            for number in range(20):
                with tracer.span(f"span {number}"):
                    pass
            await anyio.sleep(0.05)
        lane = tracer.stats().lanes[0]
        assert lane.queued == lane.in_flight == 0
        assert lane.dropped == {DropReason.SHUTDOWN_TIMEOUT: 20}
        assert lane.balanced
        exporter.released.set()  # let the stuck tasks end, so that the test's loop can
