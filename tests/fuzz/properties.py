"""The properties the fuzz suite holds spanlane to, as checks over an :class:`Outcome`.

Each check raises :class:`PropertyViolation` naming its property, so that the mutant tests can
tell which property caught a broken lane. ``docs/testing.md`` states the same guarantees for users.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence

import trio

from spanlane import DropReason, SpanRecord, StatusCode
from spanlane._lane import ACLOSE_GRACE
from spanlane._records import CANCELLED_ATTRIBUTE, UNFINISHED_ATTRIBUTE

from .interpreter import BodyError, Outcome, SpanInfo, normalize, sampler_raises, snapshot

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

#: Seconds allowed on top of ``drain_timeout`` and the aclose grace period for leaving the tracer.
#: Generous on purpose: the property is "bounded", not "fast", and CI machines stall.
EXIT_MARGIN = 5.0


class PropertyViolation(AssertionError):
    """A property does not hold; ``prop`` names which one."""

    def __init__(self, prop: str, message: str) -> None:
        super().__init__(f"[{prop}] {message}")
        self.prop = prop


def _require(prop: str, condition: bool, message: str) -> None:
    if not condition:
        raise PropertyViolation(prop, message)


def _key(record: SpanRecord) -> tuple[int, bool]:
    """A record's identity across copies: its span id and its phase (start or end)."""
    return record.span_id, record.end_time_ns is None


def _describe(record: SpanRecord) -> str:
    phase = "start" if record.end_time_ns is None else "end"
    return f"{record.name}/{phase}"


def _recorded(outcome: Outcome) -> list[SpanInfo]:
    """The spans the head sampler sampled: the only ones that may produce records."""
    return [info for info in outcome.spans if info.sampled]


def _has_tail(outcome: Outcome) -> bool:
    return outcome.case.config.tail is not None


# --- 1. accounting ---------------------------------------------------------------------------


def check_accounting(outcome: Outcome) -> None:
    """Every lane balances (while the program runs too), holds nothing after exit, was offered
    every span, and exported exactly what it counted."""
    prop = "accounting"
    spans = _recorded(outcome)
    tail = _has_tail(outcome)
    discarded = outcome.stats.spans_sampled_out_tail
    _require(prop, not outcome.errors, f"spanlane logged errors: {outcome.errors}")
    _require(
        prop,
        outcome.stats.spans_pending_tail == 0,
        f"the tail stage still holds {outcome.stats.spans_pending_tail} records after exit",
    )
    _require(
        prop,
        not outcome.unbalanced,
        f"while the program ran, counters did not balance: {outcome.unbalanced[:1]}",
    )
    _require(
        prop,
        outcome.stats.spans_started == outcome.stats.spans_ended == len(spans),
        f"{len(spans)} spans started by the program, tracer stats say {outcome.stats}",
    )
    for number, lane in enumerate(outcome.lanes):
        stats = lane.stats
        name = f"lane {number}"
        _require(prop, stats.queued == 0, f"{name}: {stats.queued} records still queued")
        _require(prop, stats.in_flight == 0, f"{name}: {stats.in_flight} records still in flight")
        _require(
            prop,
            stats.offered == stats.exported + stats.dropped_total,
            f"{name}: offered {stats.offered} != exported {stats.exported} + dropped "
            f"{dict(stats.dropped)}",
        )
        # Every recorded span was offered to every lane: one end record, and one start record
        # if the exporter asked for starts (none under tail sampling). A record that never
        # reached a lane is a silent loss, unless the span was still open when the drain
        # deadline passed (then it is counted at the door, SHUTDOWN_TIMEOUT, without being
        # built) or the tail stage discarded it (counted in spans_sampled_out_tail).
        expected = Counter(
            (info.span_id, phase)
            for info in spans
            for phase in ((False, True) if lane.spec.wants_starts and not tail else (False,))
        )
        offered = Counter(_key(record) for record in lane.log.offered)
        missing = expected - offered
        extra = offered - expected
        bulk = lane.log.bulk
        ended_by_program = {info.span_id for info in spans if info.ended}
        # Under tail sampling an ended span may be missing because its trace was discarded;
        # check_sampling holds the stage to keeping or discarding each trace whole.
        lost = [key for key in missing if key[1] or (key[0] in ended_by_program and not tail)]
        _require(
            prop,
            not lost
            and not extra
            and sum(missing.values()) == bulk[DropReason.SHUTDOWN_TIMEOUT] + discarded,
            f"{name}: offered records differ from the spans started: "
            f"{len(missing)} never offered ({len(lost)} of them ended or starts), "
            f"{len(extra)} unexpected, {dict(bulk)} counted at the door, {discarded} discarded "
            "by the tail stage "
            f"({[info.name for info in spans if (info.span_id, False) in missing]} not ended)",
        )
        _require(
            prop,
            stats.offered == len(lane.log.offered) + sum(bulk.values()),
            f"{name}: stats count {stats.offered} offers, the lane was offered "
            f"{len(lane.log.offered)} records and counted {dict(bulk)} at the door",
        )
        # Records a lane packed while they waited reach the exporter as equal copies, so a
        # record is known by its key (each key is offered to a lane at most once).
        accepted = {_key(record) for record in lane.log.accepted}
        delivered = lane.delivered
        strays = [_describe(record) for record in delivered if _key(record) not in accepted]
        _require(prop, not strays, f"{name}: exported records never accepted: {strays}")
        keys = [_key(record) for record in delivered]
        if not lane.redelivered:
            # Exactly once: what the exporter got is what the lane counts as exported.
            _require(
                prop,
                len(delivered) == stats.exported,
                f"{name}: exporter received {len(delivered)} records, lane counts "
                f"{stats.exported} exported",
            )
            _require(prop, len(set(keys)) == len(keys), f"{name}: a record was exported twice")
        else:
            # At-least-once: an export that delivered and then failed is retried (or dropped),
            # so the exporter may hold duplicates, and records counted as dropped.
            _require(
                prop,
                len(set(keys)) >= stats.exported,
                f"{name}: lane counts {stats.exported} exported, exporter received only "
                f"{len(set(keys))} distinct records",
            )
        _require(prop, lane.audit.closed, f"{name}: the exporter's aclose() never ran")


# --- 2. no silent loss -----------------------------------------------------------------------


def check_no_loss(outcome: Outcome) -> None:
    """Under a lossless configuration nothing is dropped and every span reaches every lane.

    The caller guarantees the configuration: no permanent fault, no hang, a buffer that holds
    every record of the program, more attempts than scripted failures.
    """
    prop = "no-loss"
    for number, lane in enumerate(outcome.lanes):
        name = f"lane {number}"
        stats = lane.stats
        _require(prop, not stats.dropped, f"{name}: dropped {dict(stats.dropped)}")
        received = {_key(record) for record in lane.delivered}
        for info in _recorded(outcome):
            _require(
                prop,
                (info.span_id, False) in received,
                f"{name}: the end of span {info.name} never reached the exporter",
            )
            if lane.spec.wants_starts and not _has_tail(outcome):
                _require(
                    prop,
                    (info.span_id, True) in received,
                    f"{name}: the start of span {info.name} never reached the exporter",
                )


# --- 3. order --------------------------------------------------------------------------------


def _batches(events: Iterable[tuple[str, Sequence[SpanRecord]]]) -> list[Sequence[SpanRecord]]:
    """The distinct batches of a lane's export calls (a retry passes the same object), in the
    order of their first call."""
    seen: set[int] = set()
    batches: list[Sequence[SpanRecord]] = []
    for kind, batch in events:
        if kind == "begin" and id(batch) not in seen:
            seen.add(id(batch))
            batches.append(batch)
    return batches


def check_order(outcome: Outcome) -> None:
    """Each lane forms batches as contiguous runs of the order it accepted records in and starts
    their export calls in that order; no record is in two batches (a batch is only ever sent
    again as a retry of itself); no more batches are in flight at once than the lane allows, and
    with one at a time every batch, retries included, is done before the next begins; a span's
    start is offered before its end, and (exporters that want starts) the batch holding its end
    begins only after the batch holding its start has finished."""
    prop = "order"
    for number, lane in enumerate(outcome.lanes):
        name = f"lane {number}"
        position = {_key(record): index for index, record in enumerate(lane.log.accepted)}
        batches = _batches(lane.events)
        index_of = {id(batch): index for index, batch in enumerate(batches)}
        owner: dict[tuple[int, bool], int] = {}
        last = -1
        for index, batch in enumerate(batches):
            keys = [_key(record) for record in batch]
            twice = [key for key in keys if key in owner]
            _require(
                prop,
                not twice,
                f"{name}: a record was sent in two batches: {[_describe(r) for r in batch]}",
            )
            owner.update((key, index) for key in keys)
            indexes = [position.get(key, -1) for key in keys]
            _require(
                prop,
                indexes[0] > last,
                f"{name}: batch {[_describe(r) for r in batch]} came after later records",
            )
            _require(
                prop,
                indexes == list(range(indexes[0], indexes[0] + len(batch))),
                f"{name}: batch {[_describe(r) for r in batch]} is not a run of the queue "
                f"(queue positions {indexes})",
            )
            last = indexes[-1]
        # In flight at once, and when each batch's calls began and ended.
        open_calls = 0
        first_begin: dict[int, int] = {}
        last_end: dict[int, int] = {}
        current = -1
        for step, (kind, batch) in enumerate(lane.events):
            index = index_of[id(batch)]
            if kind == "begin":
                open_calls += 1
                first_begin.setdefault(index, step)
                _require(
                    prop,
                    open_calls <= lane.concurrency,
                    f"{name}: {open_calls} exports in flight, the lane allows {lane.concurrency}",
                )
                if lane.concurrency == 1:
                    _require(
                        prop,
                        index >= current,
                        f"{name}: batch {index} was sent again after batch {current} began "
                        f"(one export at a time keeps batches, retries included, in order)",
                    )
                    current = index
            else:
                open_calls -= 1
                last_end[index] = step
        if lane.spec.wants_starts:
            seen_end: set[int] = set()
            for record in lane.log.offered:
                if record.end_time_ns is None:
                    _require(
                        prop,
                        record.span_id not in seen_end,
                        f"{name}: the start of {record.name} was offered after its end",
                    )
                else:
                    seen_end.add(record.span_id)
            for (span_id, is_start), index in owner.items():
                start_batch = owner.get((span_id, True)) if not is_start else None
                if start_batch is None or start_batch == index:
                    continue
                _require(
                    prop,
                    start_batch < index
                    and last_end.get(start_batch, math.inf) < first_begin[index],
                    f"{name}: the end of span {span_id:x} was sent (batch {index}) before the "
                    f"batch holding its start (batch {start_batch}) had finished",
                )


# --- 4. integrity ----------------------------------------------------------------------------


def _expected_end(info: SpanInfo) -> tuple[dict[str, object], int]:
    """The attributes and attribute drop count the end record of a span must carry."""
    attributes = dict(info.attributes)
    dropped = info.dropped_attributes
    if info.role != "manual" and info.left_by is not None and _is_cancellation(info.left_by):
        attributes[CANCELLED_ATTRIBUTE] = True
    if not info.ended:
        attributes[UNFINISHED_ATTRIBUTE] = True
    return attributes, dropped


def _is_cancellation(exc: BaseException) -> bool:
    """True for either backend's cancellation, also inside an exception group."""
    if isinstance(exc, (asyncio.CancelledError, trio.Cancelled)):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(inner) for inner in exc.exceptions)
    return False


def check_integrity(outcome: Outcome) -> None:
    """Ids are unique and non-zero, parents are spans of the same trace the program started,
    every record carries exactly what the program set before it was offered, unchanged by
    anything done afterwards, and the exporter receives it with exactly those values (also
    when the lane packed it while it waited)."""
    prop = "integrity"
    by_id: dict[int, SpanInfo] = {}
    roots: set[int] = set()
    for info in outcome.spans:
        _require(prop, info.span_id != 0 and info.trace_id != 0, f"{info.name} has a zero id")
        _require(prop, info.span_id not in by_id, f"span id of {info.name} is not unique")
        by_id[info.span_id] = info
        if info.parent is None and info.external is None:
            _require(prop, info.trace_id not in roots, f"root {info.name} reuses a trace id")
            roots.add(info.trace_id)
    for number, lane in enumerate(outcome.lanes):
        name = f"lane {number}"
        for record in lane.log.offered:
            _require(
                prop,
                snapshot(record) == lane.log.at_offer[id(record)],
                f"{name}: {_describe(record)} changed after it was offered",
            )
        offered = {_key(record): record for record in lane.log.offered}
        for record in lane.delivered:
            original = offered.get(_key(record))
            _require(
                prop,
                original is not None and _same(record, original),
                f"{name}: {_describe(record)} reached the exporter changed: {record!r}, offered "
                f"{original!r}",
            )
        for record in lane.log.offered:
            owner = by_id.get(record.span_id)
            _require(prop, owner is not None, f"{name}: {_describe(record)} is no span of ours")
            assert owner is not None
            _check_record(prop, name, record, owner, by_id)


def _same(one: SpanRecord, other: SpanRecord) -> bool:
    """True when two records carry the same values (NaN equal to NaN)."""
    return snapshot(one) == snapshot(other) and (
        one.name,
        one.trace_id,
        one.span_id,
        one.parent_span_id,
        one.kind,
        one.start_time_ns,
        one.end_time_ns,
        one.links,
        one.dropped_links,
        one.resource,
        one.scope,
        one.trace_state,
        one.parent_is_remote,
        one.trace_flags,
        tuple((event.time_ns, event.dropped_attributes) for event in one.events),
    ) == (
        other.name,
        other.trace_id,
        other.span_id,
        other.parent_span_id,
        other.kind,
        other.start_time_ns,
        other.end_time_ns,
        other.links,
        other.dropped_links,
        other.resource,
        other.scope,
        other.trace_state,
        other.parent_is_remote,
        other.trace_flags,
        tuple((event.time_ns, event.dropped_attributes) for event in other.events),
    )


def _check_record(
    prop: str, lane: str, record: SpanRecord, info: SpanInfo, by_id: dict[int, SpanInfo]
) -> None:
    what = f"{lane}: {_describe(record)}"
    _require(prop, record.name == info.name, f"{what}: named {record.name!r}")
    _require(prop, record.trace_id == info.trace_id, f"{what}: wrong trace id")
    if info.external is not None:
        _require(
            prop,
            record.parent_span_id == info.external.span_id
            and record.trace_id == info.external.trace_id
            and record.parent_is_remote == info.external.is_remote,
            f"{what}: does not continue its external parent {info.external}",
        )
    elif record.parent_span_id is None:
        _require(prop, info.parent is None, f"{what}: lost its parent {info.parent}")
    else:
        parent = by_id.get(record.parent_span_id)
        _require(prop, parent is not None, f"{what}: parent is not a span the program started")
        assert parent is not None
        _require(prop, parent is info.parent, f"{what}: parent is {parent.name}")
        _require(prop, parent.trace_id == record.trace_id, f"{what}: parent in another trace")
    if record.end_time_ns is None:
        _require(
            prop,
            normalize(record.attributes) == normalize(info.start_attributes),
            f"{what}: attributes {dict(record.attributes)} != {info.start_attributes}",
        )
        _require(prop, record.dropped_attributes == info.start_dropped, f"{what}: drop count")
        return
    attributes, dropped = _expected_end(info)
    if info.role == "manual":
        _require(
            prop,
            normalize(record.attributes) == normalize(attributes),
            f"{what}: attributes {dict(record.attributes)} != expected {attributes}",
        )
        _require(
            prop,
            record.dropped_attributes == dropped,
            f"{what}: {record.dropped_attributes} attributes dropped, expected {dropped}",
        )
        _require(
            prop,
            len(record.events) == len(info.events),
            f"{what}: {len(record.events)} events, expected {len(info.events)}",
        )
        for event, (event_name, event_attributes, event_dropped) in zip(
            record.events, info.events, strict=True
        ):
            _require(
                prop,
                (event_name is None or event.name == event_name)
                and normalize(event.attributes) == normalize(event_attributes)
                and event.dropped_attributes == event_dropped,
                f"{what}: event {event} != expected {(event_name, event_attributes)}",
            )
        _require(prop, record.dropped_events == info.dropped_events, f"{what}: event drops")
        _require(prop, record.status.code is StatusCode.UNSET, f"{what}: status {record.status}")
    else:
        # A with-span: only the marks of how it was left are predictable.
        for key in (CANCELLED_ATTRIBUTE, UNFINISHED_ATTRIBUTE):
            _require(
                prop,
                (key in record.attributes) == (key in attributes),
                f"{what}: attributes {dict(record.attributes)}, expected {key}: "
                f"{key in attributes}",
            )
        raised = info.left_by is not None and not _is_cancellation(info.left_by)
        _require(
            prop,
            (record.status.code is StatusCode.ERROR) == raised,
            f"{what}: status {record.status} but left by {info.left_by!r}",
        )
        if raised and record.dropped_events == 0:
            _require(
                prop,
                [event.name for event in record.events] == ["exception"],
                f"{what}: events {[event.name for event in record.events]}",
            )


# --- 5. drain or cancel ----------------------------------------------------------------------


def check_drain_or_cancel(outcome: Outcome) -> None:
    """Leaving the tracer is bounded by its deadlines, the body's exception or cancellation
    leaves unchanged, and spans still open were ended as unfinished and offered to every lane."""
    prop = "drain-or-cancel"
    config = outcome.case.config
    bound = config.drain_timeout + ACLOSE_GRACE + EXIT_MARGIN
    _require(
        prop,
        math.isfinite(outcome.exit_seconds) and outcome.exit_seconds <= bound,
        f"leaving the tracer took {outcome.exit_seconds:.2f} s (bound {bound:.2f} s)",
    )
    _require(
        prop,
        outcome.tracer_exc is outcome.body_exc,
        f"the body raised {outcome.body_exc!r}, the tracer let out {outcome.tracer_exc!r}",
    )
    how = outcome.case.program.exit.how
    body_exc = outcome.body_exc
    if how == "normal":
        _require(prop, body_exc is None, f"a normal exit raised {body_exc!r}")
        _require(prop, outcome.escaped is None, f"anyio.run raised {outcome.escaped!r}")
    elif how == "raise":
        _require(
            prop,
            isinstance(body_exc, BodyError)
            or (
                isinstance(body_exc, BaseExceptionGroup)
                and body_exc.subgroup(BodyError) is not None
            ),
            f"the body's BodyError became {body_exc!r}",
        )
        _require(prop, outcome.escaped is body_exc, f"anyio.run raised {outcome.escaped!r}")
    else:
        _require(
            prop,
            body_exc is not None and _is_cancellation(body_exc),
            f"the body was cancelled but raised {body_exc!r}",
        )
        _require(prop, outcome.scope_caught, "the enclosing scope did not catch its cancellation")
        _require(prop, outcome.escaped is None, f"anyio.run raised {outcome.escaped!r}")
    for number, lane in enumerate(outcome.lanes):
        ends = {r.span_id: r for r in lane.log.offered if r.end_time_ns is not None}
        received = {r.span_id for r in lane.delivered if r.end_time_ns is not None}
        # Spans still open when the drain deadline passed are counted, not built.
        unbuilt = lane.log.bulk[DropReason.SHUTDOWN_TIMEOUT]
        never_offered = [info for info in _recorded(outcome) if info.span_id not in ends]
        # The tail stage may discard whole traces, spans ended by the program included.
        discarded = outcome.stats.spans_sampled_out_tail
        _require(
            prop,
            len(never_offered) == unbuilt + discarded
            and (_has_tail(outcome) or not any(info.ended for info in never_offered)),
            f"lane {number}: spans {[info.name for info in never_offered]} were never offered; "
            f"{unbuilt} open spans were counted past the deadline, {discarded} discarded",
        )
        for info in _recorded(outcome):
            record = ends.get(info.span_id)
            what = f"lane {number}: span {info.name}"
            if record is None:
                continue
            _require(
                prop,
                (UNFINISHED_ATTRIBUTE in record.attributes) == (not info.ended),
                f"{what}: ended by the program: {info.ended}, record {dict(record.attributes)}",
            )
            if not lane.stats.dropped:
                _require(prop, info.span_id in received, f"{what} was never exported")


# --- 6. backend equivalence ------------------------------------------------------------------


def _shape(record: SpanRecord, names: dict[int, str]) -> object:
    """A record without what legitimately differs between runs: ids, times, stack traces."""
    return (
        record.name,
        record.end_time_ns is None,
        names.get(record.parent_span_id or 0),
        normalize(record.attributes),
        tuple(
            (
                event.name,
                normalize(
                    {k: v for k, v in event.attributes.items() if k != "exception.stacktrace"}
                ),
                event.dropped_attributes,
            )
            for event in record.events
        ),
        (record.status.code, record.status.description),
        record.kind,
        record.dropped_attributes,
        record.dropped_events,
    )


def exported_shapes(outcome: Outcome) -> list[Counter[object]]:
    """Per lane, the multiset of exported records, compared by shape."""
    names = {info.span_id: info.name for info in outcome.spans}
    return [Counter(_shape(record, names) for record in lane.delivered) for lane in outcome.lanes]


def check_equivalent(first: Outcome, second: Outcome) -> None:
    """Both runs exported the same multiset of records per lane."""
    prop = "equivalence"
    for number, (one, other) in enumerate(
        zip(exported_shapes(first), exported_shapes(second), strict=True)
    ):
        _require(
            prop,
            one == other,
            f"lane {number}: {first.backend} exported {sorted(map(repr, one - other))} that "
            f"{second.backend} did not; {second.backend} exported "
            f"{sorted(map(repr, other - one))} that {first.backend} did not",
        )


# --- 7. sampling -------------------------------------------------------------------------------


def check_sampling(outcome: Outcome) -> None:
    """Unsampled spans are real and record nothing; every ended recording span is exported,
    dropped, sampled out or pending; the tail stage keeps or discards each trace whole."""
    prop = "sampling"
    stats = outcome.stats
    config = outcome.case.config
    unsampled = [info for info in outcome.spans if not info.sampled]
    recorded = {info.span_id for info in outcome.spans if info.sampled}
    for info in outcome.spans:
        context = info.span.context
        _require(prop, context.is_valid, f"{info.name} has an invalid context {context}")
        _require(
            prop,
            context.is_sampled == info.sampled,
            f"{info.name}: sampled {info.sampled}, flags {context.trace_flags:#04x}",
        )
        if info.parent is not None:
            _require(
                prop,
                context.trace_id == info.parent.trace_id,
                f"{info.name} left its parent's trace",
            )
            if config.sampler.value == "default" and not info.parent.sampled:
                _require(prop, not info.sampled, f"{info.name}: sampled under unsampled parent")
        if info.external is not None:
            _require(
                prop,
                context.trace_id == info.external.trace_id,
                f"{info.name} left its external parent's trace",
            )
            if config.sampler.value == "default":
                _require(
                    prop,
                    info.sampled == info.external.is_sampled,
                    f"{info.name}: sampled {info.sampled} under {info.external}",
                )
    _require(
        prop,
        stats.spans_pending_tail == 0,
        f"the tail stage still holds {stats.spans_pending_tail} records after exit",
    )
    raised = sum(1 for info in outcome.spans if sampler_raises(config.sampler, info.name))
    _require(
        prop,
        stats.sampler_errors == raised,
        f"{stats.sampler_errors} sampler errors counted, the sampler raised {raised} times",
    )
    _require(
        prop,
        stats.spans_sampled_out == len(unsampled) + stats.spans_sampled_out_tail,
        f"{len(unsampled)} spans not sampled and {stats.spans_sampled_out_tail} discarded by the "
        f"tail stage, stats say {stats.spans_sampled_out} sampled out",
    )
    _require(
        prop,
        stats.spans_started == stats.spans_ended == len(recorded),
        f"{len(recorded)} recording spans, stats say {stats}",
    )
    for number, lane in enumerate(outcome.lanes):
        strays = {record.span_id for record in lane.log.offered} - recorded
        offered = {record.span_id for record in lane.log.offered if record.end_time_ns is not None}
        _require(prop, not strays, f"lane {number}: records of unsampled spans were offered")
        if config.tail is not None:
            starts = [record for record in lane.log.offered if record.end_time_ns is None]
            _require(prop, not starts, f"lane {number}: start records under tail sampling")
        # Every ended recording span is offered (exported or dropped with a reason), counted at
        # the door past the deadline, discarded by the tail stage, or still held by it.
        missing = len(recorded - offered)
        at_door = lane.log.bulk[DropReason.SHUTDOWN_TIMEOUT]
        _require(
            prop,
            missing == at_door + stats.spans_sampled_out_tail + stats.spans_pending_tail,
            f"lane {number}: {missing} recording spans never offered; {at_door} counted at the "
            f"door, {stats.spans_sampled_out_tail} discarded, {stats.spans_pending_tail} held",
        )
        if config.tail is None:
            continue
        # A kept trace is kept whole: of the spans the program ended (so their records were
        # built and reached the stage), either all of a trace's were offered, or none.
        traces: dict[int, list[SpanInfo]] = {}
        for info in outcome.spans:
            if info.sampled and info.ended:
                traces.setdefault(info.trace_id, []).append(info)
        for members in traces.values():
            kept = [info.name for info in members if info.span_id in offered]
            _require(
                prop,
                not kept or len(kept) == len(members),
                f"lane {number}: a trace was split: {kept} kept, "
                f"{[info.name for info in members if info.span_id not in offered]} discarded",
            )
