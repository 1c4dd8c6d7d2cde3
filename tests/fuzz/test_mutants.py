"""The fuzz suite has teeth: deliberately broken lanes, spans and tracers are caught.

Each test installs one mutant for its own duration only (a ``Lane`` subclass patched into the
tracer module, or a monkeypatched method; ``src/`` is never edited), then lets Hypothesis draw
cases from the same strategy the property test uses, and asserts that the property meant to catch
that kind of bug finds a counterexample. A property that no mutant can break proves nothing.

The searches are derandomized and skip shrinking, so they are reproducible and stop at the first
counterexample.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import Any

import anyio
import attrs
import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

import spanlane._ids
import spanlane._lane
import spanlane._tracer
from spanlane import DropReason, RetryableExportError, Span, SpanRecord, Tracer
from spanlane._lane import Flight, Lane
from spanlane._processor import Fanout
from spanlane._span import seal
from spanlane._tail import TailSampling
from spanlane.testing import Fault
from strategies import Case, Injected, cases, deterministic_cases, sampling_cases

from .interpreter import BACKENDS, Backend, Outcome, run_case
from .properties import (
    PropertyViolation,
    check_accounting,
    check_drain_or_cancel,
    check_equivalent,
    check_integrity,
    check_no_loss,
    check_order,
    check_sampling,
)

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.fuzz

#: Examples a search may take before the mutant is declared to have survived.
SEARCH_BUDGET = 200


def hunt(strategy: st.SearchStrategy[Case], check: Callable[[Case], None]) -> PropertyViolation:
    """Search ``strategy`` for a case that ``check`` rejects; return the violation found.

    Raises:
        AssertionError: nothing was found within :data:`SEARCH_BUDGET` examples.
    """

    @settings(
        max_examples=SEARCH_BUDGET,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=False,
    )
    @given(case=strategy)
    def search(case: Case) -> None:
        check(case)

    try:
        search()
    except PropertyViolation as violation:
        return violation
    except FlakyFailure as flaky:
        # The mutant's failure depended on timing and did not repeat on the final replay; it
        # was still a counterexample.
        found = flaky.subgroup(PropertyViolation)
        if found is not None:
            return _first(found)
        raise
    raise AssertionError(f"the mutant survived {SEARCH_BUDGET} examples")


def _first(group: BaseExceptionGroup[PropertyViolation]) -> PropertyViolation:
    inner = group.exceptions[0]
    return inner if isinstance(inner, PropertyViolation) else _first(inner)


def on(backend: Backend, prop: Callable[[Outcome], None]) -> Callable[[Case], None]:
    """A check that runs a case on ``backend`` and applies one property to the outcome."""

    def check(case: Case) -> None:
        prop(run_case(case, backend))

    return check


def on_both(case: Case) -> None:
    check_equivalent(run_case(case, "asyncio"), run_case(case, "trio"))


def install_lane(monkeypatch: pytest.MonkeyPatch, lane_class: type[Lane]) -> None:
    """Make every tracer opened during the test build its lanes from ``lane_class``."""
    monkeypatch.setattr(spanlane._tracer, "Lane", lane_class)


# --- the mutants -----------------------------------------------------------------------------


def _settle_forming(lane: Lane, reason: DropReason | None) -> None:
    """Settle the batch being formed without sending it (as some mutants do)."""
    flight = Flight(-1, lane._taken - len(lane._forming), lane._forming, lane._forming_bytes)
    lane._forming = []
    lane._forming_bytes = 0
    lane._settle(flight, reason)


class LosesFinalPartialBatch(Lane):
    """At shutdown, a batch smaller than ``max_batch_size`` is counted as exported and never sent
    (an "optimisation" that skips the last small export)."""

    def _dispatch(self) -> None:
        if self._closed and len(self._forming) < self._max_batch:
            _settle_forming(self, None)
            return
        super()._dispatch()


class DropsFinalPartialBatch(Lane):
    """At shutdown, a batch smaller than ``max_batch_size`` is dropped, honestly counted as
    ``SHUTDOWN_TIMEOUT``, although there was all the time in the world to send it."""

    def _dispatch(self) -> None:
        if self._closed and len(self._forming) < self._max_batch:
            _settle_forming(self, DropReason.SHUTDOWN_TIMEOUT)
            return
        super()._dispatch()


class DropsFinalPartialBatchOnTrio(DropsFinalPartialBatch):
    """The same, on trio only: a backend difference that no single-backend property notices."""

    def _dispatch(self) -> None:
        if anyio.get_cancelled_exc_class() is trio.Cancelled:  # running on trio
            super()._dispatch()
        else:
            Lane._dispatch(self)


class ReordersRetriedBatch(Lane):
    """A batch that fails transiently gives up its place: the next batch goes first, and the
    failed one is retried once a later batch has been exported (so that one slow batch does not
    hold up the lane)."""

    async def _export(self, flight: Flight, batch: tuple[SpanRecord, ...], first: bool) -> None:
        if first:
            self._pass_turn(flight.seq)
            try:
                result = await self._export_call(batch)
            except RetryableExportError:
                self._retries += 1
                self._flights.pop(flight.seq, None)  # frees its place for the next batch
                self._wake_worker()
                exported = self._batches
                with anyio.move_on_after(0.5):
                    while self._batches == exported:  # noqa: ASYNC110 - a mutant, crude on purpose
                        await anyio.sleep(0.001)
            except BaseException as exc:
                if isinstance(exc, anyio.get_cancelled_exc_class()) and not isinstance(
                    exc, Injected
                ):
                    raise
                self._settle(flight, DropReason.EXPORT_FAILED)
                return
            else:
                self._settle(flight, None, result=result)
                return
        await super()._export(flight, batch, False)


class SwallowsCancellation(Lane):
    """An export cancelled at the drain deadline is assumed to have gone through: the
    cancellation is swallowed and the batch counted as exported."""

    async def _export(self, flight: Flight, batch: tuple[SpanRecord, ...], first: bool) -> None:
        try:
            await super()._export(flight, batch, first)
        except anyio.get_cancelled_exc_class():
            self._settle(flight, None)


class CountsFailedBatchAsExported(Lane):
    """A batch that failed for good is counted as exported."""

    def _settle(
        self,
        flight: Flight,
        reason: DropReason | None,
        detail: str = "",
        result: object = None,
    ) -> None:
        if reason in (
            DropReason.EXPORT_FAILED,
            DropReason.RETRIES_EXHAUSTED,
            DropReason.EXPORT_TIMEOUT,
        ):
            reason = None
        super()._settle(flight, reason, detail, result)


class LetsBaseExceptionsOut(Lane):
    """The lane before core v2: only ``Exception`` from ``export()`` fails a batch; anything
    else (KeyboardInterrupt, SystemExit, a foreign cancellation) escapes the export task. (Retries
    are left out too; the property meant to catch this mutant does not need them.)"""

    async def _export(self, flight: Flight, batch: tuple[SpanRecord, ...], first: bool) -> None:
        if first:
            self._pass_turn(flight.seq)
        try:
            result = await self._export_call(batch)
        except Exception:
            self._settle(flight, DropReason.EXPORT_FAILED)
            return
        self._settle(flight, None, result=result)


class SendsARecordInTwoBatches(Lane):
    """Taking records for a batch leaves the last one at the head of the queue as well (an
    off-by-one in the take loop), so that it goes out again with the next batch."""

    def _fill(self) -> None:
        before = len(self._forming)
        super()._fill()
        if len(self._forming) > before and self._accepted > self._taken:
            self._queue.appendleft(self._forming[-1])
            self._accepted += 1


class IgnoresTheStartBarrier(Lane):
    """Concurrent exports without the start-before-end barrier: a span's end may be sent while
    the batch holding its start is still in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._barrier = False


class LosesInFlightBatchesAtTheDeadline(Lane):
    """At the drain deadline, only the oldest batch in flight is counted ``SHUTDOWN_TIMEOUT``;
    the others are forgotten (the leftover loop stops after one)."""

    def _settle(
        self,
        flight: Flight,
        reason: DropReason | None,
        detail: str = "",
        result: object = None,
    ) -> None:
        if (
            reason is DropReason.SHUTDOWN_TIMEOUT
            and not flight.settled
            and self._flights
            and flight.seq != min(self._flights)
        ):
            flight.settled = True
            self._flights.pop(flight.seq, None)
            return
        super()._settle(flight, reason, detail, result)


def _unpack_forgetting_drop_counts(item: Any, shared: list[object]) -> SpanRecord:
    """Unpacking a packed record that forgets its attribute drop count."""
    record = _original_unpack(item, shared)
    if type(item) is tuple:
        return attrs.evolve(record, dropped_attributes=0)
    return record


_original_unpack = spanlane._lane.unpack  # type: ignore[attr-defined]


_original_fanout_on_end = Fanout.on_end


def _fanout_skipping_the_last_lane(self: Any, record: SpanRecord) -> None:
    """A pipeline's last stage that forgets the last lane whenever there are several."""
    for lane in self._lanes[:-1] if len(self._lanes) > 1 else self._lanes:
        lane.offer_nowait(record)


def _start_record_sharing_attributes(span: Span) -> SpanRecord:
    """The tracer's start_record() that wraps the live attribute dict instead of copying it, so
    later set_attribute() calls show through the start record an exporter already holds."""
    record = _original_start_record(span)
    live = span._rec.attributes
    if type(live) is dict and live:
        object.__setattr__(record, "attributes", MappingProxyType(live))
    return record


_original_start_record = spanlane._tracer.start_record  # type: ignore[attr-defined]


def _seal_unfinished_unmarked(rec: Any) -> SpanRecord:
    """The tracer's seal_unfinished() that forgets the ``spanlane.unfinished`` mark."""
    rec.end_time_ns = time.time_ns()
    return seal(rec)


_original_aexit = Tracer.__aexit__


async def _aexit_swallowing_cancellation(
    self: Tracer,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool:
    """Tracer.__aexit__ that, having drained, reports a cancelled body as handled."""
    await _original_aexit(self, exc_type, exc, tb)
    return exc is not None and isinstance(exc, anyio.get_cancelled_exc_class())


def _tail_forgetting_decisions(self: TailSampling, trace_id: int, keep: bool) -> None:
    """A tail stage that remembers no decision: a straggler starts its trace anew, and may be
    judged otherwise than the spans that went before it."""


async def _tail_shutdown_forgetting_pending(self: TailSampling, deadline: float) -> None:
    """A tail stage whose shutdown hands on nothing: pending traces vanish at exit."""


def _unsampled_span_recording(self: Tracer, *args: Any, **kwargs: Any) -> Span:
    """A tracer whose sampler is never asked: every span records."""
    self._head = 0
    return _original_span(self, *args, **kwargs)


_original_span = Tracer.span


# --- the tests -------------------------------------------------------------------------------


def _lanes(case: Case, **changes: Any) -> Case:
    """``case`` with ``changes`` applied to every lane (to point a search where a mutant bites;
    the property checks stay the same)."""
    lanes = tuple(attrs.evolve(spec, **changes) for spec in case.config.lanes)
    return attrs.evolve(case, config=attrs.evolve(case.config, lanes=lanes))


def _hanging_first(case: Case, hangs: int = 1) -> Case:
    """``case`` with the first lane's first exports hanging (cut by the drain deadline)."""
    first, *rest = case.config.lanes
    first = attrs.evolve(first, script=(Fault.hang(),) * hangs + first.script)
    return attrs.evolve(case, config=attrs.evolve(case.config, lanes=(first, *rest)))


def _sequential(case: Case) -> Case:
    return _lanes(case, max_concurrent_exports=1)


def _packing(case: Case) -> Case:
    return attrs.evolve(case, config=attrs.evolve(case.config, compact_at=1))


def _assert_caught(violation: PropertyViolation, prop: str) -> None:
    assert violation.prop == prop, f"caught by {violation.prop!r}, not {prop!r}: {violation}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_losing_the_final_partial_batch_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, LosesFinalPartialBatch)
    _assert_caught(hunt(cases(), on(backend, check_accounting)), "accounting")


def test_dropping_the_final_partial_batch_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    install_lane(monkeypatch, DropsFinalPartialBatch)
    # Honest accounting hides nothing here; only the promise of no loss is broken.
    _assert_caught(hunt(cases(lossless=True), on("asyncio", check_no_loss)), "no-loss")


@pytest.mark.parametrize("backend", BACKENDS)
def test_reordering_a_retried_batch_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, ReordersRetriedBatch)
    # With several exports in flight a retried batch may legitimately finish after later ones.
    _assert_caught(hunt(cases().map(_sequential), on(backend, check_order)), "order")


@pytest.mark.parametrize("backend", BACKENDS)
def test_swallowing_cancellation_in_an_export_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, SwallowsCancellation)
    strategy = cases().map(_hanging_first)
    _assert_caught(hunt(strategy, on(backend, check_accounting)), "accounting")


@pytest.mark.parametrize("backend", BACKENDS)
def test_counting_a_failed_batch_as_exported_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, CountsFailedBatchAsExported)
    _assert_caught(hunt(cases(), on(backend, check_accounting)), "accounting")


def test_a_start_record_sharing_live_attributes_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spanlane._tracer, "start_record", _start_record_sharing_attributes)
    _assert_caught(hunt(cases(), on("asyncio", check_integrity)), "integrity")


def test_forgetting_the_unfinished_mark_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spanlane._tracer, "seal_unfinished", _seal_unfinished_unmarked)
    _assert_caught(hunt(cases(), on("trio", check_drain_or_cancel)), "drain-or-cancel")


@pytest.mark.parametrize("backend", BACKENDS)
def test_swallowing_the_body_cancellation_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    monkeypatch.setattr(Tracer, "__aexit__", _aexit_swallowing_cancellation)
    _assert_caught(hunt(cases(), on(backend, check_drain_or_cancel)), "drain-or-cancel")


def _exit_and_accounting(outcome: Outcome) -> None:
    check_drain_or_cancel(outcome)
    check_accounting(outcome)


# A SystemExit that this mutant lets out of asyncio's loop ends anyio.run before the producer
# tasks it had created ever ran; their coroutines are then collected never awaited, which is
# the mutant's doing (and which counterexample the search meets first depends on timing).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_letting_an_exporters_base_exception_out_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, LetsBaseExceptionsOut)
    violation = hunt(cases(), lambda case: _exit_and_accounting(run_case(case, backend)))
    # asyncio lets a SystemExit from a task out of the loop: the application sees it. trio's
    # system task turns it into an internal error, or the worker dies: the books say so.
    assert violation.prop in ("drain-or-cancel", "accounting"), violation


def test_a_pipeline_that_skips_a_lane_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Fanout, "on_end", _fanout_skipping_the_last_lane)
    _assert_caught(hunt(cases(), on("asyncio", check_accounting)), "accounting")


def test_a_backend_specific_loss_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    install_lane(monkeypatch, DropsFinalPartialBatchOnTrio)
    # Each backend alone keeps its accounting straight; only the comparison notices.
    _assert_caught(hunt(deterministic_cases(), on_both), "equivalence")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sending_a_record_in_two_batches_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, SendsARecordInTwoBatches)
    _assert_caught(hunt(cases(), on(backend, check_order)), "order")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sending_an_end_before_its_start_was_exported_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, IgnoresTheStartBarrier)
    _assert_caught(hunt(cases(concurrent=True), on(backend, check_order)), "order")


@pytest.mark.parametrize("backend", BACKENDS)
def test_losing_an_in_flight_batch_at_the_drain_deadline_is_caught(
    monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    install_lane(monkeypatch, LosesInFlightBatchesAtTheDeadline)
    strategy = cases(concurrent=True).map(lambda case: _hanging_first(case, hangs=2))
    _assert_caught(hunt(strategy, on(backend, check_accounting)), "accounting")


def test_a_packed_record_unpacked_with_a_field_lost_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spanlane._lane, "unpack", _unpack_forgetting_drop_counts)
    strategy = cases().map(lambda case: _hanging_first(_packing(case)))
    _assert_caught(hunt(strategy, on("asyncio", check_integrity)), "integrity")


def _sampling_and_accounting(backend: Backend) -> Callable[[Case], None]:
    def check(case: Case) -> None:
        outcome = run_case(case, backend)
        check_sampling(outcome)
        check_accounting(outcome)

    return check


def test_a_tail_stage_that_forgets_its_decisions_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TailSampling, "_remember_decision", _tail_forgetting_decisions)
    # Whether a straggler is judged otherwise depends on the trace ids (the ratio rules), which
    # are random: seeded here, so that the search finds the same counterexample every run.
    state = spanlane._ids.id_random.getstate()
    spanlane._ids.id_random.seed(20261201)
    try:
        violation = hunt(sampling_cases(), _sampling_and_accounting("asyncio"))
    finally:
        spanlane._ids.id_random.setstate(state)
    _assert_caught(violation, "sampling")


def test_a_tail_stage_that_loses_pending_traces_at_exit_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TailSampling, "shutdown", _tail_shutdown_forgetting_pending)
    _assert_caught(hunt(sampling_cases(), _sampling_and_accounting("trio")), "sampling")


def test_a_tracer_that_ignores_its_sampler_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Tracer, "span", _unsampled_span_recording)
    _assert_caught(hunt(sampling_cases(), _sampling_and_accounting("asyncio")), "sampling")
