"""Tracer and open_tracer(): the task group that owns the drain workers, and the lifecycle.

Leaving ``async with open_tracer(...)`` by any path (normally, by an exception, or by cancellation
of an enclosing scope) does the same thing, shielded from that cancellation:

1. spans still open are ended with ``spanlane.unfinished = True`` and offered;
2. the lanes stop accepting records and drain what they hold, for at most ``drain_timeout``;
3. workers still busy at the deadline are cancelled, and what they held is counted as
   ``SHUTDOWN_TIMEOUT``;
4. every exporter's ``aclose()`` runs, with a grace period of its own (``ACLOSE_GRACE``);
5. the body's exception or cancellation propagates unchanged.

The task group is entered in ``__aenter__`` and left in ``__aexit__`` with no exception, after
every worker has finished, so the body's exception never passes through it: it cannot be wrapped
in an exception group, and nothing the tracer does can turn into a different exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from threading import get_ident
from time import time_ns
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._attributes import SpanLimits, coerce_attributes
from ._context import current_span_var, current_tracer_var
from ._ids import id_random, new_span_id, new_trace_id
from ._lane import Lane
from ._records import (
    DEFAULT_SCOPE,
    InstrumentationScope,
    Link,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
)
from ._resource import build_resource
from ._retry import RetryPolicy
from ._span import INVALID_SPAN, Span, make_links
from ._stats import FlushReport, Stats
from .exporters._base import Exporter

OnFull = Literal["drop", "wait"]

# Ids on the hot path: one getrandbits call, with the zero-avoiding loop only for a zero draw.
_getrandbits = id_random.getrandbits


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if type(value) is not int or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class Tracer:
    """Creates spans and delivers their records to one lane per exporter.

    Build it with :func:`open_tracer` and use it as an async context manager; it is not reusable
    once closed. See :func:`open_tracer` for the parameters.
    """

    def __init__(
        self,
        *exporters: Exporter,
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
    ) -> None:
        if not exporters:
            raise ValueError("exporters: at least one exporter is required")
        for exporter in exporters:
            if not callable(getattr(exporter, "export", None)):
                raise TypeError(f"exporters: {exporter!r} has no export() method")
        _positive_int("buffer_size", buffer_size)
        _positive_int("max_batch_size", max_batch_size)
        if max_batch_size > buffer_size:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) must not exceed buffer_size ({buffer_size})"
            )
        _positive("flush_interval", flush_interval)
        _positive("wait_timeout", wait_timeout)
        _positive("drain_timeout", drain_timeout)
        _positive("export_timeout", export_timeout)
        if on_full not in ("drop", "wait"):
            raise ValueError(f"on_full must be 'drop' or 'wait', got {on_full!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {retry!r}")
        if limits is not None and not isinstance(limits, SpanLimits):
            raise TypeError(f"limits must be a SpanLimits, got {limits!r}")

        self.limits = limits or SpanLimits()
        self.resource: Resource = build_resource(service_name, resource_attributes)
        self.scope = scope
        self.on_full: OnFull = on_full
        self.wait_timeout = float(wait_timeout)
        self.drain_timeout = float(drain_timeout)
        self._lanes = tuple(
            Lane(
                exporter,
                buffer_size=buffer_size,
                max_batch_size=max_batch_size,
                flush_interval=float(flush_interval),
                export_timeout=float(export_timeout),
                retry=retry or RetryPolicy(),
            )
            for exporter in exporters
        )
        self._start_lanes = tuple(lane for lane in self._lanes if lane.wants_starts)
        self._wait = on_full == "wait"
        self._open: set[Span] = set()
        self._spans_started = 0
        self._spans_ended = 0
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._task_group: TaskGroup | None = None
        # The thread that may touch the lanes; set again when the tracer is entered.
        self._loop_thread = get_ident()
        self._token: anyio.lowlevel.EventLoopToken | None = None
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
        links: Iterable[Link | SpanContext | Span] = (),
        parent: Span | SpanContext | None = None,
        start_time_ns: int | None = None,
    ) -> Span:
        """Start a span, to be used as ``with`` or ``async with`` (which ends it).

        Args:
            name: the span name.
            attributes: initial attributes, coerced like :meth:`Span.set_attribute`.
            kind: the span kind.
            links: links to other spans (``Link``, ``SpanContext`` or ``Span`` values).
            parent: the parent span or context; the current span by default. A remote
                ``SpanContext`` (from :func:`spanlane.propagation.extract`) continues a trace.
            start_time_ns: the start time in nanoseconds since the epoch (now by default).

        Returns:
            The started :class:`Span`.
        """
        if type(name) is not str:
            raise TypeError(f"span name must be a str, got {type(name).__name__}")
        if parent is None:
            parent = current_span_var.get()
        if parent is None:
            parent_context = None
        elif isinstance(parent, Span):
            parent_context = parent.context if parent._sink is not None else None
        elif isinstance(parent, SpanContext):
            parent_context = parent if parent.trace_id else None
        else:
            raise TypeError(f"parent must be a Span, a SpanContext or None, got {parent!r}")
        limits = self.limits
        if attributes:
            kept, dropped_attributes = coerce_attributes(
                attributes, limits.max_attributes, limits.max_attribute_length
            )
        else:
            kept, dropped_attributes = None, 0
        link_tuple, dropped_links = make_links(links, limits) if links else ((), 0)
        if parent_context is None:
            span = Span(
                self,
                name,
                _getrandbits(128) or new_trace_id(),
                _getrandbits(64) or new_span_id(),
                "",
                None,
                kind if type(kind) is SpanKind else SpanKind(kind),
                start_time_ns if type(start_time_ns) is int else time_ns(),
                kept,
                dropped_attributes,
                link_tuple,
                dropped_links,
            )
        else:
            span = Span(
                self,
                name,
                parent_context.trace_id,
                _getrandbits(64) or new_span_id(),
                parent_context.trace_state,
                parent_context,
                kind if type(kind) is SpanKind else SpanKind(kind),
                start_time_ns if type(start_time_ns) is int else time_ns(),
                kept,
                dropped_attributes,
                link_tuple,
                dropped_links,
            )
        if get_ident() != self._loop_thread:
            self._from_thread(self._register, span)
        else:
            self._register(span)
        return span

    def start_span(
        self,
        name: str,
        *,
        attributes: Mapping[str, object] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Iterable[Link | SpanContext | Span] = (),
        parent: Span | SpanContext | None = None,
        start_time_ns: int | None = None,
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
        )

    def _register(self, span: Span) -> None:
        self._spans_started += 1
        self._open.add(span)
        if self._start_lanes:
            self._offer_start(span)

    def _offer_start(self, span: Span) -> None:
        record = span._start_record()
        for lane in self._start_lanes:
            lane.offer_nowait(record)

    # --- the hand-off (called by Span) ------------------------------------------------------

    def _end_span(self, span: Span, record: SpanRecord) -> None:
        if get_ident() != self._loop_thread:
            self._from_thread(self._deliver, span, record)
        else:
            self._deliver(span, record)

    def _deliver(self, span: Span, record: SpanRecord) -> None:
        self._spans_ended += 1
        self._open.discard(span)
        for lane in self._lanes:
            lane.offer_nowait(record)

    async def _aend_span(self, span: Span, record: SpanRecord) -> None:
        if not self._wait or self._state != "open":
            self._end_span(span, record)
            return
        self._spans_ended += 1
        self._open.discard(span)
        deadline = anyio.current_time() + self.wait_timeout
        lanes = self._lanes
        for index, lane in enumerate(lanes):
            try:
                await lane.offer(record, deadline)
            except BaseException:
                # Cancelled while waiting for room in one lane: the lanes after it must still
                # get the record (or count its drop), else it would vanish from them silently.
                for later in lanes[index + 1 :]:
                    later.offer_nowait(record)
                raise

    def _from_thread(self, func: Any, *args: Any) -> None:
        """Run a hand-off on the event loop thread, from a worker or foreign thread.

        Memory-object streams are not thread-safe, so a thread never touches a lane itself. If
        the loop has stopped, the tracer is closed and the lanes only count (thread-safely enough
        for counters nobody else is updating any more).
        """
        token = self._token
        if token is None:  # never entered: no loop owns the lanes yet
            func(*args)
            return
        try:
            anyio.lowlevel.current_token()
        except RuntimeError:  # NoEventLoopError, or a context copied from a loop thread
            pass
        else:
            # This thread runs an event loop of its own (a blocking portal, another anyio.run).
            # Blocking in it would stall that loop, and trio refuses outright (RuntimeError),
            # so schedule the hand-off without waiting; calls from one thread run in order.
            try:
                token.backend_class.run_sync_soon(func, args, token.native_token)
            except anyio.RunFinishedError:
                func(*args)
            return
        try:
            anyio.from_thread.run_sync(func, *args, token=token)
        except RuntimeError:  # anyio.RunFinishedError, or asyncio closing: the loop has stopped
            func(*args)

    # --- flush and statistics ----------------------------------------------------------------

    # The issue fixes this signature; the timeout is applied with a cancel scope inside.
    async def flush(self, timeout: float | None = None) -> FlushReport:  # noqa: ASYNC109
        """Export everything offered so far, partial batches included, and wait for it.

        Returns once every record offered before the call is exported or dropped, or after
        ``timeout`` seconds. It does not block the event loop.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes (each export is
                still bounded by ``export_timeout``).

        Returns:
            A :class:`FlushReport` saying whether everything was settled.
        """
        targets = [lane.request_flush() for lane in self._lanes]
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            for lane, target in zip(self._lanes, targets, strict=True):
                await lane.wait_settled(target)
        pending = tuple(
            max(0, target - lane.settled) for lane, target in zip(self._lanes, targets, strict=True)
        )
        return FlushReport(completed=not any(pending), pending=pending, stats=self.stats())

    def stats(self) -> Stats:
        """A snapshot of the counters; valid before, during and after the tracer's life."""
        return Stats(
            spans_started=self._spans_started,
            spans_ended=self._spans_ended,
            lanes=tuple(lane.stats() for lane in self._lanes),
        )

    @property
    def closed(self) -> bool:
        """True once the tracer has stopped accepting records."""
        return self._state in ("closing", "closed")

    @property
    def exporters(self) -> tuple[Exporter, ...]:
        """The exporters, one per lane, in the order given."""
        return tuple(lane.exporter for lane in self._lanes)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Tracer:
        if self._state != "new":
            raise RuntimeError("a Tracer can be opened only once")
        self._state = "open"
        self._loop_thread = get_ident()
        self._token = anyio.lowlevel.current_token()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        # Shielded: a worker calls started() at once, from inside its own shielded scope, and
        # start() called in a cancelled scope waits for such a worker to *finish* (both
        # backends), which it never does: entering the tracer while cancelled (an ASGI server
        # stopping during startup) hung forever. The body sees the cancellation instead.
        with anyio.CancelScope(shield=True):
            for lane in self._lanes:
                lane.open()
                await task_group.start(lane.run)
        self._context_token = current_tracer_var.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            current_tracer_var.reset(self._context_token)
        except ValueError:  # left in another context than entered: nothing of ours to undo
            pass
        with anyio.CancelScope(shield=True):
            await self._shutdown()
        assert self._task_group is not None
        # Every worker has finished, so this neither waits nor raises.
        await self._task_group.__aexit__(None, None, None)
        self._state = "closed"

    async def _shutdown(self) -> None:
        deadline = anyio.current_time() + self.drain_timeout
        self._state = "closing"
        # A loop, not a snapshot: other tasks may start spans while this one waits for room.
        while self._open:
            span = self._open.pop()
            record = span._end_unfinished()
            if record is not None:
                self._spans_ended += 1
                # At shutdown it is worth waiting (within the drain deadline) for room.
                for lane in self._lanes:
                    await lane.offer(record, deadline)
        # Spans started from now on are not tracked: ending one counts its record CLOSED, and
        # one never ended produced no record to lose.
        self._open = _Untracked()
        for lane in self._lanes:
            lane.close()
        with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
            for lane in self._lanes:
                await lane.wait_done()
        for lane in self._lanes:
            if not lane.done:
                lane.cancel()
        for lane in self._lanes:
            await lane.wait_done()


class _Untracked(set[Span]):
    """The open-span set of a closed tracer: it forgets what it is given."""

    def add(self, span: Span) -> None:
        return None


def open_tracer(
    *exporters: Exporter,
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
) -> Tracer:
    """Open a tracer with one lane per exporter; use the result with ``async with``.

    Args:
        *exporters: where records go; each gets its own bounded buffer and drain worker.
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
            cancelled and what was left is counted ``SHUTDOWN_TIMEOUT``.
        export_timeout: seconds one batch may take to export, all retries included.
        retry: the retry policy for :class:`RetryableExportError`.
        limits: bounds on attributes, events and links per span.
        scope: the instrumentation scope reported with every span.

    Returns:
        A :class:`Tracer`, to be entered with ``async with``.

    Raises:
        ValueError: a size or interval is not positive, ``max_batch_size > buffer_size``,
            ``on_full`` is unknown, or no exporter was given.
    """
    return Tracer(
        *exporters,
        service_name=service_name,
        resource_attributes=resource_attributes,
        buffer_size=buffer_size,
        max_batch_size=max_batch_size,
        flush_interval=flush_interval,
        on_full=on_full,
        wait_timeout=wait_timeout,
        drain_timeout=drain_timeout,
        export_timeout=export_timeout,
        retry=retry,
        limits=limits,
        scope=scope,
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
    tracer = current_tracer_var.get()
    if tracer is None:
        return INVALID_SPAN
    return tracer.span(name, attributes=attributes, kind=kind, links=links, parent=parent)


def lanes_of(tracer: Tracer) -> Sequence[Lane]:
    """The tracer's lanes (for spanlane's own tests and tools)."""
    return tracer._lanes
