"""Immutable hand-off and a thread-safe end (core v2, class 8).

Once ``end()`` returns, from any thread, nothing can change the record; two callers ending one
span at once make one record and no exception.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

import spanlane
from spanlane import SpanRecord, StatusCode
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio


def _snapshot(record: SpanRecord) -> object:
    return (
        dict(record.attributes),
        record.events,
        record.status,
        record.name,
        record.dropped_attributes,
        record.dropped_events,
        record.end_time_ns,
    )


class EndsTheSpan:
    """A value whose ``__repr__`` ends the span it is being set on."""

    def __init__(self) -> None:
        self.span: spanlane.Span | None = None

    def __repr__(self) -> str:
        assert self.span is not None
        self.span.end()
        self.span.set_attribute("set while ending", 1)
        return "ends-the-span"


async def test_a_reentrant_repr_that_ends_the_span_cannot_change_the_record() -> None:
    value = EndsTheSpan()
    async with capture_spans() as captured:
        span = captured.tracer.start_span("x", attributes={"before": 1})
        value.span = span
        span.set_attribute("sneaky", value)
        record = span.record
        assert record is not None
        frozen = _snapshot(record)
        span.set_attribute("after", 2)
        span.set_status(StatusCode.ERROR, "late")
        span.add_event("late")
        span.update_name("renamed")
        (exported,) = await captured.flush()
    assert exported is record
    assert _snapshot(record) == frozen
    assert dict(record.attributes) == {"before": 1}


async def test_set_attribute_racing_end_in_a_thread_never_changes_the_exported_record() -> None:
    async with capture_spans() as captured:
        for _ in range(20):
            span = captured.tracer.start_span("raced")
            stop = threading.Event()
            started = threading.Event()

            def hammer(
                span: spanlane.Span = span,
                started: threading.Event = started,
                stop: threading.Event = stop,
            ) -> None:
                number = 0
                started.set()
                while not stop.is_set():
                    span.set_attribute(f"k{number % 50}", number)
                    span.add_event("e")
                    span.set_status(StatusCode.OK)
                    span.update_name(f"n{number}")
                    number += 1

            thread = threading.Thread(target=hammer)
            thread.start()
            started.wait(10)
            span.end()
            record = span.record
            assert record is not None
            frozen = _snapshot(record)
            for _ in range(1000):  # the thread keeps going after end() returned
                pass
            stop.set()
            thread.join(10)
            assert _snapshot(record) == frozen
        records = await captured.flush()
    assert len(records) == 20


async def test_two_threads_ending_one_span_make_one_record_and_no_exception() -> None:
    errors: list[BaseException] = []
    async with capture_spans() as captured:
        spans = [captured.tracer.start_span(f"s{number}") for number in range(200)]
        for span in spans:
            barrier = threading.Barrier(2)

            def end(span: spanlane.Span = span, barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait(10)
                    span.end()
                    span.set_attribute("after", 1)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=end) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        records = await captured.flush()
    assert errors == []
    assert sorted(record.name for record in records) == sorted(f"s{n}" for n in range(200))
    stats = captured.tracer.stats()
    assert stats.spans_started == stats.spans_ended == 200


async def test_an_open_span_the_caller_dropped_is_not_retained_and_is_ended_unfinished() -> None:
    async with capture_spans() as captured:
        span = captured.tracer.start_span("dropped", attributes={"a": 1})
        span.set_attribute("b", 2)
        ref = weakref.ref(span)
        del span
        gc.collect()
        assert ref() is None
        assert not captured.tracer.open_spans
        (record,) = await captured.flush()
    assert record.name == "dropped"
    assert dict(record.attributes) == {"a": 1, "b": 2, "spanlane.unfinished": True}
    stats = captured.tracer.stats()
    assert stats.spans_started == stats.spans_ended == 1


async def test_entering_a_span_twice_does_not_raise() -> None:
    async with capture_spans() as captured:
        span = captured.tracer.start_span("twice")
        with span:
            with span:
                assert spanlane.current_span() is span
            assert spanlane.current_span() is span
        assert spanlane.current_span() is not span
        records = await captured.flush()
    assert [record.name for record in records] == ["twice"]
