"""@traced: async and sync functions, names, kinds, errors, threads, and no tracer at all."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.to_thread
import pytest

import spanlane
from spanlane import SpanKind, StatusCode, traced
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio


@traced
async def fetch(key: str) -> str:
    await anyio.lowlevel.checkpoint()
    return key.upper()


@traced
def parse(text: str) -> int:
    return len(text)


class Repository:
    @traced
    async def load(self, key: str) -> str:
        with spanlane.span("query"):
            return key

    @traced("repository.save", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"})
    def save(self, key: str) -> None:
        return None


async def test_async_function_span_is_named_after_its_qualname() -> None:
    async with capture_spans() as captured:
        assert await fetch("a") == "A"
    (record,) = captured.spans
    assert record.name == "fetch"
    assert record.kind is SpanKind.INTERNAL
    assert record.status.code is StatusCode.UNSET


async def test_sync_function_span_is_named_after_its_qualname() -> None:
    async with capture_spans() as captured:
        assert parse("abc") == 3
    assert [record.name for record in captured.spans] == ["parse"]


async def test_methods_use_the_class_qualname_and_nest_inner_spans() -> None:
    async with capture_spans() as captured:
        assert await Repository().load("k") == "k"
    query, load = captured.spans
    assert (query.name, load.name) == ("query", "Repository.load")
    assert query.parent_span_id == load.span_id


async def test_name_kind_and_attributes_arguments() -> None:
    async with capture_spans() as captured:
        Repository().save("k")
        Repository().save("k")
    first, second = captured.spans
    assert first.name == "repository.save"
    assert first.kind is SpanKind.CLIENT
    assert dict(first.attributes) == {"db.system": "sqlite"}
    assert first.span_id != second.span_id


async def test_name_may_be_passed_by_keyword() -> None:
    @traced(name="by keyword")
    def work() -> None:
        return None

    async with capture_spans() as captured:
        work()
    assert [record.name for record in captured.spans] == ["by keyword"]


async def test_decorated_call_is_a_child_of_the_current_span() -> None:
    async with capture_spans() as captured:
        with spanlane.span("outer") as outer:
            await fetch("x")
    inner, _ = captured.spans
    assert inner.parent_span_id == outer.context.span_id


async def test_exception_is_recorded_and_propagates_unchanged() -> None:
    class Broken(Exception):
        pass

    error = Broken("no")

    @traced
    async def fail() -> None:
        raise error

    @traced
    def fail_sync() -> None:
        raise error

    async with capture_spans() as captured:
        with pytest.raises(Broken) as raised:
            await fail()
        assert raised.value is error
        with pytest.raises(Broken):
            fail_sync()
    for record in captured.spans:
        assert record.status.code is StatusCode.ERROR
        assert [event.name for event in record.events] == ["exception"]


async def test_cancellation_is_not_an_error() -> None:
    started = anyio.Event()

    @traced
    async def wait_forever() -> None:
        started.set()
        await anyio.sleep_forever()

    async with capture_spans() as captured, anyio.create_task_group() as tg:
        tg.start_soon(wait_forever)
        await started.wait()
        tg.cancel_scope.cancel()
    (record,) = captured.spans
    assert record.status.code is StatusCode.UNSET
    assert record.attributes["spanlane.cancelled"] is True


async def test_without_a_tracer_the_function_runs_without_a_span() -> None:
    seen: list[spanlane.Span] = []

    @traced
    async def look() -> int:
        seen.append(spanlane.current_span())
        return 7

    @traced
    def look_sync() -> int:
        seen.append(spanlane.current_span())
        return 8

    assert spanlane.current_tracer() is None
    assert await look() == 7
    assert look_sync() == 8
    assert all(not span.is_recording for span in seen)


async def test_sync_function_in_a_worker_thread_is_traced_with_its_parent() -> None:
    async with capture_spans() as captured:
        with spanlane.span("request") as request:
            assert await anyio.to_thread.run_sync(parse, "four") == 4
    worker, _ = captured.spans
    assert worker.name == "parse"
    assert worker.parent_span_id == request.context.span_id


def test_wrapper_keeps_the_function_metadata() -> None:
    assert fetch.__name__ == "fetch"
    assert fetch.__wrapped__ is not None  # type: ignore[attr-defined]
    assert parse.__qualname__ == "parse"


def test_partial_objects_are_named_after_the_wrapped_function() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    wrapped = traced(functools.partial(add, 1))
    assert wrapped(2) == 3


def test_generator_functions_are_refused() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    async def more_numbers() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        traced(numbers)
    with pytest.raises(TypeError, match="generator"):
        traced("name")(more_numbers)


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        traced(42)  # type: ignore[call-overload]
