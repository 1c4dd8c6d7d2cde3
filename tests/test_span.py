"""Span: the live handle, its context managers, errors, cancellation, parenting and ids."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import anyio
import pytest

import spanlane
from spanlane import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
    Tracer,
    current_span,
    open_tracer,
)
from spanlane.exporters import MemoryExporter
from spanlane.testing import CapturedSpans, capture_spans

pytestmark = pytest.mark.anyio

CANCELLED = "spanlane.cancelled"


@pytest.fixture
async def captured() -> AsyncIterator[CapturedSpans]:
    async with capture_spans() as captured:
        yield captured


async def _only(captured: CapturedSpans) -> SpanRecord:
    (record,) = await captured.flush()
    return record


# --- context managers ----------------------------------------------------------------------------


async def test_sync_with_ends_the_span_and_exports_its_record(captured: CapturedSpans) -> None:
    with captured.tracer.span("work", attributes={"n": 1}, kind=SpanKind.CLIENT) as span:
        recording_inside = span.is_recording
        span.set_attribute("m", "x")
    assert recording_inside
    assert not span.is_recording
    record = await _only(captured)
    assert record.name == "work"
    assert record.kind is SpanKind.CLIENT
    assert dict(record.attributes) == {"n": 1, "m": "x"}
    assert record.status == Status(StatusCode.UNSET)
    assert record.end_time_ns is not None
    assert record.end_time_ns >= record.start_time_ns
    assert record.end_time_ns == span.end_time_ns


async def test_async_with_ends_the_span_and_exports_its_record(captured: CapturedSpans) -> None:
    async with captured.tracer.span("work") as span:
        await anyio.lowlevel.checkpoint()
        assert current_span() is span
    record = await _only(captured)
    assert record.name == "work"
    assert not record.is_start


async def test_explicit_times_are_kept(captured: CapturedSpans) -> None:
    span = captured.tracer.start_span("timed", start_time_ns=1_000)
    span.end(end_time_ns=5_000)
    record = await _only(captured)
    assert (record.start_time_ns, record.end_time_ns, record.duration_ns) == (1_000, 5_000, 4_000)


@pytest.mark.parametrize("use_async", [False, True], ids=["with", "async-with"])
async def test_exception_sets_error_status_records_an_event_and_propagates_unchanged(
    captured: CapturedSpans, use_async: bool
) -> None:
    error = ValueError("boom")

    async def body() -> None:
        if use_async:
            async with captured.tracer.span("failing"):
                raise error
        else:
            with captured.tracer.span("failing"):
                raise error

    with pytest.raises(ValueError, match="boom") as excinfo:
        await body()
    assert excinfo.value is error
    record = await _only(captured)
    assert record.status == Status(StatusCode.ERROR, "ValueError: boom")
    (event,) = record.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom"
    stacktrace = event.attributes["exception.stacktrace"]
    assert isinstance(stacktrace, str)
    assert stacktrace.startswith("Traceback")
    assert "ValueError: boom" in stacktrace


async def test_status_set_in_the_body_is_kept_when_an_exception_leaves_it(
    captured: CapturedSpans,
) -> None:
    def body() -> None:
        with captured.tracer.span("failing") as span:
            span.set_status(StatusCode.ERROR, "my own description")
            raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        body()
    record = await _only(captured)
    assert record.status == Status(StatusCode.ERROR, "my own description")


@pytest.mark.parametrize("use_async", [False, True], ids=["with", "async-with"])
async def test_cancellation_marks_the_span_cancelled_not_error_and_propagates(
    captured: CapturedSpans, use_async: bool
) -> None:
    with anyio.CancelScope() as scope:
        if use_async:
            async with captured.tracer.span("cancelled"):
                scope.cancel()
                await anyio.sleep_forever()
        else:
            with captured.tracer.span("cancelled"):
                scope.cancel()
                await anyio.sleep_forever()
    assert scope.cancelled_caught
    record = await _only(captured)
    assert record.attributes[CANCELLED] is True
    assert record.status.code is StatusCode.UNSET
    assert record.events == ()


async def test_cancellation_of_a_task_group_inside_a_span_is_not_an_error(
    captured: CapturedSpans,
) -> None:
    with anyio.CancelScope() as scope:
        async with captured.tracer.span("outer"), anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            tg.start_soon(anyio.sleep_forever)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    record = await _only(captured)
    assert record.attributes[CANCELLED] is True
    assert record.status.code is StatusCode.UNSET


async def test_generator_exit_is_neither_error_nor_cancellation(captured: CapturedSpans) -> None:
    def generator(tracer: Tracer) -> Generator[int, None, None]:
        with tracer.span("in-generator"):
            yield 1

    iterator = generator(captured.tracer)
    next(iterator)
    iterator.close()  # raises GeneratorExit inside the span
    record = await _only(captured)
    assert record.status.code is StatusCode.UNSET
    assert CANCELLED not in record.attributes
    assert record.events == ()


# --- ending --------------------------------------------------------------------------------------


async def test_ending_twice_is_a_no_op(captured: CapturedSpans) -> None:
    span = captured.tracer.start_span("once")
    span.end(end_time_ns=10)
    span.end(end_time_ns=20)
    await span.aend(end_time_ns=30)
    record = await _only(captured)
    assert record.end_time_ns == 10
    assert captured.tracer.stats().spans_ended == 1


async def test_mutating_after_end_does_not_change_the_record(captured: CapturedSpans) -> None:
    with captured.tracer.span("done", attributes={"a": 1}) as span:
        span.add_event("e1")
    record = await _only(captured)
    before = (dict(record.attributes), record.events, record.status, record.dropped_attributes)

    span.set_attribute("a", 2)
    span.set_attribute("b", 3)
    span.set_attributes({"c": 4})
    span.add_event("e2")
    span.record_exception(ValueError("late"))
    span.set_status(StatusCode.ERROR, "late")

    after = (dict(record.attributes), record.events, record.status, record.dropped_attributes)
    assert after == before
    assert dict(span.attributes) == {"a": 1}
    assert span.status.code is StatusCode.UNSET


async def test_records_are_frozen_and_their_attributes_read_only(captured: CapturedSpans) -> None:
    with captured.tracer.span("done", attributes={"a": 1}):
        pass
    record = await _only(captured)
    with pytest.raises(AttributeError):
        record.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.attributes["a"] = 2  # type: ignore[index]


async def test_start_record_does_not_change_when_the_span_does() -> None:
    async with capture_spans(wants_starts=True) as captured:
        with captured.tracer.span("s", attributes={"a": 1}) as span:
            span.set_attribute("a", 2)
            span.set_attribute("b", 3)
            span.set_status(StatusCode.OK)
        await captured.flush()
        start, end = captured.exporter.records
    assert start.is_start
    assert start.end_time_ns is None
    assert dict(start.attributes) == {"a": 1}
    assert start.status.code is StatusCode.UNSET
    assert not end.is_start
    assert dict(end.attributes) == {"a": 2, "b": 3}
    assert end.status.code is StatusCode.OK
    assert start.span_id == end.span_id


# --- status and events -----------------------------------------------------------------------


async def test_ok_status_is_final_and_description_is_kept_for_errors_only(
    captured: CapturedSpans,
) -> None:
    with captured.tracer.span("error") as error_span:
        error_span.set_status(StatusCode.ERROR, "bad")
        error_span.set_status(StatusCode.UNSET)  # ignored
    with captured.tracer.span("ok") as ok_span:
        ok_span.set_status(StatusCode.OK, "ignored description")
        ok_span.set_status(StatusCode.ERROR, "too late")
    records = {record.name: record for record in await captured.flush()}
    assert records["error"].status == Status(StatusCode.ERROR, "bad")
    assert records["ok"].status == Status(StatusCode.OK, None)


async def test_record_exception_adds_an_event_without_changing_status(
    captured: CapturedSpans,
) -> None:
    with captured.tracer.span("handled") as span:
        try:
            raise KeyError("missing")
        except KeyError as exc:
            span.record_exception(exc, {"handled": True})
    record = await _only(captured)
    assert record.status.code is StatusCode.UNSET
    (event,) = record.events
    assert event.attributes["exception.type"] == "KeyError"
    assert event.attributes["handled"] is True


async def test_events_keep_their_order_attributes_and_times(captured: CapturedSpans) -> None:
    with captured.tracer.span("evented") as span:
        span.add_event("first", {"k": "v"}, time_ns=100)
        span.add_event("second")
    record = await _only(captured)
    assert [event.name for event in record.events] == ["first", "second"]
    assert record.events[0].time_ns == 100
    assert dict(record.events[0].attributes) == {"k": "v"}
    assert record.events[1].time_ns > 100


# --- current span and parenting --------------------------------------------------------------


async def test_current_span_outside_any_span_is_non_recording() -> None:
    span = current_span()
    assert isinstance(span, NonRecordingSpan)
    assert not span.is_recording
    assert span.context.trace_id == 0


async def test_entered_span_is_current_and_the_previous_one_is_restored(
    captured: CapturedSpans,
) -> None:
    outer_before = current_span()
    with captured.tracer.span("outer") as outer:
        assert current_span() is outer
        async with captured.tracer.span("inner") as inner:
            assert current_span() is inner
        assert current_span() is outer
    assert current_span() is outer_before


async def test_start_span_does_not_become_current(captured: CapturedSpans) -> None:
    with captured.tracer.span("outer") as outer:
        manual = captured.tracer.start_span("manual")
        assert current_span() is outer
        manual.end()
    records = {record.name: record for record in await captured.flush()}
    assert records["manual"].parent_span_id == outer.context.span_id


async def test_nested_spans_share_the_trace_and_point_to_their_parent(
    captured: CapturedSpans,
) -> None:
    with (
        captured.tracer.span("root") as root,
        captured.tracer.span("child") as child,
        captured.tracer.span("grandchild") as grandchild,
    ):
        pass
    records = {record.name: record for record in await captured.flush()}
    assert records["root"].parent_span_id is None
    assert records["child"].parent_span_id == root.context.span_id
    assert records["grandchild"].parent_span_id == child.context.span_id
    assert len({record.trace_id for record in records.values()}) == 1
    assert grandchild.parent == child.context


async def test_tasks_started_in_a_task_group_inside_a_span_are_its_children(
    captured: CapturedSpans,
) -> None:
    async def child(name: str) -> None:
        async with spanlane.span(name):
            await anyio.lowlevel.checkpoint()

    async with captured.tracer.span("parent") as parent, anyio.create_task_group() as tg:
        for index in range(3):
            tg.start_soon(child, f"child{index}")
    records = {record.name: record for record in await captured.flush()}
    for index in range(3):
        record = records[f"child{index}"]
        assert record.parent_span_id == parent.context.span_id
        assert record.trace_id == parent.context.trace_id


async def test_explicit_parent_span_or_context_overrides_the_current_span(
    captured: CapturedSpans,
) -> None:
    other = captured.tracer.start_span("other")
    remote = SpanContext(trace_id=0xABC, span_id=0xDEF, trace_state="k=v", is_remote=True)
    with captured.tracer.span("current"):
        child_of_span = captured.tracer.start_span("of-span", parent=other)
        child_of_remote = captured.tracer.start_span("of-remote", parent=remote)
    child_of_span.end()
    child_of_remote.end()
    other.end()
    records = {record.name: record for record in await captured.flush()}
    assert records["of-span"].parent_span_id == other.context.span_id
    assert records["of-span"].trace_id == other.context.trace_id
    assert not records["of-span"].parent_is_remote
    assert records["of-remote"].trace_id == 0xABC
    assert records["of-remote"].parent_span_id == 0xDEF
    assert records["of-remote"].parent_is_remote
    assert records["of-remote"].trace_state == "k=v"


async def test_bad_name_or_parent_raises_type_error(captured: CapturedSpans) -> None:
    with pytest.raises(TypeError, match="name"):
        captured.tracer.start_span(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="parent"):
        captured.tracer.start_span("x", parent="not a span")  # type: ignore[arg-type]


async def test_links_accept_links_contexts_and_spans(captured: CapturedSpans) -> None:
    target = captured.tracer.start_span("target")
    context = SpanContext(trace_id=5, span_id=6)
    links = [Link(context, {"why": "because"}), context, target, "junk"]
    with captured.tracer.span("linked", links=links):  # type: ignore[arg-type]
        pass
    target.end()
    records = {record.name: record for record in await captured.flush()}
    linked = records["linked"]
    assert [link.context for link in linked.links] == [context, context, target.context]
    assert dict(linked.links[0].attributes) == {"why": "because"}
    assert linked.dropped_links == 1


# --- without a tracer, and ids ---------------------------------------------------------------


async def test_module_span_without_a_tracer_is_a_non_recording_no_op() -> None:
    before = current_span()
    with spanlane.span("nothing", attributes={"a": 1}) as span:
        assert isinstance(span, NonRecordingSpan)
        assert not span.is_recording
        assert current_span() is before
        span.set_attribute("b", 2)
        span.add_event("e")
        span.set_status(StatusCode.ERROR, "x")
        span.record_exception(ValueError("x"))
    async with spanlane.span("nothing-async") as async_span:
        assert not async_span.is_recording
    with pytest.raises(ValueError, match="kept"), spanlane.span("failing"):
        raise ValueError("kept")
    span.end()
    await span.aend()
    assert dict(span.attributes) == {}
    assert span.status.code is StatusCode.UNSET


async def test_ids_are_w3c_valid_and_unique(captured: CapturedSpans) -> None:
    spans: list[Span] = []
    for _ in range(50):
        with captured.tracer.span("root") as root, captured.tracer.span("child") as child:
            spans += [root, child]
    records = await captured.flush()
    assert len(records) == 100
    for record in records:
        assert 0 < record.trace_id < 2**128
        assert 0 < record.span_id < 2**64
    assert len({record.span_id for record in records}) == 100
    assert len({record.trace_id for record in records}) == 50
    for span in spans:
        assert span.context.trace_flags & 1  # sampled
        assert not span.context.is_remote


async def test_span_repr_names_the_span_and_its_state() -> None:
    async with open_tracer(MemoryExporter()) as tracer:
        span = tracer.start_span("shown")
        assert "'shown'" in repr(span)
        assert "open" in repr(span)
        span.end()
        assert "ended" in repr(span)


async def test_update_name_renames_an_open_span_and_not_an_ended_one() -> None:
    async with capture_spans() as captured:
        with captured.tracer.span("GET") as span:
            span.update_name("GET /items/{id}")
        span.update_name("too late")
        span.update_name(42)  # type: ignore[arg-type]  # ended: ignored, not even counted
        with captured.tracer.span("open") as open_span:
            open_span.update_name(42)  # type: ignore[arg-type]
        assert captured.tracer.stats().ignored_calls == 1
        spans = await captured.flush()
    assert [record.name for record in spans] == ["GET /items/{id}", "open"]
    assert span.name == "GET /items/{id}"
