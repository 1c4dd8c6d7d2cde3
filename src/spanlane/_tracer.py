"""Tracer and open_tracer(): spans in, records through the processors to the lanes, and the
lifecycle that drains them.

The drain workers run in the tracer's task group, which lives in a *service task* owned by the
event loop (a trio system task, an asyncio task of the loop), not in the caller's task. So the
caller's cancel scopes are never touched: nothing the tracer does can cancel the body, wrap its
exception or corrupt its scope stack, and a tracer that is never exited (or is garbage-collected
open) is still drained, then counted, when the loop ends.

Leaving ``async with open_tracer(...)`` by any path (normally, by an exception, or by cancellation
of an enclosing scope) asks the service to shut down and waits for it, shielded, for at most
``drain_timeout`` plus the exporters' close grace plus a margin:

1. spans still open are ended with ``spanlane.unfinished = True`` and offered; past the drain
   deadline, those left are counted ``SHUTDOWN_TIMEOUT`` without being built;
2. the last records from other threads are taken; later ones are counted ``CLOSED`` at once;
3. the processors' background work stops, and they hand on what they hold (the tail-sampling
   stage judges its pending traces);
4. the lanes stop accepting records and drain what they hold, until the deadline;
5. workers still busy at the deadline are cancelled, and what they held is counted as
   ``SHUTDOWN_TIMEOUT``; every exporter's ``aclose()`` runs, with a grace of its own;
6. the body's exception or cancellation propagates unchanged.

A Ctrl-C that arrives while the caller waits (trio) cuts the drain short: the workers are
cancelled at once (what they held is counted) and the ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from threading import get_ident
from time import time_ns
from types import TracebackType
from typing import Any, Literal
from weakref import ref

import anyio

from ._attributes import SpanLimits, coerce_attributes
from ._context import (
    get_span,
    get_tracer,
    reset_tracer,
    suppress,
    tracer_closed,
    tracer_opened,
    use_tracer,
)
from ._ids import id_random, new_span_id, new_trace_id
from ._inbox import TAKE_AT_ONCE, Entry, ThreadInbox
from ._lane import ACLOSE_GRACE, Lane
from ._log import RateLimiter, logger
from ._options import LaneOptions, LaneSpec, OnFull
from ._processor import Fanout, Guarded, SpanProcessor, Stage
from ._records import (
    DEFAULT_SCOPE,
    SAMPLED_FLAG,
    AttributeValue,
    InstrumentationScope,
    Link,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
)
from ._resource import build_resource
from ._retry import RetryPolicy
from ._runtime import (
    LoopHandle,
    absorb_loop_cancellation,
    checkpoint,
    is_cancellation,
    ki_protected,
    spawn_service,
)
from ._safe import safe_repr
from ._sampling import (
    HEAD_ALL,
    HEAD_FOLLOW,
    HEAD_NONE,
    Sampler,
    check_sampler,
    head_mode,
    sampler_from_environment,
)
from ._span import (
    INVALID_SPAN,
    Span,
    Unsampled,
    abandon,
    clamp_time,
    make_links,
    parent_context,
    seal_unfinished,
    start_record,
)
from ._stats import DropReason, FlushReport, Stats
from ._tail import TailSampling
from ._validate import positive_seconds
from .exporters._base import describe

__all__ = ["EXIT_MARGIN", "Tracer", "lanes_of", "open_tracer", "span"]

#: Seconds the caller waits for the service task beyond ``drain_timeout`` and the close grace:
#: the exit deadline is ``drain_timeout + ACLOSE_GRACE + EXIT_MARGIN`` whatever happens.
EXIT_MARGIN = 0.4
#: Unfinished spans ended per step at shutdown, between checkpoints.
_UNFINISHED_PER_STEP = 512

# Ids on the hot path: one getrandbits call, with the zero-avoiding loop only for a zero draw.
_getrandbits = id_random.getrandbits

_State = Literal["new", "open", "closing", "closed"]
_NO_LINKS: tuple[Link, ...] = ()


class Tracer:
    """Creates spans and delivers their records, through the processors, to one lane per
    exporter.

    Build it with :func:`open_tracer` (same arguments; ``lane_defaults`` holds the lane options
    there given one by one) and use it as an async context manager; it is not reusable once
    closed.
    """

    def __init__(
        self,
        *exporters: object,
        lane_defaults: LaneOptions | None = None,
        service_name: str | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        drain_timeout: float = 10.0,
        limits: SpanLimits | None = None,
        scope: InstrumentationScope = DEFAULT_SCOPE,
        processors: Iterable[SpanProcessor] = (),
        sampler: Sampler | None = None,
        tail: TailSampling | None = None,
    ) -> None:
        if not exporters:
            raise ValueError("exporters: at least one exporter is required")
        if lane_defaults is None:
            lane_defaults = LaneOptions()
        elif not isinstance(lane_defaults, LaneOptions):
            raise TypeError(f"lane_defaults must be a LaneOptions, got {lane_defaults!r}")
        if limits is not None and not isinstance(limits, SpanLimits):
            raise TypeError(f"limits must be a SpanLimits, got {limits!r}")
        if (
            not isinstance(scope, InstrumentationScope)
            or type(scope.name) is not str
            or not (scope.version is None or type(scope.version) is str)
        ):
            raise TypeError(
                f"scope must be an InstrumentationScope with a str name and a str or None "
                f"version, got {scope!r}"
            )
        self.drain_timeout = positive_seconds("drain_timeout", drain_timeout)
        self.limits = limits or SpanLimits()
        self.resource: Resource = build_resource(service_name, resource_attributes)
        self.scope = scope
        self.lane_defaults = lane_defaults

        lanes: list[Lane] = []
        seen: set[int] = set()
        for given in exporters:
            spec = given if isinstance(given, LaneSpec) else LaneSpec(given)
            info = describe(spec.exporter)
            if id(spec.exporter) in seen:
                raise ValueError(f"exporters: {info.name} is given twice; one lane per exporter")
            seen.add(id(spec.exporter))
            lanes.append(Lane(info, spec.options(lane_defaults)))
        self._lanes = tuple(lanes)
        self._wait_lanes = tuple(lane for lane in lanes if lane.options.on_full == "wait")

        self._sampler: Sampler = (
            sampler_from_environment() if sampler is None else check_sampler("sampler", sampler)
        )
        # HEAD_ALL records everything, HEAD_NONE nothing, HEAD_FOLLOW roots and children as
        # their parent (the default sampler); only HEAD_CALL costs a call per span.
        self._head = head_mode(self._sampler)

        processors = tuple(processors)
        for processor in processors:
            if not isinstance(processor, SpanProcessor):
                raise TypeError(f"processors: {processor!r} is not a spanlane.SpanProcessor")
        if tail is not None:
            if not isinstance(tail, TailSampling):
                raise TypeError(f"tail must be a spanlane.sampling.TailSampling, got {tail!r}")
            if any(processor is tail for processor in processors):
                raise ValueError("tail: this TailSampling is also given in processors")
            # Last, next to the lanes: the stages before it see every recorded span (a span
            # metrics bridge counts the traces the tail stage discards), and it holds records
            # after any redaction.
            processors += (tail,)
        self._processors: tuple[SpanProcessor, ...] = processors
        self._tail = tail
        fanout = Fanout(self._lanes)
        stage: Stage = fanout
        wants_starts = fanout.wants_starts
        for processor in reversed(self._processors):
            processor.connect(stage)
            stage = Guarded(processor, self._processor_failed)
            wants_starts = (wants_starts and processor.forwards_starts) or processor.wants_starts
        self._runners = tuple(
            processor
            for processor in self._processors
            if type(processor).run is not SpanProcessor.run
        )
        # The hot path calls these directly. With no processors and one lane they are that
        # lane's own methods: one call less per span (about 5% of a span's cost).
        self._on_end: Callable[[SpanRecord], object]
        if not self._processors and len(self._lanes) == 1:
            self._on_end = self._lanes[0].offer_nowait
        else:
            self._on_end = stage.on_end
        self._on_start = stage.on_start
        self._wants_starts = wants_starts

        #: The builders of spans not yet ended, keyed by a weak reference to the span. A span
        #: that is garbage-collected unended is ended as unfinished (see _collected).
        self.open_spans: dict[ref[Span], Any] = {}
        self._collected: deque[Any] = deque()
        #: The weak reference callback of ``open_spans`` (SpanSink protocol).
        self.on_collected: Callable[[ref[Span]], None] = self._collected_callback
        self._spans_started = 0
        self._spans_ended = 0
        self._ignored = 0
        self._processor_errors = 0
        # Unsampled spans, counted from any thread without a lock: next() on an
        # itertools.count is one C call, atomic under the GIL. It is read by taking a number too
        # (under the lock, see _unsampled_count), so the reads are subtracted.
        self._unsampled_counter = itertools.count()
        self._count_unsampled = self._unsampled_counter.__next__
        self._unsampled_reads = 0
        self._sampler_errors = 0
        self._runner_scope: anyio.CancelScope | None = None
        self._runners_done: anyio.Event | None = None
        self._state: _State = "new"
        # True while the loop thread may hand records on without the inbox lock: the tracer is
        # open and still taking records from other threads.
        self._fast = False
        self._loop_thread = -1
        self._inbox = ThreadInbox()
        self._warnings = RateLimiter()
        self._ready: anyio.Event | None = None
        self._close_requested: anyio.Event | None = None
        self._finished: anyio.Event | None = None
        self._hurry = False
        self._context_token: Any = None

    def __repr__(self) -> str:
        names = ", ".join(lane.name for lane in self._lanes)
        return f"<Tracer {self._state} lanes=[{names}]>"

    # --- spans -------------------------------------------------------------------------------

    def span(
        self,
        name: str,
        *,
        attributes: Mapping[str, object] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Iterable[Link | SpanContext | Span] = _NO_LINKS,
        parent: Span | SpanContext | None = None,
        start_time_ns: int | None = None,
        scope: InstrumentationScope | None = None,
    ) -> Span:
        """Start a span, to be used as ``with`` or ``async with`` (which ends it).

        Only two mistakes raise; everything else is coerced or ignored and counted
        (``Stats.ignored_calls``, ``dropped_attributes``, ``dropped_links``).

        Args:
            name: the span name.
            attributes: initial attributes, coerced like :meth:`Span.set_attribute`.
            kind: the span kind (an unknown value means ``INTERNAL``, and is counted).
            links: links to other spans (``Link``, ``SpanContext`` or ``Span`` values).
            parent: the parent span or context; the current span by default. A remote
                ``SpanContext`` (from :func:`spanlane.propagation.extract`) continues a trace;
                an invalid one starts a new trace.
            start_time_ns: the start time in nanoseconds since the epoch (now by default;
                clamped to what OTLP can carry).
            scope: the instrumentation scope of this span, when it is not the tracer's (the
                OpenTelemetry bridge passes the scope of the OpenTelemetry tracer).

        Returns:
            The started :class:`Span`. A :class:`NonRecordingSpan` when the sampler did not
            sample it (a real span with its own context, flags without "sampled", that becomes
            the current span and parents its children, but records nothing), when the tracer
            was never entered, and inside telemetry's own code (an exporter's ``export()``).

        Raises:
            TypeError: ``name`` is not a str, or ``parent`` is neither a Span, a SpanContext
                nor None.
        """
        if type(name) is not str:
            raise TypeError(f"span name must be a str, got {type(name).__name__}")
        if parent is None:
            parent = get_span()
            if parent is INVALID_SPAN:  # current only in telemetry's own code: see suppress()
                return INVALID_SPAN
        if parent is None:
            context = None
        elif type(parent) is Span or type(parent) is Unsampled:
            # A tracer's span: its context is valid (and, once made, cached in _context).
            context = parent._context or parent.context  # type: ignore[union-attr]
        else:
            context = parent_context(parent)
        if self._state == "new":
            return self._not_entered()
        head = self._head
        if context is not None:
            trace_id = context.trace_id
        elif head == HEAD_NONE:
            trace_id = 0  # an unsampled root makes its trace id when asked for its context
        else:
            trace_id = _getrandbits(128) or new_trace_id()
        if head != HEAD_ALL:
            if head == HEAD_FOLLOW:  # the default sampler: a root is sampled, a child follows
                if context is None:
                    sampled = True
                else:
                    flags = context.trace_flags
                    sampled = type(flags) is int and flags & SAMPLED_FLAG != 0
            elif head == HEAD_NONE:
                sampled = False
            else:
                if type(kind) is not SpanKind:
                    kind = self._kind(kind)
                sampled = self._sample(trace_id, context, name, kind, attributes)
            if not sampled:
                self._count_unsampled()  # one atomic C call, from any thread
                # Built in place, without a call: an unsampled span must cost a fraction of a
                # recorded one. Its context is derived from these when first asked for (see
                # Unsampled).
                unsampled: Span = Unsampled()
                unsampled._sink = None
                unsampled._context = None
                unsampled._token = None
                unsampled.parent = context
                unsampled._rec = trace_id
                return unsampled
        limits = self.limits
        if attributes is None:
            kept: dict[str, AttributeValue] | None = None
            dropped_attributes = 0
        else:
            kept, dropped_attributes = coerce_attributes(
                attributes, limits.max_attributes, limits.max_attribute_length
            )
        if links is _NO_LINKS:  # the default: skip make_links (an identity test runs no user code)
            link_tuple: tuple[Link, ...] = ()
            dropped_links = 0
        else:
            link_tuple, dropped_links = make_links(links, limits)
        # An unsampled span ignores its kind, as it ignores its other arguments.
        if type(kind) is not SpanKind:
            kind = self._kind(kind)
        if scope is not None and type(scope) is not InstrumentationScope:
            self.note_ignored("scope", scope)
            scope = None
        if start_time_ns is None:
            start = time_ns()
        else:
            start = clamp_time(start_time_ns, self, "start_time_ns")
        if context is None:
            span = Span(
                self,
                name,
                trace_id,
                _getrandbits(64) or new_span_id(),
                "",
                None,
                kind,
                start,
                kept,
                dropped_attributes,
                link_tuple,
                dropped_links,
                scope=scope,
            )
        else:
            state = context.trace_state
            span = Span(
                self,
                name,
                trace_id,
                _getrandbits(64) or new_span_id(),
                state if type(state) is str else "",
                context,
                kind,
                start,
                kept,
                dropped_attributes,
                link_tuple,
                dropped_links,
                _flags(context.trace_flags),
                scope=scope,
            )
        if self._fast and get_ident() == self._loop_thread:
            self._spans_started += 1
            if self._wants_starts:
                self._on_start(start_record(span))
        else:
            self._started_elsewhere(span)
        return span

    def start_span(
        self,
        name: str,
        *,
        attributes: Mapping[str, object] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Iterable[Link | SpanContext | Span] = _NO_LINKS,
        parent: Span | SpanContext | None = None,
        start_time_ns: int | None = None,
        scope: InstrumentationScope | None = None,
    ) -> Span:
        """Start a span to end by hand with :meth:`Span.end`; same arguments as :meth:`span`.

        The span does not become the current span unless it is entered with ``with``.
        """
        return self.span(
            name,
            attributes=attributes,
            kind=kind,
            links=links,
            parent=parent,
            start_time_ns=start_time_ns,
            scope=scope,
        )

    def submit(self, record: SpanRecord) -> None:
        """Hand on a finished record made elsewhere (an OpenTelemetry SDK span), from any
        thread, without waiting; it is counted as a span started and ended.

        Raises:
            TypeError: ``record`` is not a finished :class:`SpanRecord`.
        """
        if type(record) is not SpanRecord or record.end_time_ns is None:
            raise TypeError(f"submit() takes a finished SpanRecord, got {record!r}")
        if self._state == "new":
            self._not_entered()
            return
        if self._fast and get_ident() == self._loop_thread:
            self._spans_started += 1
        else:
            with self._inbox.lock:
                self._inbox.started += 1
        self.deliver(record)

    def _sample(
        self,
        trace_id: int,
        context: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        """Ask the sampler; one that raises (anything but cancellation) means "not sampled"."""
        try:
            return bool(
                self._sampler.should_sample(
                    trace_id=trace_id, parent=context, name=name, kind=kind, attributes=attributes
                )
            )
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            with self._inbox.lock:  # from any thread
                self._sampler_errors += 1
            if self._warnings.allow("sampler"):
                logger.warning(
                    "spanlane: the sampler %s raised; the span is not sampled (further "
                    "failures are counted in Stats.sampler_errors)",
                    safe_repr(self._sampler, 100),
                    exc_info=exc,
                )
            return False

    def _unsampled_count(self) -> int:
        """Unsampled spans started so far (reading the counter advances it: see __init__)."""
        with self._inbox.lock:
            taken = next(self._unsampled_counter)
            count = taken - self._unsampled_reads
            self._unsampled_reads += 1
        return count

    def _kind(self, kind: object) -> SpanKind:
        if type(kind) is int and 1 <= kind <= 5:
            return SpanKind(kind)
        if isinstance(kind, SpanKind):  # pragma: no cover - a subclass of the enum
            return SpanKind(int(kind))
        self.note_ignored("kind", kind)
        return SpanKind.INTERNAL

    def _not_entered(self) -> Span:
        if self._warnings.allow("not entered"):
            logger.warning(
                "spanlane: a span was started on a tracer that was never entered; it does not "
                "record (use `async with open_tracer(...) as tracer:`)"
            )
        return INVALID_SPAN

    def _started_elsewhere(self, span: Span) -> None:
        """A span started outside the fast path: another thread, or a closing tracer."""
        inbox = self._inbox
        if get_ident() != self._loop_thread:
            with inbox.lock:
                inbox.started += 1
            if not self._wants_starts:
                return
            record = start_record(span)
            if not inbox.put(True, record):
                # Too late for the lanes: the start notification is counted where it would go.
                with inbox.lock:
                    self._count_closed(record, start=True)
            return
        with inbox.lock:
            self._spans_started += 1
            if self._wants_starts:
                self._offer_locked(True, start_record(span))

    # --- the hand-off (called by Span; SpanSink protocol) -----------------------------------

    def deliver(self, record: SpanRecord) -> None:
        """Hand a finished record to the processors and lanes; never waits, from any thread."""
        if self._fast and get_ident() == self._loop_thread:
            self._spans_ended += 1
            self._on_end(record)
            # While closing, the shutdown ends collected spans itself, waiting for room.
            if self._collected and self._state == "open":
                self._bury()
        else:
            self._deliver_elsewhere(record)

    def _deliver_elsewhere(self, record: SpanRecord) -> None:
        inbox = self._inbox
        if get_ident() != self._loop_thread:
            if inbox.put(False, record):
                return
            with inbox.lock:
                self._spans_ended += 1
                self._count_closed(record, start=False)
            return
        with inbox.lock:
            self._spans_ended += 1
            self._offer_locked(False, record)

    def _offer_locked(self, is_start: bool, record: SpanRecord) -> None:
        """On the loop thread, after the fast path has ended (the caller holds the lock)."""
        if self._state == "closed":
            self._count_closed(record, start=is_start)
        elif is_start:
            self._on_start(record)
        else:
            self._on_end(record)

    def _count_closed(self, record: SpanRecord, *, start: bool) -> None:
        for lane in self._lanes:
            if not start or lane.wants_starts:
                lane.count_at_door(DropReason.CLOSED, 1)

    async def adeliver(self, record: SpanRecord) -> None:
        """Hand a record on, first waiting (``on_full="wait"`` lanes) for room, up to each
        lane's ``wait_timeout``. If the wait is cancelled, the record is still handed on (a full
        lane drops and counts it) and the cancellation propagates."""
        if not self._wait_lanes or not self._fast or get_ident() != self._loop_thread:
            self.deliver(record)
            return
        start = anyio.current_time()
        try:
            # Until every waiting lane has room at the same moment (another task may fill one
            # while this one waits on the next), or its wait_timeout has passed.
            while True:
                now = anyio.current_time()
                full = [
                    lane
                    for lane in self._wait_lanes
                    if not lane.has_room(record) and now < start + lane.options.wait_timeout
                ]
                if not full:
                    break
                lane = full[0]
                await lane.wait_for_room(start + lane.options.wait_timeout, record)
        finally:
            # No await between the last check and this: the room found is still there.
            self.deliver(record)

    def note_ignored(self, what: str, value: object) -> None:
        """Count (and log, rate-limited) a call whose argument could not be used."""
        with self._inbox.lock:  # from any thread
            self._ignored += 1
        if self._warnings.allow(("ignored", what)):
            logger.warning(
                "spanlane: ignored an unusable value for %s: %s (further ones are counted in "
                "Stats.ignored_calls)",
                what,
                safe_repr(value, 100),
            )

    def _processor_failed(self, processor: SpanProcessor, exc: BaseException) -> None:
        self._processor_errors += 1
        if self._warnings.allow(("processor", id(processor))):
            logger.warning(
                "spanlane: processor %s failed; the record it was given is lost",
                processor.name,
                exc_info=exc,
            )

    # --- spans the caller lost: ended as unfinished, on the loop -----------------------------

    def _collected_callback(self, key: ref[Span]) -> None:
        # Runs wherever the garbage collector runs: any thread, any moment, even inside this
        # module. It only claims the builder and queues it (deque.append is atomic).
        rec = self.open_spans.pop(key, None)
        if rec is not None:
            self._collected.append(rec)

    def _bury(self) -> None:
        """End the spans collected unended as unfinished and hand them on (on the loop)."""
        collected = self._collected
        while collected:
            try:
                rec = collected.popleft()
            except IndexError:  # pragma: no cover - another thread emptied it
                return
            self.deliver(seal_unfinished(rec))

    def _drain_inbox(self) -> None:
        """On the loop: hand the records from other threads to the pipeline."""
        entries = self._inbox.take()
        if self._fast:
            self._hand_on(entries)
        else:
            with self._inbox.lock:
                self._hand_on_locked(entries)
        if self._collected and self._state != "closing":
            self._bury()

    def _hand_on(self, entries: list[Entry]) -> None:
        on_start, on_end = self._on_start, self._on_end
        for is_start, record in entries:
            if is_start:
                on_start(record)
            else:
                self._spans_ended += 1
                on_end(record)

    def _hand_on_locked(self, entries: list[Entry]) -> None:
        for is_start, record in entries:
            if not is_start:
                self._spans_ended += 1
            self._offer_locked(is_start, record)

    def _orphaned(self, entries: list[Entry]) -> None:
        """The loop is gone with records in the inbox (called under the lock): count them."""
        self._fast = False
        for is_start, record in entries:
            if not is_start:
                self._spans_ended += 1
            self._count_closed(record, start=is_start)

    # --- flush and statistics ----------------------------------------------------------------

    # The issue fixes this signature; the timeout is applied with a cancel scope inside.
    async def flush(self, timeout: float | None = None) -> FlushReport:  # noqa: ASYNC109
        """Export everything offered so far, partial batches included, and wait for it.

        Returns once every record offered before the call is exported or dropped, or after
        ``timeout`` seconds. It does not block the event loop. Records a tail-sampling stage
        holds for a trace not yet decided stay held (``Stats.spans_pending_tail``): a flush
        forces no decision.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes (each export is
                still bounded by ``export_timeout``).

        Returns:
            A :class:`FlushReport` saying whether everything was settled.

        Raises:
            ValueError: ``timeout`` is negative or not a number.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
        if get_ident() == self._loop_thread:
            # Everything threads handed over before this call, in slices of TAKE_AT_ONCE with a
            # checkpoint between them; what they hand over meanwhile is the next flush's.
            waiting = len(self._inbox)
            while waiting > 0 and len(self._inbox):
                self._drain_inbox()
                waiting -= TAKE_AT_ONCE
                if waiting > 0:
                    await checkpoint()
            if self._collected and self._state != "closing":
                self._bury()
        targets = [lane.request_flush() for lane in self._lanes]
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            for lane, target in zip(self._lanes, targets, strict=True):
                await lane.wait_settled(target)
        pending = tuple(
            lane.pending(target) for lane, target in zip(self._lanes, targets, strict=True)
        )
        return FlushReport(completed=not any(pending), pending=pending, stats=self.stats())

    def stats(self) -> Stats:
        """A snapshot of the counters; valid before, during and after the tracer's life."""
        if self._collected and (
            self._state == "closed" or (self._state == "open" and get_ident() == self._loop_thread)
        ):
            self._bury()
        pending_tail = sampled_out_tail = 0
        for processor in self._processors:
            pending_tail += self._ask(processor, processor.pending)
            sampled_out_tail += self._ask(processor, processor.sampled_out)
        return Stats(
            spans_started=self._spans_started + self._inbox.started,
            spans_ended=self._spans_ended,
            lanes=tuple(lane.stats() for lane in self._lanes),
            inbox=len(self._inbox),
            ignored_calls=self._ignored,
            processor_errors=self._processor_errors,
            spans_sampled_out=self._unsampled_count() + sampled_out_tail,
            spans_sampled_out_tail=sampled_out_tail,
            spans_pending_tail=pending_tail,
            sampler_errors=self._sampler_errors,
        )

    def _ask(self, processor: SpanProcessor, counter: Callable[[], int]) -> int:
        """One of a processor's counters; a processor of the caller's that fails counts 0."""
        try:
            value = counter()
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            value = 0
        return value if type(value) is int and value >= 0 else 0

    @property
    def sampler(self) -> Sampler:
        """The head sampler: ``sampler=``, or what ``OTEL_TRACES_SAMPLER`` names."""
        return self._sampler

    @property
    def tail(self) -> TailSampling | None:
        """The tail-sampling stage given as ``tail=``, if any."""
        return self._tail

    @property
    def closed(self) -> bool:
        """True once the tracer has stopped accepting records."""
        return self._state in ("closing", "closed")

    @property
    def is_open(self) -> bool:
        """True from entering ``async with`` until its shutdown has finished (records are
        still taken while it drains)."""
        return self._state in ("open", "closing")

    @property
    def exporters(self) -> tuple[object, ...]:
        """The exporters, one per lane, in the order given."""
        return tuple(lane.exporter for lane in self._lanes)

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> None:
        raise TypeError(
            "a Tracer is an async context manager: use `async with open_tracer(...) as tracer:`"
        )

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raised
        return None

    async def __aenter__(self) -> Tracer:
        if self._state != "new" or self._ready is not None:
            raise RuntimeError("a Tracer can be opened only once")
        self._loop_thread = get_ident()
        self._ready = anyio.Event()
        self._close_requested = anyio.Event()
        self._finished = anyio.Event()
        self._inbox.open(LoopHandle(), self._drain_inbox, self._orphaned)
        spawn_service(self._serve, name=f"spanlane tracer {id(self):#x}")
        # Shielded: entering the tracer while cancelled (an ASGI server stopping during startup)
        # must still leave it open and closable; the body sees the cancellation instead.
        with anyio.CancelScope(shield=True):
            await self._ready.wait()
        self._context_token = use_tracer(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reset_tracer(self._context_token)
        await ki_protected(self._wait_closed)()

    async def _wait_closed(self) -> None:
        """Ask the service to shut down and wait for it, within the exit deadline."""
        assert self._close_requested is not None
        assert self._finished is not None
        self._close_requested.set()
        interrupt: BaseException | None = None
        limit = self.drain_timeout + ACLOSE_GRACE + EXIT_MARGIN
        with anyio.CancelScope(shield=True), anyio.move_on_after(limit) as scope:
            while not self._finished.is_set():
                try:
                    await self._finished.wait()
                except BaseException as exc:
                    # Inside this shield only a Ctrl-C gets here: trio's KeyboardInterrupt, or
                    # asyncio's native cancellation of the main task (what its runner does on
                    # Ctrl-C). Cut the drain short: what the lanes hold is counted, the exporters
                    # still get aclose() and its grace; then the interruption propagates.
                    if isinstance(exc, KeyboardInterrupt) or (
                        is_cancellation(exc) and not scope.cancel_called
                    ):
                        interrupt = interrupt or exc
                        self._hurry = True
                        for lane in self._lanes:
                            lane.cancel()
                    else:  # pragma: no cover - nothing else can arrive here
                        raise
        if not self._finished.is_set():
            logger.warning(
                "spanlane: the tracer did not finish closing within %.1f s; leaving it to finish "
                "in the background",
                limit,
            )
        if interrupt is not None:
            raise interrupt

    async def _serve(self) -> None:
        """The service task: open the lanes, wait for the close, shut down. Never raises."""
        assert self._ready is not None
        assert self._close_requested is not None
        assert self._finished is not None
        suppress(INVALID_SPAN)  # spans started by telemetry's own code (exporters) do not record
        abandoned = False
        try:
            async with anyio.create_task_group() as task_group:
                try:
                    with anyio.CancelScope(shield=True):
                        for lane in self._lanes:
                            lane.open()
                            await task_group.start(ki_protected(lane.run))
                    if self._runners:
                        self._runner_scope = anyio.CancelScope()
                        self._runners_done = anyio.Event()
                        task_group.start_soon(ki_protected(self._run_processors))
                    self._state = "open"
                    self._fast = True
                    tracer_opened(self)
                    self._ready.set()
                    await self._close_requested.wait()
                except BaseException as exc:
                    if not is_cancellation(exc):  # pragma: no cover - nothing above raises
                        raise
                    # The loop is ending with the tracer still open (never exited, or
                    # garbage-collected open): drain what can be drained, count the rest.
                    absorb_loop_cancellation()
                    abandoned = True
                with anyio.CancelScope(shield=True):
                    await self._shutdown(abandoned)
        except BaseException as exc:
            if not is_cancellation(exc):
                logger.error("spanlane: the tracer's service task failed", exc_info=exc)
        finally:
            self._fast = False
            self._state = "closed"
            tracer_closed(self)
            for lane in self._lanes:  # normally all done already; a crash must not hide records
                lane.close()
            self._ready.set()
            self._finished.set()

    async def _shutdown(self, abandoned: bool) -> None:
        deadline = anyio.current_time() + self.drain_timeout
        self._state = "closing"
        tracer_closed(self)
        if abandoned:
            logger.warning(
                "spanlane: the event loop is ending with a tracer still open; draining it "
                "(leave `async with open_tracer(...)` to close it yourself)"
            )
        await self._end_open_spans(deadline)
        with self._inbox.lock:
            self._fast = False
            remaining = self._inbox.close()
            self._hand_on_locked(remaining)
            if self._collected:
                self._bury()
        await self._stop_processors(deadline)
        for processor in self._processors:
            try:
                with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
                    await processor.shutdown(deadline)
            except BaseException as exc:
                if is_cancellation(exc):
                    raise
                self._processor_failed(processor, exc)
        for lane in self._lanes:
            lane.close()
        with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
            for lane in self._lanes:
                await lane.wait_done()
        for lane in self._lanes:
            if not lane.done:
                lane.cancel()
        with anyio.move_on_after(ACLOSE_GRACE):
            for lane in self._lanes:
                await lane.wait_done()
        for lane in self._lanes:
            # Still not done: an export or aclose() ignores cancellation. Count now, so that
            # the caller's exit (at most EXIT_MARGIN later) finds the books closed.
            lane.abandon()
        self._report_drops()
        for lane in self._lanes:
            await lane.wait_done()

    def _report_drops(self) -> None:
        """One line per lane that dropped anything in the tracer's life, totals by reason.

        The warnings while the tracer ran are rate-limited (one per reason every 10 s), so a
        burst shows as "dropped 1 record(s)"; this says how many went, in all.
        """
        for stats in self.stats().lanes:
            if stats.dropped:
                totals = ", ".join(
                    f"{count} {reason.value}" for reason, count in stats.dropped.items()
                )
                logger.warning(
                    "spanlane lane %r dropped %d of %d record(s) in all: %s",
                    stats.exporter,
                    stats.dropped_total,
                    stats.offered,
                    totals,
                )

    async def _run_processors(self) -> None:
        """Run the processors' background work (``SpanProcessor.run``) until the shutdown."""
        assert self._runner_scope is not None
        assert self._runners_done is not None
        try:
            with self._runner_scope:
                async with anyio.create_task_group() as group:
                    for processor in self._runners:
                        group.start_soon(self._run_processor, processor)
        finally:
            self._runners_done.set()

    async def _run_processor(self, processor: SpanProcessor) -> None:
        assert self._runner_scope is not None
        try:
            await processor.run()
        except BaseException as exc:
            if not is_cancellation(exc):
                self._processor_failed(processor, exc)
                return
            # asyncio's teardown of a loop with the tracer still open cancels every task: the
            # work is done by the processor's shutdown(), which the service still awaits.
            if not self._runner_scope.cancel_called and absorb_loop_cancellation():
                return
            raise

    async def _stop_processors(self, deadline: float) -> None:
        """Cancel the processors' background work and wait for it (within ``deadline``)."""
        if self._runner_scope is None or self._runners_done is None:
            return
        self._runner_scope.cancel()
        with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
            await self._runners_done.wait()

    async def _end_open_spans(self, deadline: float) -> None:
        """End every span still open (or collected unended) as unfinished; past ``deadline``,
        only count them."""
        steps = 0
        while self.open_spans or self._collected:
            if self._hurry or anyio.current_time() >= deadline:
                self._abandon_open_spans()
                return
            try:
                if self._collected:
                    rec = self._collected.popleft()
                else:
                    _, rec = self.open_spans.popitem()  # the right to end it, as end() takes
            except (KeyError, IndexError):  # pragma: no cover - emptied by another thread
                continue
            record = seal_unfinished(rec)
            # At shutdown it is worth waiting (within the drain deadline) for room: the span
            # left open is the likeliest to explain why the program stopped.
            for lane in self._lanes:
                await lane.wait_for_room(deadline, record)
            self.deliver(record)
            steps += 1
            if steps % _UNFINISHED_PER_STEP == 0:
                await checkpoint()

    def _abandon_open_spans(self) -> None:
        """Past the drain deadline: claim every open span, count it, build nothing."""
        count = 0
        while True:
            try:
                _, rec = self.open_spans.popitem()
            except KeyError:
                break
            abandon(rec)
            count += 1
        while self._collected:
            try:
                self._collected.popleft()
            except IndexError:  # pragma: no cover - emptied by another thread
                break
            count += 1
        if count:
            self._spans_ended += count
            for lane in self._lanes:
                lane.count_at_door(DropReason.SHUTDOWN_TIMEOUT, count)


def _flags(flags: object) -> int:
    """A child's trace flags: the parent's W3C byte, with "sampled" (it is being recorded)."""
    return (flags & 0xFF if type(flags) is int else 0) | SAMPLED_FLAG


def open_tracer(
    *exporters: object,
    service_name: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    buffer_size: int = 2048,
    max_batch_size: int = 512,
    flush_interval: float = 1.0,
    on_full: OnFull = "drop",
    wait_timeout: float = 1.0,
    drain_timeout: float = 10.0,
    export_timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    limits: SpanLimits | None = None,
    scope: InstrumentationScope = DEFAULT_SCOPE,
    processors: Iterable[SpanProcessor] = (),
    max_concurrent_exports: int | None = None,
    max_buffer_bytes: int | None = None,
    sampler: Sampler | None = None,
    tail: TailSampling | None = None,
) -> Tracer:
    """Open a tracer with one lane per exporter; use the result with ``async with``.

    The lane options (``buffer_size`` to ``retry``, but ``drain_timeout``) are the defaults of
    every lane; an exporter wrapped in :func:`spanlane.lane` overrides the ones it names.

    Args:
        *exporters: where records go: exporters, or :func:`spanlane.lane` specs; each gets its
            own bounded buffer and drain worker.
        service_name: ``service.name`` of the resource (wins over ``OTEL_SERVICE_NAME``).
        resource_attributes: more resource attributes (win over ``OTEL_RESOURCE_ATTRIBUTES``).
        buffer_size: records each lane's stream holds at most.
        max_batch_size: records per export call at most; a full batch is exported at once.
        flush_interval: seconds a record may wait for its batch to fill before it is exported.
        on_full: what a full lane does with a new record: ``"drop"`` drops it (and counts it);
            ``"wait"`` makes a span ended by ``async with`` (or ``await span.aend()``) wait up
            to ``wait_timeout`` for room, then drop. A span ended synchronously never waits.
        wait_timeout: seconds an async span end may wait for room, with ``on_full="wait"``.
        drain_timeout: seconds allowed on exit to export what is queued; then the workers are
            cancelled and what was left is counted ``SHUTDOWN_TIMEOUT``. Leaving the tracer
            takes at most ``drain_timeout`` + 1.4 s, whatever the exporters do.
        export_timeout: seconds one export attempt may take; an attempt that runs out of
            time is retried, within the retry policy.
        retry: the retry policy (attempts, backoff, retry window).
        limits: bounds on attributes, events and links per span.
        scope: the instrumentation scope reported with every span.
        processors: stages between the tracer and the lanes, in order
            (:class:`spanlane.SpanProcessor`).
        max_concurrent_exports: batches each lane exports at once; None takes what each
            exporter declares (else 1). See :class:`spanlane.LaneOptions`.
        max_buffer_bytes: the most estimated bytes each lane's records may hold, or None.


        sampler: decides when each span starts whether it is recorded (see
            :mod:`spanlane.sampling`). By default what ``OTEL_TRACES_SAMPLER`` and
            ``OTEL_TRACES_SAMPLER_ARG`` name, else ``ParentBased(ALWAYS_ON)``: every root, and
            every child as its parent was (a ``traceparent ...-00`` is honoured).
        tail: a :class:`spanlane.sampling.TailSampling` stage, placed after the processors:
            it holds the records of each trace until it can keep or discard the trace whole.

    Returns:
        A :class:`Tracer`, to be entered with ``async with``.

    Raises:
        ValueError: a size or interval is not positive, ``max_batch_size > buffer_size``,
            ``on_full`` is unknown, no exporter was given, one exporter is given twice, or the
            ``tail`` stage is also in ``processors`` or already serves another tracer.
        TypeError: an exporter is a class instead of an instance or has no ``export()``;
            ``retry``, ``limits``, ``scope``, a processor, ``sampler`` (an object with a
            ``should_sample()`` method) or ``tail`` has the wrong type.
    """
    defaults = LaneOptions(
        buffer_size=buffer_size,
        max_batch_size=max_batch_size,
        flush_interval=flush_interval,
        on_full=on_full,
        wait_timeout=wait_timeout,
        export_timeout=export_timeout,
        retry=RetryPolicy() if retry is None else retry,
        max_concurrent_exports=max_concurrent_exports,
        max_buffer_bytes=max_buffer_bytes,
    )
    return Tracer(
        *exporters,
        lane_defaults=defaults,
        service_name=service_name,
        resource_attributes=resource_attributes,
        drain_timeout=drain_timeout,
        limits=limits,
        scope=scope,
        processors=processors,
        sampler=sampler,
        tail=tail,
    )


def span(
    name: str,
    *,
    attributes: Mapping[str, object] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Iterable[Link | SpanContext | Span] = (),
    parent: Span | SpanContext | None = None,
) -> Span:
    """Start a span on the current tracer; a cheap non-recording span when there is none.

    Same arguments as :meth:`Tracer.span`.
    """
    tracer = get_tracer()
    if tracer is None:
        return INVALID_SPAN
    return tracer.span(name, attributes=attributes, kind=kind, links=links, parent=parent)


def lanes_of(tracer: Tracer) -> Sequence[Lane]:
    """The tracer's lanes (for spanlane's own tests and tools)."""
    return tracer._lanes
