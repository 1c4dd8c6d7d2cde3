"""Spans started or ended in other threads: worker threads, plain threads, portal threads.

The property under test everywhere: the record is exported with the right parent, and the lanes
(whose memory-object streams are not thread-safe) are only ever touched by the loop thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator
from functools import partial

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from anyio.streams.memory import MemoryObjectSendStream

import spanlane
from spanlane import DropReason, SpanRecord, Tracer, open_tracer
from spanlane.exporters import MemoryExporter
from spanlane.testing import CapturedSpans, capture_spans


class LaneThreads:
    """Records which threads put records into the lanes' memory-object streams.

    The streams are patched at the class level before the tracer opens, so every lane's
    ``send_nowait`` goes through the spy, whichever path led to it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loop_thread = threading.get_ident()
        self.threads: list[int] = []
        original = MemoryObjectSendStream.send_nowait

        def spy(stream: MemoryObjectSendStream[object], item: object) -> None:
            if isinstance(item, SpanRecord):
                self.threads.append(threading.get_ident())
            original(stream, item)

        monkeypatch.setattr(MemoryObjectSendStream, "send_nowait", spy)

    def assert_loop_only(self, count: int) -> None:
        assert len(self.threads) == count
        assert set(self.threads) == {self.loop_thread}


class Harness:
    """A captured tracer plus the threads that touched its lanes."""

    def __init__(self, captured: CapturedSpans, lanes: LaneThreads) -> None:
        self.tracer = captured.tracer
        self.flush = captured.flush
        self.lanes = lanes


@pytest.fixture
async def captured(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    lanes = LaneThreads(monkeypatch)
    async with capture_spans() as captured:
        yield Harness(captured, lanes)


def by_name(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {record.name: record for record in spans}


@pytest.mark.anyio
async def test_span_in_a_worker_thread_is_a_child_of_the_loop_span(
    captured: Harness,
) -> None:
    def work() -> None:
        with spanlane.span("in worker") as span:
            span.set_attribute("thread", threading.get_ident())

    with spanlane.span("request") as request:
        await anyio.to_thread.run_sync(work)
        assert spanlane.current_span() is request
    spans = by_name(await captured.flush())
    assert spans["in worker"].parent_span_id == request.context.span_id
    assert spans["in worker"].attributes["thread"] != threading.get_ident()
    captured.lanes.assert_loop_only(2)


@pytest.mark.anyio
async def test_span_started_on_the_loop_can_end_in_a_worker_thread(
    captured: Harness,
) -> None:
    span = captured.tracer.start_span("handed over")
    await anyio.to_thread.run_sync(span.end)
    (record,) = await captured.flush()
    assert record.name == "handed over"
    captured.lanes.assert_loop_only(1)


@pytest.mark.anyio
async def test_span_started_in_a_worker_thread_can_end_on_the_loop(
    captured: Harness,
) -> None:
    with spanlane.span("request") as request:
        span = await anyio.to_thread.run_sync(lambda: captured.tracer.start_span("started there"))
    span.end()
    spans = by_name(await captured.flush())
    assert spans["started there"].parent_span_id == request.context.span_id
    assert captured.tracer.stats().spans_started == captured.tracer.stats().spans_ended == 2
    captured.lanes.assert_loop_only(2)


@pytest.mark.anyio
async def test_from_thread_calls_see_the_worker_span_as_parent(captured: Harness) -> None:
    async def async_step() -> None:
        async with spanlane.span("from_thread.run"):
            await anyio.lowlevel.checkpoint()

    def sync_step() -> None:
        with spanlane.span("from_thread.run_sync"):
            pass

    def work() -> None:
        with spanlane.span("worker"):
            anyio.from_thread.run(async_step)
            anyio.from_thread.run_sync(sync_step)

    await anyio.to_thread.run_sync(work)
    spans = by_name(await captured.flush())
    worker = spans["worker"].span_id
    assert spans["from_thread.run"].parent_span_id == worker
    assert spans["from_thread.run_sync"].parent_span_id == worker
    captured.lanes.assert_loop_only(3)


@pytest.mark.anyio
async def test_plain_thread_with_an_explicit_parent(captured: Harness) -> None:
    tracer = captured.tracer
    errors: list[BaseException] = []

    def work(parent: spanlane.SpanContext) -> None:
        try:
            with tracer.span("plain thread", parent=parent):
                pass
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    with spanlane.span("request") as request:
        thread = threading.Thread(target=work, args=(request.context,))
        thread.start()
        # Join in a worker thread: blocking the loop would stall the thread's hand-off.
        await anyio.to_thread.run_sync(thread.join)
    assert errors == []
    spans = by_name(await captured.flush())
    assert spans["plain thread"].parent_span_id == request.context.span_id
    captured.lanes.assert_loop_only(2)


@pytest.mark.anyio
async def test_plain_thread_running_a_copied_context_sees_tracer_and_span(
    captured: Harness,
) -> None:
    with spanlane.span("request") as request:
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(lambda: spanlane.span("copied").end(),))
    thread.start()
    await anyio.to_thread.run_sync(thread.join)
    spans = by_name(await captured.flush())
    assert spans["copied"].parent_span_id == request.context.span_id


@pytest.mark.anyio
async def test_plain_thread_without_context_has_no_current_tracer(
    captured: Harness,
) -> None:
    seen: list[spanlane.Span] = []
    thread = threading.Thread(target=lambda: seen.append(spanlane.span("nowhere")))
    thread.start()
    await anyio.to_thread.run_sync(thread.join)
    assert not seen[0].is_recording
    assert await captured.flush() == []


@pytest.mark.anyio
async def test_blocking_portal_thread_hands_off_without_blocking_its_loop(
    captured: Harness, anyio_backend: str
) -> None:
    tracer = captured.tracer

    async def in_portal() -> None:
        async with tracer.span("in portal"):
            await anyio.lowlevel.checkpoint()

    def work() -> None:
        with anyio.from_thread.start_blocking_portal(anyio_backend) as portal:
            portal.call(in_portal)

    await anyio.to_thread.run_sync(work)
    # The portal's loop scheduled the hand-off without waiting for it. The worker thread's
    # completion reaches this loop through the same first-in, first-out callback queue, later.
    assert tracer.stats().spans_ended == 1
    (record,) = await captured.flush()
    assert record.name == "in portal"
    captured.lanes.assert_loop_only(1)


@pytest.mark.anyio
async def test_many_threads_lose_nothing(captured: Harness) -> None:
    """Spans from concurrent worker threads are all exported, each with its own parent."""
    threads, per_thread = 8, 25

    def work(index: int) -> None:
        with spanlane.span(f"thread {index}"):
            for number in range(per_thread):
                with spanlane.span("item") as span:
                    span.set_attribute("n", number)

    limiter = anyio.CapacityLimiter(threads)
    async with anyio.create_task_group() as tg:
        for index in range(threads):
            tg.start_soon(partial(anyio.to_thread.run_sync, work, index, limiter=limiter))
    spans = await captured.flush()
    assert len(spans) == threads * (per_thread + 1)
    parents = {record.span_id for record in spans if record.name.startswith("thread")}
    items = [record for record in spans if record.name == "item"]
    assert {record.parent_span_id for record in items} == parents
    stats = captured.tracer.stats()
    assert stats.spans_started == stats.spans_ended == len(spans)
    assert stats.lanes[0].dropped == {}
    captured.lanes.assert_loop_only(len(spans))


@pytest.mark.anyio
async def test_thread_ending_a_span_after_the_tracer_closed_is_counted() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter) as tracer:
        pass
    await anyio.to_thread.run_sync(lambda: tracer.start_span("late").end())
    assert exporter.spans == []
    assert tracer.stats().lanes[0].dropped == {DropReason.CLOSED: 1}


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_thread_ending_a_span_after_the_loop_finished_neither_hangs_nor_raises(
    backend: str,
) -> None:
    exporter = MemoryExporter()
    holder: list[Tracer] = []
    spans: list[spanlane.Span] = []

    async def main() -> None:
        async with open_tracer(exporter) as tracer:
            holder.append(tracer)
            spans.append(tracer.start_span("open at exit"))

    anyio.run(main, backend=backend)
    (tracer,) = holder
    errors: list[BaseException] = []

    def late() -> None:
        try:
            spans[0].end()  # already ended (unfinished) at shutdown: a no-op
            tracer.start_span("after the loop").end()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=late)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert errors == []
    (record,) = exporter.spans
    assert record.attributes["spanlane.unfinished"] is True
    assert tracer.stats().lanes[0].dropped == {DropReason.CLOSED: 1}
