"""Spans started or ended in other threads: worker threads, plain threads, portal threads.

The property under test everywhere: the record is exported with the right parent, and the lanes
(whose queues are not thread-safe) are only ever touched by the loop thread.
"""

from __future__ import annotations

import contextvars
import gc
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest

import spanlane
from spanlane import DropReason, SpanRecord, Tracer, open_tracer
from spanlane._lane import Lane
from spanlane.exporters import MemoryExporter
from spanlane.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from spanlane.testing import CapturedSpans, capture_spans


class LaneThreads:
    """Records which threads offered records to the lanes (the only way into their queues).

    ``Lane.offer_nowait`` is patched at the class level before the tracer opens, so every
    lane's door goes through the spy, whichever path led to it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loop_thread = threading.get_ident()
        self.threads: list[int] = []
        original = Lane.offer_nowait

        def spy(lane: Lane, item: SpanRecord) -> bool:
            if isinstance(item, SpanRecord):
                self.threads.append(threading.get_ident())
            return original(lane, item)

        monkeypatch.setattr(Lane, "offer_nowait", spy)

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
async def test_flush_takes_everything_threads_handed_over_before_it() -> None:
    """More than one inbox slice (1,024 records) from threads: the flush hands all of them on."""
    exporter = MemoryExporter()
    async with open_tracer(exporter, buffer_size=10_000, max_batch_size=512) as tracer:

        def work() -> None:
            for _ in range(1_500):
                tracer.start_span("x").end()

        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()  # the loop is blocked here: nothing is taken from the inbox yet
        report = await tracer.flush()
        assert report.completed
        assert report.stats.inbox == 0
        assert len(exporter.spans) == 4_500


@pytest.mark.anyio
@pytest.mark.parametrize("sampler", [ALWAYS_ON, ALWAYS_OFF], ids=["sampled", "unsampled"])
async def test_a_span_left_from_another_thread_is_still_left_by_its_owner(
    sampler: Sampler,
) -> None:
    """A thread calling ``__exit__`` on a span it did not enter (a misuse) changes nothing in the
    thread's context, and the owner's own exit still restores the owner's current span."""
    async with open_tracer(MemoryExporter(), sampler=sampler) as tracer:
        with tracer.span("outer") as outer:
            with tracer.span("owned") as owned:
                stray = threading.Thread(target=owned.__exit__, args=(None, None, None))
                stray.start()
                stray.join()
                assert spanlane.current_span() is owned
            assert spanlane.current_span() is outer
            with tracer.span("next") as following:
                assert following.parent == outer.context


@pytest.mark.anyio
async def test_a_finaliser_reading_an_unsampled_context_during_its_ids_never_deadlocks() -> None:
    """An unsampled span's ids are made when first asked for; a garbage collection inside that
    (it allocates) may run a finaliser that asks another span. The reading runs in a thread with
    a bounded join, so that a deadlock fails the test instead of hanging the suite."""
    async with open_tracer(MemoryExporter(), sampler=ALWAYS_OFF) as tracer:

        class Finalised:
            def __init__(self) -> None:
                self.cycle = self  # collected by the cyclic collector, not at once
                self.span = tracer.start_span("finalised")

            def __del__(self) -> None:
                assert self.span.context.is_valid

        def read_contexts() -> None:
            thresholds = gc.get_threshold()
            gc.set_threshold(1, 1, 1)
            try:
                for _ in range(3_000):
                    span = tracer.start_span("read")
                    Finalised()
                    assert span.context.is_valid
            finally:
                gc.set_threshold(*thresholds)

        reader = threading.Thread(target=read_contexts, daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "reading an unsampled span's context deadlocked"


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


# --- core v2: a thread never waits for the event loop ----------------------------------------


@pytest.mark.anyio
async def test_no_deadlock_when_the_loop_thread_joins_the_thread_that_ends_spans(
    captured: Harness,
) -> None:
    """The loop thread blocks in ``thread.join()`` while that thread starts and ends spans:
    the thread hands its records over without waiting, so both finish."""
    tracer = captured.tracer

    def work() -> None:
        for number in range(50):
            with tracer.span(f"t{number}"):
                pass

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)  # blocks the event loop on purpose
    assert not thread.is_alive()
    spans = await captured.flush()
    assert len(spans) == 50
    captured.lanes.assert_loop_only(50)


@pytest.mark.anyio
async def test_no_deadlock_when_the_loop_thread_waits_on_a_future_result(
    captured: Harness,
) -> None:
    import concurrent.futures

    tracer = captured.tracer

    def work() -> int:
        with tracer.span("in the pool"):
            pass
        return 7

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(work).result(timeout=30) == 7  # blocks the loop on purpose
    (record,) = await captured.flush()
    assert record.name == "in the pool"


@pytest.mark.anyio
async def test_a_burst_from_threads_costs_one_loop_wakeup_per_burst(
    captured: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spanlane._runtime import LoopHandle

    wakeups = 0
    original = LoopHandle.call_soon

    def counting(self: LoopHandle, func: Callable[[], object]) -> None:
        nonlocal wakeups
        wakeups += 1
        original(self, func)

    monkeypatch.setattr(LoopHandle, "call_soon", counting)
    tracer = captured.tracer

    def work() -> None:
        for _ in range(200):
            tracer.start_span("x").end()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)  # the loop is blocked: all 200 records wait for one wake-up
    assert wakeups == 1
    assert len(await captured.flush()) == 200


def test_counters_stay_exact_when_threads_end_spans_after_the_loop_finished(
    backend: str,
) -> None:
    exporter = MemoryExporter()
    holder: list[Tracer] = []
    spans: list[spanlane.Span] = []

    async def main() -> None:
        async with open_tracer(exporter) as tracer:
            holder.append(tracer)
            # Started on the loop, ended by threads only after the loop is gone.

    anyio.run(main, backend=backend)
    (tracer,) = holder
    threads_count, per_thread = 8, 250
    for _ in range(threads_count * per_thread):
        spans.append(tracer.start_span("late"))
    chunks = [spans[index::threads_count] for index in range(threads_count)]

    def end_all(chunk: list[spanlane.Span]) -> None:
        for span in chunk:
            span.end()

    threads = [threading.Thread(target=end_all, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stats = tracer.stats()
    assert stats.spans_started == stats.spans_ended == threads_count * per_thread
    assert stats.lanes[0].dropped == {DropReason.CLOSED: threads_count * per_thread}
    assert stats.lanes[0].balanced


def test_a_thread_never_blocks_on_an_asyncio_loop_that_stopped_without_closing() -> None:
    """The loop ran the tracer's ``__aenter__`` and stopped; the tracer is open but nobody
    runs the loop. A thread ending a span must neither block nor lose the record."""
    import asyncio

    loop = asyncio.new_event_loop()
    exporter = MemoryExporter()
    tracer = open_tracer(exporter)
    try:
        loop.run_until_complete(tracer.__aenter__())
        span = tracer.start_span("on the loop")
        finished = threading.Event()

        def end_it() -> None:
            span.end()
            tracer.start_span("in the thread").end()
            finished.set()

        thread = threading.Thread(target=end_it)
        thread.start()
        thread.join(timeout=30)
        assert finished.is_set()
        stats = tracer.stats()
        assert stats.spans_ended == 2
        assert stats.lanes[0].dropped == {DropReason.CLOSED: 2}
        assert stats.lanes[0].balanced
    finally:
        loop.run_until_complete(tracer.__aexit__(None, None, None))
        loop.close()


def test_records_from_a_thread_running_its_own_loop_are_counted_when_the_outer_loop_ends(
    backend: str,
) -> None:
    """A thread with its own event loop ends spans of the outer tracer while the outer tracer
    closes and its loop finishes: every record is exported or counted, none vanishes."""
    exporter = MemoryExporter()
    holder: list[Tracer] = []
    stop = threading.Event()
    ended = 0

    def other_loop() -> None:
        async def produce() -> None:
            nonlocal ended
            tracer = holder[0]
            # At least 200 records, and on while the outer loop closes; never more than the
            # outer buffer holds (so every drop is a CLOSED one).
            while ended < 5_000 and (not stop.is_set() or ended < 200):
                tracer.start_span("from the other loop").end()
                ended += 1
                await anyio.lowlevel.checkpoint()

        anyio.run(produce, backend=backend)

    thread = threading.Thread(target=other_loop)

    async def main() -> None:
        async with open_tracer(exporter, buffer_size=10_000) as tracer:
            holder.append(tracer)
            thread.start()
            await anyio.sleep(0.01)
        stop.set()

    anyio.run(main, backend=backend)
    thread.join(timeout=30)
    assert not thread.is_alive()
    stats = holder[0].stats()
    lane = stats.lanes[0]
    assert stats.spans_started == stats.spans_ended == ended
    assert lane.offered == ended
    assert lane.offered == lane.exported + lane.dropped_total
    assert lane.exported == len(exporter.spans)
    # The other loop makes spans as fast as it can: on a busy machine the lane's buffer may
    # fill before its exports catch up, which is a counted drop too (nothing vanishes).
    assert set(lane.dropped) <= {DropReason.CLOSED, DropReason.QUEUE_FULL}
