"""Runs a drawn :class:`~strategies.Case` on a real tracer and records what happened.

:func:`run_case` builds one exporter per :class:`~strategies.LaneSpec`, an :class:`AuditExporter`
(a memory exporter that also keeps batch boundaries) behind a :class:`FaultyExporter` that plays
the lane's fault script, and opens the tracer with the drawn configuration inside a cancel scope,
under ``anyio.run`` on the given backend. The body starts one task per producer in a task group
(optionally inside a ``body`` span) and each producer executes its ops in order. At the drawn exit
point a producer (or the body, after the task group) raises ``BodyError`` or cancels the scope.

While the program runs, the interpreter keeps a *model* of every span it started: the attributes,
drop counts and events the span must carry, computed from the same calls the program makes, and
whether the program itself ended the span. The lanes' door, ``Lane.offer_nowait`` and
``Lane.count_at_door``, is wrapped (on the class, for this run only) to log what each lane was
offered and what it accepted into its stream, in order, with a snapshot of each record's
attributes at the moment it was offered, and what it counted at the door without a record.

The result, an :class:`Outcome`, holds everything the property checks in ``properties.py`` need:
the model, per lane the offer log, what the exporter received batch by batch, the fault actually
applied to each export call and the lane's statistics, and how and when the body and the tracer
were left.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from spanlane import (
    DropReason,
    LaneStats,
    Span,
    SpanContext,
    SpanKind,
    SpanLimits,
    SpanRecord,
    Stats,
    lane,
    open_tracer,
)
from spanlane._attributes import coerce_attributes, coerce_value
from spanlane._lane import Lane
from spanlane._tracer import Tracer, lanes_of
from spanlane.exporters import MemoryExporter
from spanlane.exporters._base import Exporter, ExportResult
from spanlane.sampling import ALWAYS_OFF, ParentBased, Sampler, TailSampling, TraceIdRatio
from spanlane.testing import Fault, FaultKind, FaultyExporter
from strategies import (
    AddEvent,
    Case,
    Checkpoint,
    EndSpan,
    Flush,
    Injected,
    Items,
    LaneSpec,
    Op,
    Parent,
    RaiseInSpan,
    SamplerSpec,
    SetAttribute,
    SetAttributes,
    StartSpan,
    TailSpec,
    Weird,
)

#: Passing this as ``parent`` starts a new trace even inside a span.
NEW_TRACE = SpanContext(trace_id=0, span_id=0)

#: The external parents a sampling program draws (see ``strategies.External``); their trace
#: ids differ in the low 64 bits, which the ratio rules look at.
EXTERNAL = {
    "remote": SpanContext((0xA1 << 64) | 0x0123, 0x51, trace_flags=1, is_remote=True),
    "remote00": SpanContext((0xA2 << 64) | (0xFEDC << 48), 0x52, trace_flags=0, is_remote=True),
    "detached": SpanContext((0xA3 << 64) | (0x8 << 60), 0x53, trace_flags=1),
}


def _external(parent: object) -> SpanContext | None:
    return parent if isinstance(parent, SpanContext) and parent.is_valid else None


Backend = Literal["asyncio", "trio"]
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")


class BodyError(Exception):
    """What the program raises to leave ``open_tracer()`` by an exception."""


class Boom(Exception):
    """What a :class:`~strategies.RaiseInSpan` op raises inside its span (and catches)."""


# --- hostile values --------------------------------------------------------------------------


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __str__(self) -> str:
        raise RuntimeError("no str either")


class _BadMapping:
    """Looks like a mapping to a type checker in a hurry; ``items()`` raises."""

    def items(self) -> Any:
        raise RuntimeError("items() refuses")


class _LoudStr(str):
    __slots__ = ()

    def __str__(self) -> str:
        return "LOUD"


class _Level(enum.IntEnum):
    HIGH = 3


def materialize(value: object) -> object:
    """A fresh object for a drawn value: programs mutate what they hand over, and the same drawn
    program may run twice (once per backend)."""
    if isinstance(value, Weird):
        if value is Weird.HUGE_STR:
            return "x" * 100_000
        if value is Weird.BIG_INT:
            return 2**70 + 1
        if value is Weird.BAD_REPR:
            return _BadRepr()
        if value is Weird.RECURSIVE_LIST:
            looped: list[object] = [1]
            looped.append(looped)
            return looped
        if value is Weird.STR_SUBCLASS:
            return _LoudStr("quiet")
        if value is Weird.INT_ENUM:
            return _Level.HIGH
        if value is Weird.NESTED:
            return {"a": [1, {"b": (2.5, None)}], "c": {"d": [[]]}}
        if value is Weird.MUTABLE_LIST:
            return [1, 2, 3]
        return _BadMapping()
    return copy.deepcopy(value)


def mutate(value: object) -> None:
    """Change a handed-over value in place, as careless callers do."""
    if isinstance(value, list):
        value.append("changed later")
    elif isinstance(value, dict):
        value["changed later"] = True


def _mapping(items: Items | None) -> dict[Any, object] | None:
    if items is None:
        return None
    return {materialize(key): materialize(value) for key, value in items}


# --- samplers --------------------------------------------------------------------------------


def span_number(name: str) -> int | None:
    """The ``n`` of a span named ``p<i>.<n>`` (or ``p<i>.<n>!``); None for ``body``."""
    if not name.startswith("p"):
        return None
    return int(name.rstrip("!").rpartition(".")[2])


class ByNumber:
    """A deterministic sampler of the fuzz suite: decides by the span's number alone."""

    def __init__(self, *, raises: bool) -> None:
        self.raises = raises

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        number = span_number(name)
        if number is None:
            return True
        if self.raises:
            if number % 4 == 3:
                raise RuntimeError(f"the sampler refuses {name}")
            return True
        return number % 2 == 0


def build_sampler(spec: SamplerSpec) -> Sampler | None:
    """A fresh sampler for a :class:`~strategies.SamplerSpec` (None: the tracer's default)."""
    if spec is SamplerSpec.DEFAULT:
        return None
    if spec is SamplerSpec.ALWAYS_OFF:
        return ALWAYS_OFF
    if spec is SamplerSpec.RATIO:
        return ParentBased(TraceIdRatio(0.5))
    return ByNumber(raises=spec is SamplerSpec.RAISES)


def sampler_raises(spec: SamplerSpec, name: str) -> bool:
    """True when the sampler of ``spec`` raises for a span called ``name``."""
    number = span_number(name)
    return spec is SamplerSpec.RAISES and number is not None and number % 4 == 3


def build_tail(spec: TailSpec | None) -> TailSampling | None:
    if spec is None:
        return None
    return TailSampling(
        keep_errors=spec.keep_errors,
        keep_slower_than=spec.keep_slower_than,
        keep_ratio=spec.keep_ratio,
        max_pending_spans=spec.max_pending_spans,
        decision_wait=spec.decision_wait,
    )


# --- the model -------------------------------------------------------------------------------

SpanRole = Literal["manual", "raise", "body"]


@attrs.define(eq=False)
class SpanInfo:
    """The interpreter's model of one span the program started.

    Attributes:
        span: the live span.
        name: its name: ``p<producer>.<n>`` (``!`` appended for a span an exception left),
            or ``body``.
        role: ``manual`` (started and ended by hand), ``raise`` (a ``with`` span an exception
            or cancellation left), ``body`` (the span around the task group).
        parent: the model of the parent span, or None for a root.
        start_attributes: the attributes the start record must carry.
        start_dropped: the attributes dropped when the span started.
        attributes: the attributes set while the span was open.
        dropped_attributes: attribute drops counted while the span was open.
        events: ``(name or None when the name was not a string, attributes, dropped)`` for every
            event kept while the span was open.
        dropped_events: event drops counted while the span was open.
        ended: the program ended the span (``end``, ``aend``, a thread, or leaving ``with``).
        left_by: for ``with`` spans, the exception that left the block, if any.
        sampled: the head sampler sampled the span (it was recording when it started).
        external: the parent's context when it is no span of the program (a remote context,
            or one of this process that nothing records); ``parent`` is then None.
    """

    span: Span
    name: str
    role: SpanRole
    parent: SpanInfo | None
    start_attributes: dict[str, object] = attrs.Factory(dict)
    start_dropped: int = 0
    attributes: dict[str, object] = attrs.Factory(dict)
    dropped_attributes: int = 0
    events: list[tuple[str | None, dict[str, object], int]] = attrs.Factory(list)
    dropped_events: int = 0
    ended: bool = False
    left_by: BaseException | None = None
    sampled: bool = True
    external: SpanContext | None = None

    @property
    def span_id(self) -> int:
        return self.span.context.span_id

    @property
    def trace_id(self) -> int:
        return self.span.context.trace_id

    def set_attribute(self, key: object, value: object, limits: SpanLimits) -> None:
        """What ``Span.set_attribute`` must do, applied to the model."""
        if self.ended:
            return
        if type(key) is not str or not key:
            self.dropped_attributes += 1
            return
        coerced = coerce_value(value, limits.max_attribute_length)
        if coerced is None or (
            key not in self.attributes and len(self.attributes) >= limits.max_attributes
        ):
            self.dropped_attributes += 1
            return
        self.attributes[key] = coerced

    def add_event(self, name: object, attributes: object, limits: SpanLimits) -> None:
        """What ``Span.add_event`` must do, applied to the model."""
        if self.ended:
            return
        if len(self.events) >= limits.max_events:
            self.dropped_events += 1
            return
        kept, dropped = coerce_attributes(
            attributes,  # type: ignore[arg-type]
            limits.max_event_attributes,
            limits.max_attribute_length,
        )
        self.events.append((name if type(name) is str else None, dict(kept), dropped))


# --- exporters and spies ---------------------------------------------------------------------


class AuditExporter(MemoryExporter):
    """A memory exporter that also keeps each batch as received."""

    def __init__(self, *, wants_starts: bool, name: str) -> None:
        super().__init__(wants_starts=wants_starts, name=name)
        self.received: list[tuple[SpanRecord, ...]] = []

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.received.append(tuple(batch))
        await super().export(batch)


class CallLog:
    """Wraps a lane's exporter: logs each export call's beginning and end, with its batch.

    Attributes:
        events: ``("begin" | "end", batch)`` in the order they happened; a retried batch is the
            same object each time.
    """

    def __init__(self, inner: FaultyExporter) -> None:
        self.inner = inner
        self.name = inner.name
        self.wants_starts = inner.wants_starts
        self.events: list[tuple[str, Sequence[SpanRecord]]] = []

    async def export(self, batch: Sequence[SpanRecord]) -> int | ExportResult | None:
        self.events.append(("begin", batch))
        try:
            return await self.inner.export(batch)
        finally:
            self.events.append(("end", batch))

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define
class LaneLog:
    """What the tracer offered a lane, and what the lane accepted into its queue, in order."""

    offered: list[SpanRecord] = attrs.Factory(list)
    accepted: list[SpanRecord] = attrs.Factory(list)
    #: ``snapshot(record)`` taken when each record was offered, by ``id(record)``.
    at_offer: dict[int, object] = attrs.Factory(dict)
    #: Records counted at the door without being built (spans still open past the drain
    #: deadline), by reason.
    bulk: Counter[DropReason] = attrs.Factory(Counter)


def normalize(value: object) -> object:
    """Make attribute values comparable: NaN equals NaN, mappings become sorted tuples."""
    if isinstance(value, float) and math.isnan(value):
        return ("NaN",)
    if isinstance(value, tuple):
        return tuple(normalize(item) for item in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(key), normalize(item)) for key, item in value.items()))
    return value


def snapshot(record: SpanRecord) -> object:
    """Everything about a record a later mutation could change."""
    return (
        normalize(record.attributes),
        tuple((event.name, normalize(event.attributes)) for event in record.events),
        record.status,
        record.dropped_attributes,
        record.dropped_events,
        record.end_time_ns,
    )


@contextmanager
def spying_on_lanes(logs: Mapping[str, LaneLog]) -> Iterator[None]:
    """Log what each lane (by name) is offered and accepts, for the duration of the block."""
    offer_nowait = Lane.offer_nowait
    count_at_door = Lane.count_at_door

    def spying_offer_nowait(lane: Lane, record: SpanRecord) -> bool:
        log = logs.get(lane.name)
        if log is None:
            return offer_nowait(lane, record)
        log.offered.append(record)
        log.at_offer[id(record)] = snapshot(record)
        accepted = offer_nowait(lane, record)
        if accepted:
            log.accepted.append(record)
        return accepted

    def spying_count_at_door(lane: Lane, reason: DropReason, count: int) -> None:
        log = logs.get(lane.name)
        if log is not None:
            log.bulk[reason] += count
        count_at_door(lane, reason, count)

    Lane.offer_nowait = spying_offer_nowait  # type: ignore[method-assign,assignment]
    Lane.count_at_door = spying_count_at_door  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        Lane.offer_nowait = offer_nowait  # type: ignore[method-assign]
        Lane.count_at_door = count_at_door  # type: ignore[method-assign]


# --- the outcome -----------------------------------------------------------------------------


@attrs.define
class LaneOutcome:
    """One lane after the run."""

    spec: LaneSpec
    stats: LaneStats
    log: LaneLog
    audit: AuditExporter
    #: ``(batch size, fault)`` per export call, in order, as the FaultyExporter applied them.
    calls: list[tuple[int, Fault | None]]
    #: When each export call began and ended, with its batch (see :class:`CallLog`).
    events: list[tuple[str, Sequence[SpanRecord]]]
    #: The lane's ``max_concurrent_exports``, as it resolved it.
    concurrency: int

    @property
    def delivered(self) -> list[SpanRecord]:
        """Every record the exporter received, in order (a redelivered batch appears twice)."""
        return [record for batch in self.audit.received for record in batch]

    @property
    def redelivered(self) -> bool:
        """True if an export call delivered its batch and then failed."""
        return any(
            fault is not None and fault.kind is FaultKind.DELIVER_THEN_FAIL
            for _, fault in self.calls
        )


@attrs.define
class Outcome:
    """Everything observed while running one case on one backend."""

    case: Case
    backend: Backend
    spans: list[SpanInfo]
    lanes: list[LaneOutcome]
    stats: Stats
    #: What left the body (inside ``open_tracer()``), and what left ``open_tracer()``.
    body_exc: BaseException | None
    tracer_exc: BaseException | None
    #: What ``anyio.run`` raised.
    escaped: BaseException | None
    #: The cancel scope around ``open_tracer()`` caught a cancellation.
    scope_caught: bool
    #: Seconds from leaving the body to leaving ``open_tracer()``.
    exit_seconds: float
    #: Log records the "spanlane" logger emitted at ERROR or above (a crashed drain worker).
    errors: list[logging.LogRecord]
    #: Snapshots taken after each op whose lane counters did not balance.
    unbalanced: list[Stats]


# --- running a program -----------------------------------------------------------------------


class _Run:
    """The state of one program run."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.limits = case.config.limits
        self.audits = [
            AuditExporter(wants_starts=spec.wants_starts, name=f"lane{index}")
            for index, spec in enumerate(case.config.lanes)
        ]
        self.faulty = [
            FaultyExporter(
                audit,
                list(spec.script),
                fail_on_close=spec.fail_on_close,
                hang_on_close=spec.hang_on_close,
            )
            for audit, spec in zip(self.audits, case.config.lanes, strict=True)
        ]
        self.call_logs = [CallLog(faulty) for faulty in self.faulty]
        self.exporters: list[Exporter] = list(self.call_logs)
        self.logs = [LaneLog() for _ in self.exporters]
        self._tracer: Tracer | None = None
        self.spans: list[SpanInfo] = []
        self.unbalanced: list[Stats] = []
        self.body: SpanInfo | None = None
        self.scope: anyio.CancelScope | None = None
        self.body_exc: BaseException | None = None
        self.tracer_exc: BaseException | None = None
        self.left_body = math.nan
        self.left_tracer = math.nan
        self.tail: TailSampling | None = None

    # --- exits ---

    async def fire(self) -> None:
        """Leave the program the drawn way."""
        how = self.case.program.exit.how
        if how == "raise":
            raise BodyError("the body gives up")
        if how == "cancel":
            assert self.scope is not None
            self.scope.cancel()
            await anyio.lowlevel.checkpoint()
            raise AssertionError("the cancellation of the enclosing scope did not arrive")

    # --- the body ---

    @property
    def tracer(self) -> Tracer:
        assert self._tracer is not None, "the tracer is built when the run starts"
        return self._tracer

    async def main(self) -> None:
        # Built inside the event loop: a tracer may hold backend objects from the start.
        lanes = [
            lane(exporter, **spec.overrides()) if spec.overrides() else exporter
            for exporter, spec in zip(self.exporters, self.case.config.lanes, strict=True)
        ]
        config = self.case.config
        self.tail = build_tail(config.tail)
        self._tracer = open_tracer(
            *lanes,
            sampler=build_sampler(config.sampler),
            tail=self.tail,
            **config.options(),
        )
        if config.compact_at is not None:
            for built in lanes_of(self._tracer):
                built._compact_at = config.compact_at
        with anyio.CancelScope() as self.scope:
            try:
                async with self.tracer:
                    try:
                        await self.run_body()
                    except BaseException as exc:
                        self.body_exc = exc
                        raise
                    finally:
                        self.left_body = time.monotonic()
            except BaseException as exc:
                self.tracer_exc = exc
                raise
            finally:
                self.left_tracer = time.monotonic()

    async def run_body(self) -> None:
        if not self.case.program.body_span:
            await self.run_producers()
            return
        span = self.tracer.span("body", parent=NEW_TRACE)
        self.body = info = self.started(span, "body", "body", None)
        try:
            with span:
                await self.run_producers()
        except BaseException as exc:
            info.left_by = exc
            raise
        finally:
            info.ended = True

    async def run_producers(self) -> None:
        async with anyio.create_task_group() as group:
            for index, producer_ops in enumerate(self.case.program.producers):
                group.start_soon(self.produce, index, producer_ops)
        if self.case.program.exit.at is None:
            await self.fire()

    async def produce(self, index: int, producer_ops: Sequence[Op]) -> None:
        at = self.case.program.exit.at
        spans: list[SpanInfo] = []
        for step, op in enumerate(producer_ops):
            if at == (index, step):
                await self.fire()
            await self.execute(index, spans, op)
            self.audit_counters()
        if at is not None and at[0] == index and at[1] >= len(producer_ops):
            await self.fire()

    def audit_counters(self) -> None:
        """Note any moment at which a lane's counters do not balance (they must at all times)."""
        stats = self.tracer.stats()
        if not all(lane.balanced for lane in stats.lanes):
            self.unbalanced.append(stats)

    def started(
        self,
        span: Span,
        name: str,
        role: SpanRole,
        parent: SpanInfo | None,
        attributes: dict[Any, object] | None = None,
    ) -> SpanInfo:
        """Model a span the program just started with ``attributes``; then mutate those.

        A span that is not recording at its start was not sampled (it is a NonRecordingSpan,
        which keeps no name: the model keeps it).
        """
        info = SpanInfo(span, name, role, parent, sampled=span.is_recording)
        self.spans.append(info)
        if attributes:
            limits = self.limits
            kept, dropped = coerce_attributes(
                attributes, limits.max_attributes, limits.max_attribute_length
            )
            info.start_attributes = dict(kept)
            info.attributes = dict(kept)
            info.start_dropped = info.dropped_attributes = dropped
            for value in attributes.values():
                mutate(value)
            attributes["added later"] = "ignored"
        return info

    def parent_of(
        self, parent: Parent, spans: list[SpanInfo]
    ) -> tuple[Span | SpanContext | None, SpanInfo | None]:
        """The ``parent=`` argument for a drawn parent, and the model of that parent."""
        if parent == "current":
            return None, self.body
        if isinstance(parent, str):
            return EXTERNAL[parent], None
        if parent is None or not spans:
            return NEW_TRACE, None
        info = spans[parent % len(spans)]
        return info.span, info

    async def execute(self, index: int, spans: list[SpanInfo], op: Op) -> None:
        if isinstance(op, StartSpan):
            parent, parent_info = self.parent_of(op.parent, spans)
            attributes = _mapping(op.attributes)
            name = f"p{index}.{len(spans)}"
            span = self.tracer.start_span(name, attributes=attributes, parent=parent)
            info = self.started(span, name, "manual", parent_info, attributes)
            info.external = _external(parent)
            spans.append(info)
        elif isinstance(op, RaiseInSpan):
            await self.raise_in_span(index, spans, op)
        elif isinstance(op, Flush):
            await self.tracer.flush(timeout=op.timeout)
        elif isinstance(op, Checkpoint):
            if op.sleep:
                await anyio.lowlevel.checkpoint()
            else:
                await anyio.lowlevel.checkpoint()
        elif spans:
            await self.touch(spans[op.target % len(spans)], op)

    async def touch(
        self, info: SpanInfo, op: EndSpan | SetAttribute | SetAttributes | AddEvent
    ) -> None:
        """An op on an existing span, open or already ended."""
        limits = self.limits
        span = info.span
        if isinstance(op, EndSpan):
            if op.via == "thread":

                def end_in_thread() -> None:
                    info.ended = True
                    span.end()

                await anyio.to_thread.run_sync(end_in_thread)
            elif op.via == "aend":
                info.ended = True
                await span.aend()
            else:
                info.ended = True
                span.end()
        elif isinstance(op, SetAttribute):
            key, value = materialize(op.key), materialize(op.value)
            info.set_attribute(key, value, limits)
            span.set_attribute(key, value)  # type: ignore[arg-type]
            mutate(value)
        elif isinstance(op, SetAttributes):
            if isinstance(op.items, Weird):
                if not info.ended:
                    info.dropped_attributes += 1
                span.set_attributes(materialize(op.items))  # type: ignore[arg-type]
                return
            mapping = _mapping(op.items) or {}
            for key, value in mapping.items():
                info.set_attribute(key, value, limits)
            span.set_attributes(mapping)
            for value in mapping.values():
                mutate(value)
        else:
            name = materialize(op.name)
            attributes = _mapping(op.attributes)
            info.add_event(name, attributes, limits)
            span.add_event(name, attributes)  # type: ignore[arg-type]
            for value in (attributes or {}).values():
                mutate(value)

    async def raise_in_span(self, index: int, spans: list[SpanInfo], op: RaiseInSpan) -> None:
        parent, parent_info = self.parent_of(op.parent, spans)
        attributes = _mapping(op.attributes)
        name = f"p{index}.{len(spans)}!"
        span = self.tracer.span(name, attributes=attributes, parent=parent)
        info = self.started(span, name, "raise", parent_info, attributes)
        info.external = _external(parent)
        spans.append(info)
        boom = Boom(f"raised in {name}")
        try:
            if op.asynchronous:
                async with span:
                    await _inside(info, op.checkpoint, boom)
            else:
                with span:
                    await _inside(info, op.checkpoint, boom)
        except Boom:
            pass
        finally:
            info.ended = True

    # --- results ---

    def outcome(
        self, backend: Backend, escaped: BaseException | None, errors: list[logging.LogRecord]
    ) -> Outcome:
        stats = self.tracer.stats()
        return Outcome(
            case=self.case,
            backend=backend,
            spans=self.spans,
            lanes=[
                LaneOutcome(
                    spec,
                    lane_stats,
                    log,
                    audit,
                    faulty.calls,
                    call_log.events,
                    built.max_concurrent_exports,
                )
                for spec, lane_stats, log, audit, faulty, call_log, built in zip(
                    self.case.config.lanes,
                    stats.lanes,
                    self.logs,
                    self.audits,
                    self.faulty,
                    self.call_logs,
                    lanes_of(self.tracer),
                    strict=True,
                )
            ],
            stats=stats,
            body_exc=self.body_exc,
            tracer_exc=self.tracer_exc,
            escaped=escaped,
            scope_caught=self.scope is not None and self.scope.cancelled_caught,
            exit_seconds=self.left_tracer - self.left_body,
            errors=errors,
            unbalanced=self.unbalanced,
        )


async def _inside(info: SpanInfo, checkpoint: bool, boom: Boom) -> None:
    """The body of a :class:`~strategies.RaiseInSpan` span; notes what leaves it.

    Only what leaves the body counts: with ``on_full="wait"`` the span's ``__aexit__`` may be
    cancelled while it waits for room, after the span has ended on ``boom``.
    """
    try:
        if checkpoint:
            await anyio.lowlevel.checkpoint()
    except BaseException as exc:  # the cancellation arrived at the checkpoint
        info.left_by = exc
        raise
    info.left_by = boom
    raise boom


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def quiet_spanlane_logger() -> Iterator[_Collect]:
    """Keep the "spanlane" logger's (expected, plentiful) drop warnings out of pytest's log
    capture for the duration of a run, collecting them instead."""
    logger = logging.getLogger("spanlane")
    handler = _Collect()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


def run_case(case: Case, backend: Backend) -> Outcome:
    """Run ``case`` under ``anyio.run`` on ``backend``; return what happened.

    Args:
        case: the configuration and the program.
        backend: ``"asyncio"`` or ``"trio"``.
    """
    run = _Run(case)
    escaped: BaseException | None = None
    logs = {faulty.name: log for faulty, log in zip(run.faulty, run.logs, strict=True)}
    with quiet_spanlane_logger() as handler, spying_on_lanes(logs):
        try:
            anyio.run(run.main, backend=backend)
        except BaseException as exc:
            # A real Ctrl-C stops the test run; one the fault model injected into an exporter
            # (which must never get this far) is an outcome like any other.
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not isinstance(exc, Injected):
                raise
            escaped = exc
    errors = [record for record in handler.records if record.levelno >= logging.ERROR]
    return run.outcome(backend, escaped, errors)
