"""Property-based tests: whole generated programs against spanlane's promises.

Each test draws a tracer configuration with a fault model per lane and a program for several
concurrent producers (see ``tests/strategies.py``), runs it with :func:`run_case` on asyncio and
on trio, and checks one property of what happened (see ``properties.py``).
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import example, given

from spanlane import RetryPolicy, SpanLimits
from spanlane.testing import Fault
from strategies import (
    Case,
    Checkpoint,
    EndSpan,
    Exit,
    Flush,
    LaneSpec,
    Program,
    RaiseInSpan,
    StartSpan,
    TracerConfig,
    cases,
    deterministic_cases,
    sampling_cases,
)

from .conftest import fuzz_settings
from .interpreter import BACKENDS, Backend, run_case
from .properties import (
    check_accounting,
    check_drain_or_cancel,
    check_equivalent,
    check_integrity,
    check_no_loss,
    check_order,
    check_sampling,
)

pytestmark = pytest.mark.fuzz

on_both_backends = pytest.mark.parametrize("backend", BACKENDS)

# --- regressions: shrunk counterexamples of bugs the suite found -------------------------------

#: The configuration both shrunk counterexamples came with: a span may hold three attributes.
_THREE_ATTRIBUTES = TracerConfig(
    lanes=(LaneSpec(),),
    buffer_size=1,
    max_batch_size=1,
    flush_interval=0.001,
    on_full="drop",
    wait_timeout=0.001,
    drain_timeout=0.1,
    export_timeout=0.05,
    retry=RetryPolicy(max_attempts=1, initial_backoff=0.001, max_backoff=0.004, jitter=0.0),
    limits=SpanLimits(max_attributes=3),
)

#: A span left open holds max_attributes attributes: the tracer's ``spanlane.unfinished`` mark
#: went through set_attribute() and was dropped by the limit, so the record did not say the span
#: was never ended.
UNFINISHED_MARK_DROPPED = Case(
    config=_THREE_ATTRIBUTES,
    program=Program(
        producers=(
            (StartSpan(parent=None, attributes=(("a", False), ("0", False), ("00", False))),),
        )
    ),
)

#: The same for ``spanlane.cancelled``: a full span cancelled inside its ``with`` block (here by a
#: sibling producer's exception) lost the mark.
CANCELLED_MARK_DROPPED = Case(
    config=_THREE_ATTRIBUTES,
    program=Program(
        producers=(
            (),
            (
                RaiseInSpan(
                    checkpoint=True,
                    attributes=(("a", False), ("b", False), ("http.route", False)),
                ),
            ),
        ),
        exit=Exit(how="raise", at=(0, 0)),
    ),
)


@on_both_backends
@fuzz_settings()
@given(case=cases())
def test_every_record_is_exported_or_counted_dropped(backend: Backend, case: Case) -> None:
    """Accounting: after the tracer has closed, for every lane ``offered == exported +
    sum(dropped.values())`` and ``queued == in_flight == 0``; every span the program started was
    offered to every lane (its end record, and its start record where the exporter wants starts);
    and the exporter received exactly the records counted as exported, each once. Where the fault
    model made an export deliver its batch and then fail, delivery is at-least-once instead: every
    record counted as exported was received, possibly more than once."""
    check_accounting(run_case(case, backend))


@on_both_backends
@fuzz_settings()
@given(case=cases(lossless=True))
def test_nothing_is_lost_without_a_cause(backend: Backend, case: Case) -> None:
    """No silent loss: with no permanent fault, no hang, a buffer large enough for the program and
    more retries than transient faults, nothing is dropped and every span (start and end where
    asked for) reaches every lane, whichever way the body is left."""
    check_no_loss(run_case(case, backend))


@on_both_backends
@fuzz_settings()
@given(case=cases())
def test_each_lane_keeps_the_order_records_were_offered_in(backend: Backend, case: Case) -> None:
    """Order: each lane forms batches as contiguous runs of the order it accepted records in and
    starts their export calls in that order; no record is in two batches (a batch is sent again
    only as a retry of itself); no more exports run at once than ``max_concurrent_exports``, and
    with one at a time each batch, retries included, is done before the next begins; for
    exporters that want starts, a span's start record is offered before its end record, and the
    batch holding the end begins only once the batch holding the start has finished."""
    check_order(run_case(case, backend))


#: Not a spanlane bug but a subtle path the interpreter's model once got wrong: the body of an
#: ``async with`` span raises, the span ends as an error, and with ``on_full="wait"`` its
#: ``__aexit__`` is then cancelled (by a sibling's exception) while waiting for room. The record
#: must say "error", not "cancelled": the cancellation arrived after the span had ended.
#: (Shrunk on trio, where it depended on scheduling; made deterministic here: the first export
#: hangs, the buffer fills up, and the sibling yields long enough before raising.)
ERROR_THEN_CANCELLED_WHILE_WAITING = Case(
    config=attrs.evolve(
        _THREE_ATTRIBUTES,
        lanes=(LaneSpec(script=(Fault.hang(),)),),
        on_full="wait",
        wait_timeout=1.0,
        limits=SpanLimits(),
    ),
    program=Program(
        producers=(
            (Checkpoint(),) * 6,
            (
                StartSpan(),
                EndSpan(),
                Checkpoint(),  # the worker takes that span's record; its export hangs
                StartSpan(),
                EndSpan(target=1),  # this one fills the buffer
                RaiseInSpan(asynchronous=True),
            ),
        ),
        exit=Exit(how="raise", at=(0, 6)),
    ),
)


@on_both_backends
@fuzz_settings()
@given(case=cases())
@example(case=UNFINISHED_MARK_DROPPED)
@example(case=CANCELLED_MARK_DROPPED)
@example(case=ERROR_THEN_CANCELLED_WHILE_WAITING)
def test_records_are_faithful_and_immutable(backend: Backend, case: Case) -> None:
    """Integrity: span and trace ids are non-zero and unique (a new trace per root); every record's
    parent is the span the program named, in the same trace; every record carries exactly the
    attributes, drop counts and events the program set before it was offered (hostile keys and
    values coerced or dropped and counted), and nothing done afterwards, mutating the values
    handed over or calling setters on the ended span, changes it."""
    check_integrity(run_case(case, backend))


#: The slowest exit there is, always run: one exporter hangs in export() and in aclose(), the
#: other wants starts, a span is left open, and an enclosing scope is cancelled.
EVERYTHING_HANGS = Case(
    config=TracerConfig(
        lanes=(LaneSpec(script=(Fault.hang(),), hang_on_close=True), LaneSpec(wants_starts=True)),
        max_batch_size=1,
        drain_timeout=0.2,
        export_timeout=10.0,
    ),
    program=Program(
        producers=((StartSpan(), EndSpan(), StartSpan(parent=0), Flush(timeout=0.05)),),
        exit=Exit(how="cancel"),
    ),
)


@on_both_backends
@fuzz_settings()
@given(case=cases())
@example(case=UNFINISHED_MARK_DROPPED)
@example(case=EVERYTHING_HANGS)
def test_leaving_the_tracer_drains_or_cancels_in_time(backend: Backend, case: Case) -> None:
    """Drain or cancel: leaving ``open_tracer()`` normally, by an exception or by cancellation
    takes at most ``drain_timeout`` plus the exporters' aclose grace period plus a generous margin,
    even when an exporter hangs; the body's exception or cancellation comes out unchanged (the
    same object); spans still open were ended, marked ``spanlane.unfinished``, and offered to every
    lane (and exported, on a lane that dropped nothing)."""
    check_drain_or_cancel(run_case(case, backend))


@fuzz_settings()
@given(case=deterministic_cases())
def test_asyncio_and_trio_export_the_same_records(case: Case) -> None:
    """Backend equivalence: a program whose outcome does not depend on scheduling (no loss, no
    redelivery, no exit while producers run) exports the same multiset of records per lane on
    asyncio and on trio, compared by name, phase, parent, attributes, events, status and drop
    counts rather than by random ids and times."""
    check_equivalent(run_case(case, "asyncio"), run_case(case, "trio"))


@on_both_backends
@fuzz_settings()
@given(case=sampling_cases())
def test_every_ended_span_is_exported_dropped_sampled_out_or_pending(
    backend: Backend, case: Case
) -> None:
    """Sampling: whatever the head sampler (the default, ALWAYS_OFF, a ratio, one that decides
    by name, one that raises) and the tail stage (any rules, any bounds, any decision_wait), a
    span the sampler did not sample is real (a valid context, flags without "sampled", in its
    parent's trace) and no record of it reaches a lane; every ended recording span is offered
    to every lane (then exported or dropped with a reason), counted at the door past the drain
    deadline, discarded by the tail stage, or held by it (none after exit), and the counters
    say so (``spans_sampled_out``, ``sampler_errors``); and a trace the tail stage keeps is
    kept whole: of the spans the program ended, all of a trace's reach the lanes, or none."""
    outcome = run_case(case, backend)
    check_sampling(outcome)
    check_accounting(outcome)
