"""Lanes: batching, flushing, the full-buffer policies, retries, isolation and accounting."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import anyio
import pytest

import spanlane._lane
from _gates import SAFETY_TIMEOUT, GatedExporter, assert_accounting, end_spans, names
from spanlane import DropReason, RetryPolicy, SpanRecord, open_tracer
from spanlane._tracer import lanes_of
from spanlane.exporters import MemoryExporter
from spanlane.testing import Fault, FaultyExporter

pytestmark = pytest.mark.anyio

#: A retry policy whose backoff is negligible, so retries need no waiting.
QUICK_RETRY = RetryPolicy(initial_backoff=0.001, max_backoff=0.001, jitter=0.0)
#: A flush interval long enough that nothing is ever exported because of age during a test.
NEVER = 3600.0


# --- batching ------------------------------------------------------------------------------------


async def test_full_batch_is_exported_without_waiting_for_flush_interval() -> None:
    exporter = GatedExporter(open=True)
    async with open_tracer(exporter, max_batch_size=3, flush_interval=NEVER) as tracer:
        end_spans(tracer, "s0", "s1")
        await anyio.wait_all_tasks_blocked()
        assert exporter.exports_started() == 0

        end_spans(tracer, "s2")
        assert await exporter.next_export() == ("s0", "s1", "s2")

        end_spans(tracer, "s3")
        await anyio.wait_all_tasks_blocked()
        assert exporter.exports_started() == 0
        # The worker holds s3 in the batch it is filling: in flight, not yet exported.
        assert tracer.stats().lanes[0].in_flight == 1
    # Leaving the tracer drains the partial batch.
    assert exporter.batches == [("s0", "s1", "s2"), ("s3",)]


async def test_batches_never_exceed_max_batch_size() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, max_batch_size=3, flush_interval=NEVER) as tracer:
        end_spans(tracer, *(f"s{i}" for i in range(7)))
        await tracer.flush()
    assert exporter.batches == [3, 3, 1]
    assert names(exporter.records) == tuple(f"s{i}" for i in range(7))


async def test_partial_batch_is_exported_once_its_oldest_record_is_flush_interval_old() -> None:
    exporter = GatedExporter(open=True)
    async with open_tracer(exporter, max_batch_size=100, flush_interval=0.01) as tracer:
        end_spans(tracer, "s0", "s1")
        # No flush(): only the age of the batch can trigger this export.
        assert await exporter.next_export() == ("s0", "s1")


async def test_flush_sends_a_partial_batch_at_once_and_reports_completion() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, max_batch_size=100, flush_interval=NEVER) as tracer:
        end_spans(tracer, "s0", "s1", "s2")
        await anyio.wait_all_tasks_blocked()
        assert exporter.records == []

        report = await tracer.flush()

        assert report.completed
        assert report.pending == (0,)
        assert report.stats.lanes[0].exported == 3
        assert exporter.batches == [3]


async def test_flush_with_nothing_offered_completes_at_once() -> None:
    async with open_tracer(MemoryExporter(), flush_interval=NEVER) as tracer:
        report = await tracer.flush()
    assert report.completed
    assert report.pending == (0,)


async def test_flush_waits_for_the_export_in_progress() -> None:
    exporter = GatedExporter()
    async with open_tracer(exporter, max_batch_size=1, flush_interval=NEVER) as tracer:
        end_spans(tracer, "s0")
        await exporter.next_export()
        reports = []

        async def flush() -> None:
            reports.append(await tracer.flush())

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush)
            await anyio.wait_all_tasks_blocked()
            assert reports == []
            exporter.gate.set()
        assert reports[0].completed
        assert names(exporter.records) == ("s0",)


async def test_flush_timeout_with_a_hanging_exporter_reports_what_is_pending() -> None:
    exporter = FaultyExporter(script=lambda index, batch: Fault.hang())
    async with open_tracer(
        exporter, max_batch_size=2, flush_interval=NEVER, export_timeout=NEVER, drain_timeout=0.01
    ) as tracer:
        end_spans(tracer, "s0", "s1", "s2")
        await anyio.wait_all_tasks_blocked()  # s0 and s1 are stuck in the export
        report = await tracer.flush(timeout=0.01)

        assert not report.completed
        assert report.pending == (3,)
        lane = report.stats.lanes[0]
        assert (lane.in_flight, lane.queued, lane.exported) == (2, 1, 0)
        assert_accounting(tracer)


# --- a full buffer -------------------------------------------------------------------------------


async def test_full_buffer_drops_newest_and_counts_it() -> None:
    exporter = GatedExporter()
    async with open_tracer(
        exporter, buffer_size=2, max_batch_size=1, flush_interval=NEVER, on_full="drop"
    ) as tracer:
        end_spans(tracer, "s0")
        assert await exporter.next_export() == ("s0",)  # s0 is in flight, blocked on the gate

        end_spans(tracer, "s1", "s2", "s3", "s4")

        lane = tracer.stats().lanes[0]
        assert (lane.offered, lane.in_flight, lane.queued) == (5, 1, 2)
        assert dict(lane.dropped) == {DropReason.QUEUE_FULL: 2}
        assert_accounting(tracer)

        exporter.gate.set()
        report = await tracer.flush()
        assert report.completed
    # The oldest records survive; the newest were the ones dropped.
    assert names(exporter.records) == ("s0", "s1", "s2")
    assert tracer.stats().lanes[0].exported == 3


async def test_high_water_is_the_most_records_queued_at_once() -> None:
    exporter = GatedExporter()
    async with open_tracer(
        exporter, buffer_size=5, max_batch_size=1, flush_interval=NEVER
    ) as tracer:
        end_spans(tracer, "s0")
        await exporter.next_export()
        end_spans(tracer, "s1", "s2", "s3")
        assert tracer.stats().lanes[0].high_water == 3

        exporter.gate.set()
        await tracer.flush()
        end_spans(tracer, "s4")
        await tracer.flush()
        lane = tracer.stats().lanes[0]
        assert lane.queued == 0
        assert lane.high_water == 3


async def test_wait_policy_async_span_waits_for_room_and_gets_in() -> None:
    exporter = GatedExporter()
    async with open_tracer(
        exporter,
        buffer_size=1,
        max_batch_size=1,
        flush_interval=NEVER,
        on_full="wait",
        wait_timeout=NEVER,
    ) as tracer:
        end_spans(tracer, "s0")
        await exporter.next_export()
        end_spans(tracer, "s1")  # fills the buffer
        ended = anyio.Event()

        async def end_async_span() -> None:
            async with tracer.span("s2"):
                pass
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(end_async_span)
            await anyio.wait_all_tasks_blocked()
            assert not ended.is_set()
            lane = tracer.stats().lanes[0]
            assert (lane.offered, lane.queued, lane.in_flight) == (2, 1, 1)
            assert lane.dropped == {}
            assert_accounting(tracer)

            exporter.gate.set()  # the worker takes s1, which makes room for s2
        assert ended.is_set()
        await tracer.flush()
        lane = tracer.stats().lanes[0]
    assert names(exporter.records) == ("s0", "s1", "s2")
    assert lane.dropped == {}


async def test_wait_policy_async_span_drops_and_counts_after_wait_timeout() -> None:
    exporter = GatedExporter()
    async with open_tracer(
        exporter,
        buffer_size=1,
        max_batch_size=1,
        flush_interval=NEVER,
        on_full="wait",
        wait_timeout=0.01,
    ) as tracer:
        end_spans(tracer, "s0")
        await exporter.next_export()
        end_spans(tracer, "s1")

        async with tracer.span("s2"):
            pass

        lane = tracer.stats().lanes[0]
        assert dict(lane.dropped) == {DropReason.QUEUE_FULL: 1}
        assert lane.offered == 3
        assert_accounting(tracer)
        exporter.gate.set()
    assert names(exporter.records) == ("s0", "s1")


async def test_wait_policy_sync_span_drops_and_counts_without_waiting() -> None:
    exporter = GatedExporter()
    async with open_tracer(
        exporter,
        buffer_size=1,
        max_batch_size=1,
        flush_interval=NEVER,
        on_full="wait",
        wait_timeout=NEVER,
    ) as tracer:
        end_spans(tracer, "s0")
        await exporter.next_export()
        end_spans(tracer, "s1")

        with tracer.span("s2"):  # a synchronous end cannot wait
            pass

        assert dict(tracer.stats().lanes[0].dropped) == {DropReason.QUEUE_FULL: 1}
        assert_accounting(tracer)
        exporter.gate.set()
    assert names(exporter.records) == ("s0", "s1")


async def test_wait_policy_cancelled_wait_still_offers_the_record_to_every_lane() -> None:
    full = GatedExporter("full")
    roomy = MemoryExporter(name="roomy")
    async with open_tracer(
        full,
        roomy,
        buffer_size=1,
        max_batch_size=1,
        flush_interval=NEVER,
        on_full="wait",
        wait_timeout=NEVER,
    ) as tracer:
        end_spans(tracer, "s0")
        await full.next_export()
        # Let "roomy" export s0 too, so that its one-record buffer is empty again (on trio its
        # worker may otherwise still be waiting to run, and s1 would find it full).
        await anyio.wait_all_tasks_blocked()
        end_spans(tracer, "s1")  # "full" is now full; "roomy" exports at once
        span = tracer.start_span("s2")

        async with anyio.create_task_group() as tg:
            tg.start_soon(span.aend)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()  # cancelled while waiting for room in "full"

        full_stats, roomy_stats = tracer.stats().lanes
        assert dict(full_stats.dropped) == {DropReason.QUEUE_FULL: 1}
        assert roomy_stats.offered == 3
        assert_accounting(tracer)
        full.gate.set()
    assert names(roomy.records) == ("s0", "s1", "s2")


# --- export failures and retries -----------------------------------------------------------------


async def test_transient_failures_are_retried_whole_and_in_order_before_later_batches() -> None:
    seen: list[tuple[str, ...]] = []
    faults = iter([Fault.transient(), Fault.transient()])

    def script(index: int, batch: Sequence[SpanRecord]) -> Fault | None:
        seen.append(names(batch))
        return next(faults, None)

    inner = MemoryExporter()
    exporter = FaultyExporter(inner, script)
    async with open_tracer(
        exporter, max_batch_size=2, flush_interval=NEVER, retry=QUICK_RETRY
    ) as tracer:
        end_spans(tracer, "s0", "s1", "s2", "s3")
        with anyio.fail_after(SAFETY_TIMEOUT):
            report = await tracer.flush()

    assert report.completed
    assert seen == [("s0", "s1")] * 3 + [("s2", "s3")]
    assert names(inner.records) == ("s0", "s1", "s2", "s3")
    lane = tracer.stats().lanes[0]
    assert (lane.exported, lane.retries, lane.batches) == (4, 2, 2)
    assert lane.dropped == {}


async def test_start_records_stay_before_end_records_across_retries() -> None:
    inner = MemoryExporter(wants_starts=True)
    exporter = FaultyExporter(inner, [Fault.transient()])
    async with open_tracer(
        exporter, max_batch_size=2, flush_interval=NEVER, retry=QUICK_RETRY
    ) as tracer:
        with tracer.span("a"), tracer.span("b"):
            pass
        await tracer.flush()
    assert [(r.name, r.is_start) for r in inner.records] == [
        ("a", True),
        ("b", True),
        ("b", False),
        ("a", False),
    ]


async def test_retry_after_from_the_exporter_wins_over_the_policy_backoff() -> None:
    # The policy alone would wait an hour before the retry; the exporter asks for 1 ms.
    slow_policy = RetryPolicy(initial_backoff=NEVER, max_backoff=NEVER, jitter=0.0)
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.transient(retry_after=0.001)])
    async with open_tracer(
        exporter, flush_interval=NEVER, export_timeout=NEVER, retry=slow_policy
    ) as tracer:
        end_spans(tracer, "s0")
        with anyio.fail_after(SAFETY_TIMEOUT):
            report = await tracer.flush()
    assert report.completed
    assert names(inner.records) == ("s0",)
    assert tracer.stats().lanes[0].retries == 1


async def test_retry_after_is_capped_at_max_backoff() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.transient(retry_after=NEVER)])
    async with open_tracer(
        exporter, flush_interval=NEVER, export_timeout=NEVER, retry=QUICK_RETRY
    ) as tracer:
        end_spans(tracer, "s0")
        with anyio.fail_after(SAFETY_TIMEOUT):
            report = await tracer.flush()
    assert report.completed
    assert names(inner.records) == ("s0",)


async def test_batch_is_dropped_as_retries_exhausted_after_max_attempts() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, lambda index, batch: Fault.transient())
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.001)
    async with open_tracer(
        exporter, max_batch_size=2, flush_interval=NEVER, retry=policy
    ) as tracer:
        end_spans(tracer, "s0", "s1")
        report = await tracer.flush()
        assert report.completed
        lane = report.stats.lanes[0]
        assert dict(lane.dropped) == {DropReason.RETRIES_EXHAUSTED: 2}
        assert lane.retries == 2
        assert len(exporter.calls) == 3
        assert_accounting(tracer)
    assert inner.records == []


async def test_export_timeout_after_retryable_failures_counts_retries_exhausted() -> None:
    exporter = FaultyExporter(script=[Fault.transient(), Fault.hang()])
    async with open_tracer(
        exporter, flush_interval=NEVER, export_timeout=0.05, retry=QUICK_RETRY
    ) as tracer:
        end_spans(tracer, "s0")
        await tracer.flush()
        assert dict(tracer.stats().lanes[0].dropped) == {DropReason.RETRIES_EXHAUSTED: 1}
        assert_accounting(tracer)


async def test_non_retryable_exception_drops_the_batch_as_export_failed_without_retry() -> None:
    exporter = FaultyExporter(script=[Fault.permanent()])
    async with open_tracer(exporter, flush_interval=NEVER, retry=QUICK_RETRY) as tracer:
        end_spans(tracer, "s0", "s1")
        await tracer.flush()
        lane = tracer.stats().lanes[0]
        assert dict(lane.dropped) == {DropReason.EXPORT_FAILED: 2}
        assert lane.retries == 0
        assert len(exporter.calls) == 1


async def test_hanging_export_is_dropped_as_export_timeout() -> None:
    inner = MemoryExporter()
    exporter = FaultyExporter(inner, [Fault.hang()])
    async with open_tracer(
        exporter, max_batch_size=1, flush_interval=NEVER, export_timeout=0.01
    ) as tracer:
        end_spans(tracer, "s0", "s1")
        await tracer.flush()
        lane = tracer.stats().lanes[0]
        assert dict(lane.dropped) == {DropReason.EXPORT_TIMEOUT: 1}
        assert lane.exported == 1
        assert_accounting(tracer)
    assert names(inner.records) == ("s1",)


class _RaisingThenWorking:
    """Raises an unexpected exception type on the first call, works afterwards."""

    def __init__(self) -> None:
        self.records: list[SpanRecord] = []
        self.calls = 0

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError("a bug in the exporter")
        self.records.extend(batch)


async def test_exporter_exception_never_kills_the_worker() -> None:
    exporter = _RaisingThenWorking()
    async with open_tracer(exporter, max_batch_size=1, flush_interval=NEVER) as tracer:
        end_spans(tracer, "s0", "s1", "s2")
        report = await tracer.flush()
        assert report.completed
        lane = report.stats.lanes[0]
        assert dict(lane.dropped) == {DropReason.EXPORT_FAILED: 1}
        assert lane.exported == 2
        end_spans(tracer, "s3")
        await tracer.flush()
    assert names(exporter.records) == ("s1", "s2", "s3")
    assert tracer.stats().lanes[0].exporter == "_RaisingThenWorking"


class _Rejecting:
    """Reports a fixed partial-success value for every batch."""

    def __init__(self, result: object) -> None:
        self.result = result

    async def export(self, batch: Sequence[SpanRecord]) -> object:
        return self.result


@pytest.mark.parametrize(
    ("result", "rejected"),
    [
        pytest.param(2, 2, id="some"),
        pytest.param(10, 3, id="more-than-the-batch"),
        pytest.param(0, 0, id="zero"),
        pytest.param(-1, 0, id="negative"),
        pytest.param(True, 0, id="bool-is-not-a-count"),
        pytest.param(None, 0, id="none"),
    ],
)
async def test_partial_success_int_counts_rejected_records(result: object, rejected: int) -> None:
    async with open_tracer(_Rejecting(result), flush_interval=NEVER) as tracer:
        end_spans(tracer, "s0", "s1", "s2")
        await tracer.flush()
        lane = tracer.stats().lanes[0]
        assert lane.exported == 3 - rejected
        assert dict(lane.dropped) == ({DropReason.REJECTED: rejected} if rejected else {})
        assert lane.batches == 1
        assert_accounting(tracer)


# --- isolation and accounting --------------------------------------------------------------------


async def test_hanging_exporter_on_one_lane_does_not_stop_another() -> None:
    hanging = FaultyExporter(script=lambda index, batch: Fault.hang())
    good = GatedExporter("good", open=True)
    async with open_tracer(
        hanging,
        good,
        max_batch_size=1,
        flush_interval=NEVER,
        export_timeout=NEVER,
        drain_timeout=0.01,
    ) as tracer:
        end_spans(tracer, "s0")
        assert await good.next_export() == ("s0",)
        end_spans(tracer, "s1")
        assert await good.next_export() == ("s1",)
        await anyio.wait_all_tasks_blocked()
        hang_stats, good_stats = tracer.stats().lanes
        assert (hang_stats.in_flight, hang_stats.queued, hang_stats.exported) == (1, 1, 0)
        assert good_stats.exported == 2
        assert_accounting(tracer)
    hang_stats, good_stats = tracer.stats().lanes
    assert dict(hang_stats.dropped) == {DropReason.SHUTDOWN_TIMEOUT: 2}
    assert good_stats.dropped == {}
    assert names(good.records) == ("s0", "s1")


async def test_accounting_identity_holds_at_every_step() -> None:
    exporter = GatedExporter()
    async with open_tracer(
        exporter, buffer_size=3, max_batch_size=2, flush_interval=NEVER
    ) as tracer:
        assert_accounting(tracer)
        end_spans(tracer, "s0", "s1")
        assert_accounting(tracer)
        await exporter.next_export()  # s0, s1 in flight
        assert_accounting(tracer)
        end_spans(tracer, "s2", "s3", "s4", "s5", "s6")  # three queued, two dropped
        assert_accounting(tracer)
        lane = tracer.stats().lanes[0]
        assert (lane.offered, lane.in_flight, lane.queued, lane.dropped_total) == (7, 2, 3, 2)
        exporter.gate.set()
        await tracer.flush()
        assert_accounting(tracer)
    assert_accounting(tracer)
    lane = tracer.stats().lanes[0]
    assert (lane.queued, lane.in_flight, lane.exported) == (0, 0, 5)


async def test_stats_name_the_exporter_by_its_name_attribute() -> None:
    async with open_tracer(MemoryExporter(name="mine"), FaultyExporter()) as tracer:
        assert [lane.exporter for lane in tracer.stats().lanes] == [
            "mine",
            "Faulty(MemoryExporter)",
        ]
        assert [lane.name for lane in lanes_of(tracer)] == ["mine", "Faulty(MemoryExporter)"]


# --- warnings ------------------------------------------------------------------------------------


def _drop_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[str]:
    for record in caplog.records:
        if record.name == "spanlane" and record.levelno == logging.WARNING:
            yield record.getMessage()


async def test_drop_warnings_are_rate_limited_per_reason_and_lane(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="spanlane")
    first = GatedExporter("first")
    second = GatedExporter("second")
    async with open_tracer(
        first, second, buffer_size=1, max_batch_size=1, flush_interval=NEVER
    ) as tracer:
        end_spans(tracer, "s0")
        await first.next_export()
        await second.next_export()
        end_spans(tracer, "s1", "s2", "s3", "s4")  # three drops on each lane

        messages = list(_drop_warnings(caplog))
        assert len(messages) == 2
        assert sum("'first'" in message for message in messages) == 1
        assert sum("'second'" in message for message in messages) == 1
        assert all("queue_full" in message for message in messages)
        first.gate.set()
        second.gate.set()


async def test_another_drop_reason_gets_its_own_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spanlane")
    exporter = FaultyExporter(script=[Fault.permanent(), Fault.hang()])
    async with open_tracer(
        exporter,
        buffer_size=1,
        max_batch_size=1,
        flush_interval=NEVER,
        export_timeout=NEVER,
        drain_timeout=0.01,
    ) as tracer:
        end_spans(tracer, "s0")
        await tracer.flush()  # s0 fails for good
        end_spans(tracer, "s1")
        await anyio.wait_all_tasks_blocked()  # s1 hangs in export
        end_spans(tracer, "s2", "s3", "s4")  # one queued, two dropped
        messages = list(_drop_warnings(caplog))
        assert len(messages) == 2
        assert "export_failed" in messages[0]
        assert "queue_full" in messages[1]


async def test_every_drop_warns_when_the_warning_interval_is_zero(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spanlane._lane, "WARNING_INTERVAL", 0.0)
    caplog.set_level(logging.WARNING, logger="spanlane")
    exporter = GatedExporter()
    async with open_tracer(
        exporter, buffer_size=1, max_batch_size=1, flush_interval=NEVER
    ) as tracer:
        end_spans(tracer, "s0")
        await exporter.next_export()
        end_spans(tracer, "s1", "s2", "s3", "s4")
        assert len(list(_drop_warnings(caplog))) == 3
        exporter.gate.set()
