"""spanlane.testing: capture_spans and the scripted FaultyExporter."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from spanlane import (
    ExportError,
    RetryableExportError,
    RetryPolicy,
    SpanKind,
    SpanRecord,
    current_tracer,
    open_tracer,
)
from spanlane.exporters import MemoryExporter
from spanlane.testing import Fault, FaultKind, FaultyExporter, capture_spans

pytestmark = pytest.mark.anyio

BATCH = (SpanRecord("r", 1, 2, None, SpanKind.INTERNAL, 0, 1),)


# --- capture_spans -------------------------------------------------------------------------------


async def test_capture_spans_exports_each_span_at_once_and_is_the_current_tracer() -> None:
    async with capture_spans() as captured:
        assert current_tracer() is captured.tracer
        with captured.tracer.span("a"):
            pass
        assert [record.name for record in await captured.flush()] == ["a"]
        assert [record.name for record in captured.spans] == ["a"]
        with captured.tracer.span("b"):
            pass
    assert [record.name for record in captured.exporter.spans] == ["a", "b"]
    assert captured.exporter.closed
    assert current_tracer() is None


async def test_capture_spans_passes_tracer_options_and_wants_starts() -> None:
    async with capture_spans(
        wants_starts=True, service_name="under-test", max_batch_size=10, flush_interval=3600
    ) as captured:
        with captured.tracer.span("a"):
            pass
        await anyio.wait_all_tasks_blocked()
        assert captured.exporter.records == []  # max_batch_size=10 overrides the default of 1
        await captured.flush()
        start, end = captured.exporter.records
    assert start.is_start
    assert not end.is_start
    assert end.resource.service_name == "under-test"


# --- FaultyExporter ------------------------------------------------------------------------------


async def test_faulty_exporter_applies_a_sequence_script_then_delivers_normally() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.transient(retry_after=0.5), Fault.permanent(), None])
    with pytest.raises(RetryableExportError) as transient:
        await exporter.export(BATCH)
    assert transient.value.retry_after == 0.5
    with pytest.raises(ExportError) as permanent:
        await exporter.export(BATCH)
    assert not isinstance(permanent.value, RetryableExportError)
    assert await exporter.export(BATCH) is None  # None in the script: deliver
    assert await exporter.export(BATCH) is None  # the script ran out: deliver
    assert inner.records == [*BATCH, *BATCH]
    assert [fault for _, fault in exporter.calls] == [
        Fault.transient(retry_after=0.5),
        Fault.permanent(),
        None,
        None,
    ]
    assert [size for size, _ in exporter.calls] == [1, 1, 1, 1]


async def test_faulty_exporter_calls_a_callable_script_with_index_and_batch() -> None:
    seen: list[tuple[int, int]] = []

    def script(index: int, batch: Sequence[SpanRecord]) -> Fault | None:
        seen.append((index, len(batch)))
        return Fault.permanent() if index % 2 else None

    inner = MemoryExporter()
    exporter = FaultyExporter(inner, script)
    await exporter.export(BATCH)
    with pytest.raises(ExportError):
        await exporter.export(BATCH * 2)
    await exporter.export(BATCH * 3)
    assert seen == [(0, 1), (1, 2), (2, 3)]
    assert len(inner.records) == 4


async def test_faulty_exporter_delay_delivers_after_the_delay() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.delay(0.001)])
    await exporter.export(BATCH)
    assert inner.records == list(BATCH)


async def test_faulty_exporter_hang_never_returns_until_cancelled() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.hang()])
    async with anyio.create_task_group() as tg:
        tg.start_soon(exporter.export, BATCH)
        await anyio.wait_all_tasks_blocked()
        assert len(exporter.calls) == 1
        tg.cancel_scope.cancel()
    assert tg.cancel_scope.cancelled_caught
    assert inner.records == []


async def test_faulty_exporter_deliver_then_fail_delivers_and_raises_retryable() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.deliver_then_fail(retry_after=2.0)])
    with pytest.raises(RetryableExportError) as excinfo:
        await exporter.export(BATCH)
    assert excinfo.value.retry_after == 2.0
    assert inner.records == list(BATCH)


async def test_deliver_then_fail_makes_a_lane_deliver_the_batch_twice() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.deliver_then_fail()])
    retry = RetryPolicy(initial_backoff=0.001, max_backoff=0.001)
    async with open_tracer(exporter, retry=retry) as tracer:
        with tracer.span("dup"):
            pass
    assert [record.name for record in inner.records] == ["dup", "dup"]
    assert tracer.stats().lanes[0].exported == 1


async def test_faulty_exporter_fail_on_close_closes_the_inner_exporter_then_raises() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, fail_on_close=True)
    with pytest.raises(ExportError, match="aclose"):
        await exporter.aclose()
    assert inner.closed


async def test_faulty_exporter_hang_on_close_closes_the_inner_exporter_then_hangs() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, hang_on_close=True)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(exporter.aclose)
            await anyio.wait_all_tasks_blocked()
            assert inner.closed
            scope.cancel()
    assert scope.cancelled_caught


async def test_faulty_exporter_forwards_name_and_wants_starts() -> None:
    exporter = FaultyExporter(MemoryExporter(wants_starts=True, name="inner"))
    assert exporter.name == "Faulty(inner)"
    assert exporter.wants_starts
    assert not FaultyExporter().wants_starts
    assert isinstance(FaultyExporter().inner, MemoryExporter)
    assert "Faulty(MemoryExporter)" in repr(FaultyExporter())


async def test_fault_constructors() -> None:
    assert Fault.ok() == Fault(FaultKind.OK)
    assert Fault.transient(1.0) == Fault(FaultKind.TRANSIENT, retry_after=1.0)
    assert Fault.permanent() == Fault(FaultKind.PERMANENT)
    assert Fault.delay(2.0) == Fault(FaultKind.DELAY, seconds=2.0)
    assert Fault.hang() == Fault(FaultKind.HANG)
    assert Fault.deliver_then_fail() == Fault(FaultKind.DELIVER_THEN_FAIL)


async def test_ok_fault_delivers() -> None:
    inner = MemoryExporter()
    await FaultyExporter(inner, [Fault.ok()]).export(BATCH)
    assert inner.records == list(BATCH)
