"""Tail sampling: traces held until they can be judged whole, the rules, the bounds, the exit.

Time never decides a test here: durations come from explicit start and end times, and
``decision_wait`` is driven by a fake clock given to the stage (one test lets the real timer
fire, and waits for the outcome, not for a duration).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from spanlane import (
    SpanContext,
    SpanProcessor,
    SpanRecord,
    Stats,
    StatusCode,
    open_tracer,
)
from spanlane.exporters import MemoryExporter
from spanlane.sampling import ALWAYS_OFF, TailSampling

pytestmark = pytest.mark.anyio

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def names(exporter: MemoryExporter) -> list[str]:
    return sorted(record.name for record in exporter.spans)


def balanced(stats: Stats) -> bool:
    """Every ended span is offered to the lanes, discarded, or held (no processor errors)."""
    lane = stats.lanes[0]
    return (
        stats.spans_ended == lane.offered + stats.spans_sampled_out_tail + stats.spans_pending_tail
    )


def remote(trace_id: int) -> SpanContext:
    """A sampled remote parent: the span continuing it is a local root of ``trace_id``."""
    return SpanContext(trace_id, 0xF00D, trace_flags=1, is_remote=True)


async def test_a_trace_with_an_error_is_kept_whole_and_others_are_discarded() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, tail=TailSampling(keep_errors=True)) as tracer:
        with tracer.span("fine root"), tracer.span("fine child"):
            pass
        with tracer.span("failing root"):
            with tracer.span("fine sibling"):
                pass
            with tracer.span("failing child") as child:
                child.set_status(StatusCode.ERROR, "it broke")
        report = await tracer.flush()
        assert names(exporter) == ["failing child", "failing root", "fine sibling"]
        assert report.stats.spans_sampled_out == report.stats.spans_sampled_out_tail == 2
        assert report.stats.spans_pending_tail == 0
        assert balanced(report.stats)


async def test_keep_errors_off_discards_failing_traces() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, tail=TailSampling(keep_errors=False)) as tracer:
        with pytest.raises(ValueError, match="boom"), tracer.span("root"):
            raise ValueError("boom")
    assert exporter.spans == []
    assert tracer.stats().spans_sampled_out == 1


async def test_a_slow_local_root_keeps_its_trace() -> None:
    exporter = MemoryExporter()
    tail = TailSampling(keep_errors=False, keep_slower_than=2.0)
    async with open_tracer(exporter, tail=tail) as tracer:
        for name, seconds in (("slow", 2), ("quick", 1)):
            root = tracer.start_span(name, start_time_ns=T0)
            child = tracer.start_span(f"{name} child", parent=root, start_time_ns=T0)
            child.end(T0 + SECOND // 2)
            root.end(T0 + seconds * SECOND)
        # A remote parent makes a local root too.
        server = tracer.start_span("slow server", parent=remote(7), start_time_ns=T0)
        server.end(T0 + 3 * SECOND)
    assert names(exporter) == ["slow", "slow child", "slow server"]


async def test_keep_ratio_keeps_trace_ids_by_the_ratio_rule() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, tail=TailSampling(keep_ratio=0.5)) as tracer:
        # The rule looks at the low 64 bits: below 2**63 is in, above is out.
        for name, trace_id in (("in", (5 << 64) | 1), ("out", (5 << 64) | (1 << 63) + 1)):
            with tracer.span(name, parent=remote(trace_id)), tracer.span(f"{name} child"):
                pass
    assert names(exporter) == ["in", "in child"]


async def test_stragglers_follow_the_decision_of_their_trace() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, tail=TailSampling()) as tracer:
        kept_root = tracer.start_span("kept root")
        kept_late = tracer.start_span("kept straggler", parent=kept_root)
        kept_root.set_status(StatusCode.ERROR)
        kept_root.end()  # decided now: kept
        dropped_root = tracer.start_span("dropped root")
        dropped_late = tracer.start_span("dropped straggler", parent=dropped_root)
        dropped_root.end()  # decided now: discarded
        dropped_late.set_status(StatusCode.ERROR)  # too late to change the decision
        dropped_late.end()
        kept_late.end()
        stats = (await tracer.flush()).stats
    assert names(exporter) == ["kept root", "kept straggler"]
    assert stats.spans_sampled_out_tail == 2
    assert balanced(stats)


async def test_a_full_stage_decides_its_oldest_trace_at_once() -> None:
    exporter = MemoryExporter()
    tail = TailSampling(max_pending_spans=2)
    async with open_tracer(exporter, tail=tail) as tracer:
        roots = [tracer.start_span(f"root {n}") for n in range(3)]
        first = tracer.start_span("first child", parent=roots[0])
        first.set_status(StatusCode.ERROR)
        first.end()
        tracer.start_span("second child", parent=roots[1]).end()
        assert tail.pending() == 2
        assert tracer.stats().spans_pending_tail == 2
        # A third record: the oldest trace is judged by its spans so far (an error: kept).
        tracer.start_span("third child", parent=roots[2]).end()
        assert tail.pending() == 2
        await tracer.flush()
        assert names(exporter) == ["first child"]
        roots[0].end()  # a straggler of a kept trace
        for root in roots[1:]:
            root.end()
        stats = (await tracer.flush()).stats
    assert names(exporter) == ["first child", "root 0"]
    assert stats.spans_sampled_out_tail == 4
    assert balanced(stats)


async def test_a_trace_whose_root_does_not_end_is_judged_after_decision_wait() -> None:
    clock = FakeClock()
    exporter = MemoryExporter()
    tail = TailSampling(decision_wait=5.0, clock=clock)
    async with open_tracer(exporter, tail=tail) as tracer:
        with tracer.span("long-lived root"):
            failing = tracer.start_span("failing child")
            failing.set_status(StatusCode.ERROR)
            failing.end()
            others = [tracer.start_span(f"other root {n}", parent=remote(n + 9)) for n in (0, 1)]
            clock.now = 4.9
            tracer.start_span("other child 0", parent=others[0]).end()
            assert tail.pending() == 2  # not due yet
            clock.now = 5.0
            # A new trace's first record is an arrival that judges what is due.
            tracer.start_span("other child 1", parent=others[1]).end()
            assert tail.pending() == 2  # the failing child was handed on; two others wait
            await tracer.flush()
            assert names(exporter) == ["failing child"]
            for other in others:
                other.end()
    assert names(exporter) == ["failing child", "long-lived root"]  # the root followed


class Arrivals(MemoryExporter):
    """A memory exporter that lets a test wait for a record by name."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = anyio.Event()

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        await super().export(batch)
        self.arrived.set()
        self.arrived = anyio.Event()


async def test_the_timer_judges_traces_when_no_record_arrives() -> None:
    exporter = Arrivals()
    tail = TailSampling(decision_wait=0.01)
    async with open_tracer(exporter, tail=tail, max_batch_size=1) as tracer:
        root = tracer.start_span("root that stays open")
        child = tracer.start_span("failing child", parent=root)
        child.set_status(StatusCode.ERROR)
        child.end()
        with anyio.fail_after(10):  # a bound on a hang, not a measurement
            while not exporter.spans:
                await exporter.arrived.wait()
        assert names(exporter) == ["failing child"]
        assert tail.pending() == 0
        root.end()


async def test_pending_traces_are_judged_and_flushed_at_exit() -> None:
    exporter = MemoryExporter()
    tail = TailSampling(keep_ratio=1.0)
    # A parent in this process that nobody records: its trace has no local root here.
    unrecorded = SpanContext(0xBEEF, 0xCAFE, trace_flags=1)
    async with open_tracer(exporter, tail=tail, buffer_size=4, max_batch_size=4) as tracer:
        for n in range(50):
            tracer.start_span(f"orphan {n}", parent=unrecorded).end()
        open_root = tracer.start_span("root left open")
        tracer.start_span("child of the open root", parent=open_root).end()
        stats = tracer.stats()
        assert stats.spans_pending_tail == 51
        assert balanced(stats)
        await tracer.flush()
        assert exporter.spans == []  # flush() forces no decision
    stats = tracer.stats()
    # At exit, the stage waits for room in the small lane: nothing is dropped.
    assert len(exporter.spans) == 52
    assert stats.spans_pending_tail == 0
    assert not stats.dropped
    assert balanced(stats)
    (unfinished,) = [r for r in exporter.spans if r.name == "root left open"]
    assert unfinished.attributes["spanlane.unfinished"] is True


async def test_lanes_that_want_starts_get_none_under_tail_sampling() -> None:
    exporter = MemoryExporter(wants_starts=True)
    async with open_tracer(exporter, tail=TailSampling(keep_ratio=1.0)) as tracer:
        with tracer.span("root"), tracer.span("child"):
            pass
    assert [record.is_start for record in exporter.records] == [False, False]


class SeesEverything(SpanProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def on_end(self, record: SpanRecord) -> None:
        self.seen.append(record.name)
        self.forward_end(record)


async def test_processors_run_before_the_tail_stage_and_see_every_recorded_span() -> None:
    exporter = MemoryExporter()
    before = SeesEverything()
    async with open_tracer(exporter, processors=[before], tail=TailSampling()) as tracer:
        with tracer.span("discarded"):
            pass
        with tracer.span("not sampled", parent=SpanContext(1, 2, trace_flags=0, is_remote=True)):
            pass
    assert before.seen == ["discarded"]  # unsampled spans never become records
    assert exporter.spans == []
    assert tracer.stats().spans_sampled_out == 2


async def test_head_and_tail_sampling_combine() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, sampler=ALWAYS_OFF, tail=TailSampling()) as tracer:
        with tracer.span("x") as span:
            span.set_status(StatusCode.ERROR)
    stats = tracer.stats()
    assert stats.spans_ended == 0
    assert stats.spans_sampled_out == 1
    assert stats.spans_sampled_out_tail == 0


def test_tail_sampling_refuses_bad_arguments() -> None:
    for kwargs, error in (
        ({"keep_errors": 1}, TypeError),
        ({"keep_slower_than": -1}, ValueError),
        ({"keep_slower_than": float("inf")}, ValueError),
        ({"keep_slower_than": 1e300}, ValueError),  # no span lasts longer than 2**64 ns
        ({"keep_slower_than": "1"}, TypeError),
        ({"keep_ratio": 2}, ValueError),
        ({"keep_ratio": None}, TypeError),
        ({"max_pending_spans": 0}, ValueError),
        ({"max_pending_spans": 1.5}, TypeError),
        ({"max_pending_spans": True}, TypeError),
        ({"decision_wait": 0}, ValueError),
        ({"decision_wait": 1e-320}, ValueError),  # the timer would spin
        ({"decision_wait": float("nan")}, ValueError),
        ({"clock": 1}, TypeError),
    ):
        with pytest.raises(error):
            TailSampling(**kwargs)


def test_open_tracer_refuses_a_tail_it_cannot_use() -> None:
    with pytest.raises(TypeError, match="tail"):
        open_tracer(MemoryExporter(), tail=SeesEverything())  # type: ignore[arg-type]
    tail = TailSampling()
    with pytest.raises(ValueError, match="processors"):
        open_tracer(MemoryExporter(), processors=[tail], tail=tail)
    open_tracer(MemoryExporter(), tail=tail)
    with pytest.raises(ValueError, match="another tracer"):
        open_tracer(MemoryExporter(), tail=tail)
    assert "keep_ratio=0.0" in repr(tail)
