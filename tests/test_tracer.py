"""The tracer: argument checks, the lifecycle (drain or cancel), the current tracer, threads."""

from __future__ import annotations

import gc
import logging
from typing import Any

import anyio
import anyio.to_thread
import pytest

import spanlane
import spanlane._lane
from _gates import GatedExporter, assert_accounting, end_spans, names
from spanlane import DropReason, Span, SpanRecord, Tracer, current_tracer, open_tracer
from spanlane.exporters import MemoryExporter
from spanlane.testing import Fault, FaultyExporter

pytestmark = pytest.mark.anyio

NEVER = 3600.0
UNFINISHED = "spanlane.unfinished"


def _by_name(exporter: MemoryExporter) -> dict[str, SpanRecord]:
    return {record.name: record for record in exporter.spans}


# --- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        pytest.param({"buffer_size": 0}, "buffer_size", id="buffer_size-zero"),
        pytest.param({"buffer_size": -1}, "buffer_size", id="buffer_size-negative"),
        pytest.param({"buffer_size": 2.5}, "buffer_size", id="buffer_size-float"),
        pytest.param({"buffer_size": True}, "buffer_size", id="buffer_size-bool"),
        pytest.param({"max_batch_size": 0}, "max_batch_size", id="max_batch_size-zero"),
        pytest.param(
            {"buffer_size": 4, "max_batch_size": 5}, "max_batch_size", id="batch-over-buffer"
        ),
        pytest.param({"flush_interval": 0}, "flush_interval", id="flush_interval-zero"),
        pytest.param({"flush_interval": -1.0}, "flush_interval", id="flush_interval-negative"),
        pytest.param({"flush_interval": float("inf")}, "flush_interval", id="flush_interval-inf"),
        pytest.param({"flush_interval": float("nan")}, "flush_interval", id="flush_interval-nan"),
        pytest.param({"wait_timeout": 0}, "wait_timeout", id="wait_timeout-zero"),
        pytest.param({"drain_timeout": -0.5}, "drain_timeout", id="drain_timeout-negative"),
        pytest.param({"export_timeout": 0}, "export_timeout", id="export_timeout-zero"),
        pytest.param({"export_timeout": "1"}, "export_timeout", id="export_timeout-str"),
        pytest.param({"on_full": "block"}, "on_full", id="on_full-unknown"),
    ],
)
async def test_bad_argument_raises_value_error_naming_the_parameter(
    options: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ValueError, match=parameter):
        open_tracer(MemoryExporter(), **options)


async def test_no_exporter_raises_value_error() -> None:
    with pytest.raises(ValueError, match="exporter"):
        open_tracer()


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        pytest.param({"retry": 3}, "retry", id="retry"),
        pytest.param({"limits": {"max_attributes": 1}}, "limits", id="limits"),
    ],
)
async def test_wrong_type_raises_type_error_naming_the_parameter(
    options: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(TypeError, match=parameter):
        open_tracer(MemoryExporter(), **options)


async def test_exporter_without_export_method_raises_type_error() -> None:
    with pytest.raises(TypeError, match="export"):
        open_tracer(object())


# --- leaving the tracer --------------------------------------------------------------------------


async def test_normal_exit_ends_open_spans_as_unfinished_and_drains_the_queue() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, max_batch_size=100, flush_interval=NEVER) as tracer:
        end_spans(tracer, "done0", "done1")
        tracer.start_span("left-open")
        await anyio.wait_all_tasks_blocked()
        assert exporter.records == []
    spans = _by_name(exporter)
    assert set(spans) == {"done0", "done1", "left-open"}
    assert spans["left-open"].attributes[UNFINISHED] is True
    assert spans["left-open"].end_time_ns is not None
    assert UNFINISHED not in spans["done0"].attributes
    assert exporter.closed
    stats = tracer.stats()
    assert (stats.spans_started, stats.spans_ended) == (3, 3)
    assert stats.lanes[0].exported == 3
    assert stats.dropped == {}
    assert_accounting(tracer)


async def test_exit_by_exception_ends_open_spans_drains_and_reraises_the_same_object() -> None:
    exporter = MemoryExporter()
    error = ValueError("the body failed")
    tracer = open_tracer(exporter, max_batch_size=100, flush_interval=NEVER)

    async def body() -> None:
        async with tracer:
            end_spans(tracer, "done")
            tracer.start_span("left-open")
            raise error

    with pytest.raises(ValueError, match="the body failed") as excinfo:
        await body()
    assert excinfo.value is error
    spans = _by_name(exporter)
    assert set(spans) == {"done", "left-open"}
    assert spans["left-open"].attributes[UNFINISHED] is True
    assert exporter.closed
    assert tracer.stats().dropped == {}


async def test_body_exception_is_not_wrapped_even_when_the_exporter_hangs() -> None:
    error = KeyError("k")
    exporter = FaultyExporter(script=lambda index, batch: Fault.hang())
    tracer = open_tracer(exporter, max_batch_size=1, export_timeout=NEVER, drain_timeout=0.01)

    async def body() -> None:
        async with tracer:
            end_spans(tracer, "s0", "s1")
            await anyio.wait_all_tasks_blocked()
            raise error

    with pytest.raises(KeyError) as excinfo:
        await body()
    assert excinfo.value is error
    assert type(excinfo.value) is KeyError
    assert dict(tracer.stats().dropped) == {DropReason.SHUTDOWN_TIMEOUT: 2}


async def test_exit_by_cancellation_drains_and_propagates_the_cancellation() -> None:
    exporter = MemoryExporter()
    reached_after_tracer = False
    with anyio.CancelScope() as scope:
        async with open_tracer(exporter, max_batch_size=100, flush_interval=NEVER) as tracer:
            end_spans(tracer, "done0", "done1")
            tracer.start_span("left-open")
            scope.cancel()
            await anyio.sleep_forever()
        reached_after_tracer = True
    assert scope.cancel_called
    assert scope.cancelled_caught
    assert not reached_after_tracer
    spans = _by_name(exporter)
    assert set(spans) == {"done0", "done1", "left-open"}
    assert spans["left-open"].attributes[UNFINISHED] is True
    assert exporter.closed
    assert tracer.stats().dropped == {}
    assert_accounting(tracer)


async def test_exit_by_cancellation_from_an_outer_scope_while_a_batch_is_in_flight() -> None:
    exporter = GatedExporter()
    with anyio.CancelScope() as scope:
        async with open_tracer(exporter, max_batch_size=1, flush_interval=NEVER) as tracer:
            end_spans(tracer, "s0", "s1")
            await exporter.next_export()
            exporter.gate.set()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert names(exporter.records) == ("s0", "s1")
    assert tracer.stats().dropped == {}


async def test_hung_exporter_is_cancelled_at_drain_timeout_and_leftovers_are_counted() -> None:
    exporter = FaultyExporter(script=lambda index, batch: Fault.hang())
    async with open_tracer(
        exporter, max_batch_size=1, flush_interval=NEVER, export_timeout=NEVER, drain_timeout=0.01
    ) as tracer:
        end_spans(tracer, "s0", "s1", "s2")
        tracer.start_span("left-open")
        await anyio.wait_all_tasks_blocked()
    # Reaching this line is the point: the exit returned although the export never would.
    lane = tracer.stats().lanes[0]
    assert dict(lane.dropped) == {DropReason.SHUTDOWN_TIMEOUT: 4}
    assert (lane.queued, lane.in_flight, lane.exported) == (0, 0, 0)
    assert_accounting(tracer)


async def test_tracer_opened_in_an_already_cancelled_scope_still_drains_and_propagates() -> None:
    first, second = MemoryExporter(name="first"), MemoryExporter(name="second")
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with open_tracer(first, second, flush_interval=NEVER) as tracer:
            end_spans(tracer, "s0")
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert names(first.records) == names(second.records) == ("s0",)
    assert tracer.stats().dropped == {}


async def test_exit_by_cancellation_with_a_hung_exporter_still_ends_at_drain_timeout() -> None:
    exporter = FaultyExporter(script=lambda index, batch: Fault.hang())
    with anyio.CancelScope() as scope:
        async with open_tracer(
            exporter, max_batch_size=1, export_timeout=NEVER, drain_timeout=0.01
        ) as tracer:
            end_spans(tracer, "s0", "s1")
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    lane = tracer.stats().lanes[0]
    assert dict(lane.dropped) == {DropReason.SHUTDOWN_TIMEOUT: 2}
    assert (lane.queued, lane.in_flight) == (0, 0)


@pytest.mark.parametrize(
    ("fail_on_close", "hang_on_close"),
    [
        pytest.param(False, False, id="normal"),
        pytest.param(True, False, id="raises"),
        pytest.param(False, True, id="hangs"),
    ],
)
async def test_exporter_aclose_runs_on_exit_even_if_it_raises_or_hangs(
    fail_on_close: bool,
    hang_on_close: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(spanlane._lane, "ACLOSE_GRACE", 0.01)
    caplog.set_level(logging.WARNING, logger="spanlane")
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, fail_on_close=fail_on_close, hang_on_close=hang_on_close)
    async with open_tracer(exporter) as tracer:
        end_spans(tracer, "s0")
    assert inner.closed
    assert names(inner.records) == ("s0",)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if fail_on_close or hang_on_close:
        assert any("aclose()" in message for message in warnings)
    else:
        assert warnings == []


async def test_cancellation_of_an_enclosing_scope_propagates_through_the_tracer() -> None:
    exporter = MemoryExporter()
    with anyio.move_on_after(0.01) as scope:
        async with open_tracer(exporter, flush_interval=NEVER) as tracer, tracer.span("waiting"):
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    (record,) = exporter.spans
    assert record.attributes["spanlane.cancelled"] is True
    assert UNFINISHED not in record.attributes


async def test_spans_ended_after_exit_are_counted_closed_and_raise_nothing() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, on_full="wait") as tracer:
        end_spans(tracer, "inside")
    end_spans(tracer, "late0")
    with tracer.span("late1"):
        pass
    async with tracer.span("late2"):
        pass
    late3 = tracer.start_span("late3")
    await late3.aend()
    stats = tracer.stats()
    assert dict(stats.dropped) == {DropReason.CLOSED: 4}
    assert stats.lanes[0].offered == 5
    assert names(exporter.records) == ("inside",)
    assert_accounting(tracer)


async def test_stats_are_valid_after_exit() -> None:
    first, second = MemoryExporter(name="first"), MemoryExporter(name="second")
    async with open_tracer(first, second, flush_interval=NEVER) as tracer:
        end_spans(tracer, "s0", "s1")
    stats = tracer.stats()
    assert tracer.closed
    assert (stats.spans_started, stats.spans_ended) == (2, 2)
    assert [lane.exporter for lane in stats.lanes] == ["first", "second"]
    for lane in stats.lanes:
        assert (lane.offered, lane.exported, lane.queued, lane.in_flight) == (2, 2, 0, 0)
        assert lane.balanced
    report = await tracer.flush()
    assert report.completed


async def test_tracer_cannot_be_entered_twice() -> None:
    tracer = open_tracer(MemoryExporter())
    async with tracer:
        with pytest.raises(RuntimeError, match="once"):
            async with tracer:
                pass  # pragma: no cover
    with pytest.raises(RuntimeError, match="once"):
        async with tracer:
            pass  # pragma: no cover


async def test_current_tracer_is_the_innermost_open_tracer() -> None:
    assert current_tracer() is None
    async with open_tracer(MemoryExporter()) as outer:
        assert current_tracer() is outer
        async with open_tracer(MemoryExporter()) as inner:
            assert current_tracer() is inner
        assert current_tracer() is outer
    assert current_tracer() is None


async def test_module_level_span_uses_the_current_tracer() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter) as tracer:
        with spanlane.span("via-module") as span:
            assert span.is_recording
        assert isinstance(tracer, Tracer)
    assert names(exporter.records) == ("via-module",)


async def test_tasks_see_the_tracer_as_current() -> None:
    seen: list[Tracer | None] = []

    async def child() -> None:
        seen.append(current_tracer())

    async with open_tracer(MemoryExporter()) as tracer, anyio.create_task_group() as tg:
        tg.start_soon(child)
    assert seen == [tracer]


# --- threads -------------------------------------------------------------------------------------


async def test_spans_from_worker_threads_are_exported_with_correct_parents() -> None:
    exporter = MemoryExporter()

    def work_in_thread(tracer: Tracer) -> None:
        with tracer.span("in-thread") as span:
            span.set_attribute("thread", True)
            with tracer.span("nested-in-thread"):
                pass

    async with open_tracer(exporter, flush_interval=NEVER) as tracer:
        async with tracer.span("parent") as parent:
            await anyio.to_thread.run_sync(work_in_thread, tracer)
            started_here = tracer.start_span("ended-in-thread")
            await anyio.to_thread.run_sync(started_here.end)
        await tracer.flush()
    spans = _by_name(exporter)
    assert set(spans) == {"parent", "in-thread", "nested-in-thread", "ended-in-thread"}
    parent_id = parent.context.span_id
    assert spans["in-thread"].parent_span_id == parent_id
    assert spans["in-thread"].attributes["thread"] is True
    assert spans["nested-in-thread"].parent_span_id == spans["in-thread"].span_id
    assert spans["ended-in-thread"].parent_span_id == parent_id
    assert {record.trace_id for record in spans.values()} == {parent.context.trace_id}
    stats = tracer.stats()
    assert (stats.spans_started, stats.spans_ended) == (4, 4)
    assert stats.dropped == {}


async def test_exception_in_a_worker_thread_span_marks_it_as_error() -> None:
    exporter = MemoryExporter()

    def fail_in_thread(tracer: Tracer) -> None:
        with tracer.span("thread-span"):
            raise OSError("disk on fire")

    async with open_tracer(exporter) as tracer:
        with pytest.raises(OSError, match="disk on fire"):
            await anyio.to_thread.run_sync(fail_in_thread, tracer)
    (record,) = exporter.spans
    assert record.status.code is spanlane.StatusCode.ERROR
    assert record.events[0].name == "exception"


async def test_span_started_on_the_loop_is_an_open_span_until_ended() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter) as tracer:
        span = tracer.start_span("manual")
        assert isinstance(span, Span)
        assert tracer.stats().spans_started == 1
        assert tracer.stats().spans_ended == 0
        span.end()
        assert tracer.stats().spans_ended == 1


def test_a_tracer_built_outside_an_event_loop_and_never_entered_holds_nothing_to_close() -> None:
    # No running loop here: building the tracer must not need one, and dropping it unentered
    # must not leave an unclosed stream behind (a ResourceWarning, an error in this suite).
    exporter = MemoryExporter()
    tracer = Tracer(exporter)
    span = tracer.start_span("before")
    # A tracer that was never entered does not record (and says so in the log, once).
    assert not span.is_recording
    span.end()
    stats = tracer.stats()
    assert (stats.spans_started, stats.spans_ended) == (0, 0)
    assert stats.lanes[0].offered == 0
    assert stats.lanes[0].balanced
    assert exporter.records == []
    del tracer


@pytest.mark.anyio
async def test_spans_started_after_exit_count_closed_when_ended_and_are_not_retained() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter) as tracer:
        pass
    late = tracer.start_span("late")
    never_ended = tracer.start_span("never ended")
    late.end()
    assert never_ended.is_recording
    lane = tracer.stats().lanes[0]
    assert lane.dropped == {DropReason.CLOSED: 1}
    assert lane.balanced
    # Held weakly: once the caller lets go, the span is gone, and ended as unfinished.
    del never_ended
    gc.collect()
    assert len(tracer.open_spans) == 0
    stats = tracer.stats()
    assert stats.spans_started == stats.spans_ended == 2
    assert stats.lanes[0].dropped == {DropReason.CLOSED: 2}
    assert exporter.records == []


@pytest.mark.anyio
async def test_spans_started_while_shutdown_waits_for_room_are_ended_as_unfinished() -> None:
    gated = GatedExporter()

    async def start_during_shutdown(tracer: Tracer) -> None:
        # By the time every task is blocked, the tracer's exit is waiting for room in the lane.
        await anyio.wait_all_tasks_blocked()
        tracer.start_span("started during shutdown")
        gated.gate.set()

    async with (
        anyio.create_task_group() as tg,
        open_tracer(gated, buffer_size=1, max_batch_size=1, drain_timeout=30.0) as tracer,
    ):
        end_spans(tracer, "in flight")
        assert await gated.next_export() == ("in flight",)
        end_spans(tracer, "queued")  # the buffer is full now
        tracer.start_span("open at exit")
        tg.start_soon(start_during_shutdown, tracer)

    assert names(gated.records) == (
        "in flight",
        "queued",
        "open at exit",
        "started during shutdown",
    )
    for record in gated.records[2:]:
        assert record.attributes["spanlane.unfinished"] is True
    stats = tracer.stats()
    assert stats.spans_started == stats.spans_ended == 4
    assert_accounting(tracer)
