"""Span: the live, caller-owned handle. Ending it freezes it into a :class:`SpanRecord` once.

A span is mutable until it ends and inert afterwards: every setter becomes a no-op, so nothing a
caller does later can change the record exporters see.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from contextvars import Token
from time import time_ns
from time import time_ns as _clock_ns  # add_event's time_ns parameter hides the name
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._attributes import SpanLimits, coerce_attributes, coerce_value, freeze
from ._context import current_span_var
from ._records import (
    CANCELLED_ATTRIBUTE,
    DEFAULT_SCOPE,
    EMPTY_ATTRIBUTES,
    EMPTY_RESOURCE,
    RECORD_FIELDS,
    UNFINISHED_ATTRIBUTE,
    UNSET_STATUS,
    AttributeValue,
    Event,
    InstrumentationScope,
    Link,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
    _RecordBuilder,
    new_record,
)

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Self


class SpanSink(Protocol):
    """Where a span delivers its records: implemented by the tracer."""

    limits: SpanLimits
    resource: Resource
    scope: InstrumentationScope

    def _end_span(self, span: Span, record: SpanRecord) -> None: ...

    async def _aend_span(self, span: Span, record: SpanRecord) -> None: ...


def _is_cancellation(exc: BaseException) -> bool:
    """True for the running backend's cancellation, also inside an exception group."""
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except Exception:  # not in an async context (a worker thread): no backend to ask
        return False
    if isinstance(exc, cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(inner) for inner in exc.exceptions)
    return False


class Span:
    """A span being recorded. Use it as ``with`` or ``async with``, or end it with :meth:`end`.

    Entering the span makes it the current span (the parent of spans started inside); leaving it
    ends it. An exception leaving the body marks the span as an error, records an ``exception``
    event and propagates unchanged; cancellation is not an error: the span gets the attribute
    ``spanlane.cancelled = True``.

    Attributes:
        parent: the parent's context, or None for a root span.
    """

    # The span's record is built once, at start, as a mutable _RecordBuilder; the span updates
    # it in place (status, drop counts) and ending it only stores what changed and re-labels it
    # as a frozen SpanRecord. Copying eighteen fields at the end would cost as much again.
    __slots__ = ("_attributes", "_context", "_events", "_rec", "_sink", "_token", "parent")

    def __init__(
        self,
        sink: SpanSink | None,
        name: str,
        trace_id: int,
        span_id: int,
        trace_state: str,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time_ns: int,
        attributes: dict[str, AttributeValue] | None,
        dropped_attributes: int,
        links: tuple[Link, ...],
        dropped_links: int,
    ) -> None:
        self._sink = sink
        self._rec = _RecordBuilder(
            name,
            trace_id,
            span_id,
            None if parent is None else parent.span_id,
            kind,
            start_time_ns,
            None,
            EMPTY_ATTRIBUTES,
            (),
            links,
            UNSET_STATUS,
            dropped_attributes,
            0,
            dropped_links,
            EMPTY_RESOURCE if sink is None else sink.resource,
            DEFAULT_SCOPE if sink is None else sink.scope,
            trace_state,
            parent is not None and parent.is_remote,
        )
        self.parent = parent
        self._attributes = attributes
        self._events: list[Event] | None = None
        self._context: SpanContext | None = None
        self._token: Token[Span | None] | None = None

    def __repr__(self) -> str:
        rec = self._rec
        state = "open" if rec.end_time_ns is None else "ended"
        return (
            f"<{type(self).__name__} {rec.name!r} trace={rec.trace_id:032x} "
            f"span={rec.span_id:016x} {state}>"
        )

    # --- state -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The span's name."""
        return self._rec.name  # type: ignore[no-any-return]

    @property
    def kind(self) -> SpanKind:
        """The span's kind."""
        return self._rec.kind  # type: ignore[no-any-return]

    @property
    def context(self) -> SpanContext:
        """The span's own :class:`SpanContext` (trace id, span id, flags, trace state)."""
        context = self._context
        if context is None:
            rec = self._rec
            flags = 1 if self.parent is None else self.parent.trace_flags
            context = self._context = SpanContext(rec.trace_id, rec.span_id, flags, rec.trace_state)
        return context

    @property
    def is_recording(self) -> bool:
        """True until the span has ended; setters are no-ops afterwards."""
        return self._sink is not None and self._rec.end_time_ns is None

    @property
    def start_time_ns(self) -> int:
        """Start time, nanoseconds since the Unix epoch."""
        return self._rec.start_time_ns  # type: ignore[no-any-return]

    @property
    def end_time_ns(self) -> int | None:
        """End time in nanoseconds since the epoch, or None while the span is open."""
        return self._rec.end_time_ns  # type: ignore[no-any-return]

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """A read-only view of the attributes set so far."""
        return freeze(self._attributes)

    @property
    def status(self) -> Status:
        """The span's current status."""
        return self._rec.status  # type: ignore[no-any-return]

    @property
    def record(self) -> SpanRecord | None:
        """The frozen record once the span has ended, else None."""
        rec = self._rec
        return rec if isinstance(rec, SpanRecord) else None

    # --- setters -----------------------------------------------------------------------------

    def update_name(self, name: str) -> None:
        """Rename the span (for example once a router has matched the request's route).

        Raises:
            TypeError: ``name`` is not a str.
        """
        if type(name) is not str:
            raise TypeError(f"span name must be a str, got {type(name).__name__}")
        if self.is_recording:
            self._rec.name = name

    def set_attribute(self, key: str, value: object) -> None:
        """Set one attribute, coerced to an OTLP-legal value.

        A non-string or empty key, a None value, or a new key past ``SpanLimits.max_attributes``
        is dropped and counted in the record's ``dropped_attributes``; it never raises.
        """
        rec = self._rec
        if rec.end_time_ns is not None or self._sink is None:
            return
        if type(key) is not str or not key:
            rec.dropped_attributes += 1
            return
        limits = self._sink.limits
        coerced = coerce_value(value, limits.max_attribute_length)
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = {}
        if coerced is None or (key not in attributes and len(attributes) >= limits.max_attributes):
            rec.dropped_attributes += 1
            return
        attributes[key] = coerced

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        """Set several attributes; see :meth:`set_attribute`."""
        if not self.is_recording:
            return
        try:
            items = list(attributes.items())
        except Exception:
            self._rec.dropped_attributes += 1
            return
        for key, value in items:
            self.set_attribute(key, value)

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, object] | None = None,
        *,
        time_ns: int | None = None,
    ) -> None:
        """Add a timestamped event; past ``SpanLimits.max_events`` it is dropped and counted.

        Args:
            name: the event name.
            attributes: the event's attributes, coerced like span attributes.
            time_ns: the event time in nanoseconds since the epoch (now by default).
        """
        if not self.is_recording:
            return
        limits = self._sink.limits  # type: ignore[union-attr]
        events = self._events
        if events is None:
            events = self._events = []
        if len(events) >= limits.max_events:
            self._rec.dropped_events += 1
            return
        kept, dropped = coerce_attributes(
            attributes, limits.max_event_attributes, limits.max_attribute_length
        )
        events.append(
            Event(
                name if type(name) is str else _safe_str(name),
                time_ns if type(time_ns) is int else _clock_ns(),
                freeze(kept),
                dropped,
            )
        )

    def record_exception(
        self, exc: BaseException, attributes: Mapping[str, object] | None = None
    ) -> None:
        """Add an ``exception`` event with the type, message and stack trace of ``exc``.

        This does not change the status; leaving a ``with`` block by an exception does both.
        """
        if not self.is_recording:
            return
        try:
            stacktrace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:
            stacktrace = ""
        event_attributes: dict[str, object] = {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": _safe_str(exc),
            "exception.stacktrace": stacktrace,
        }
        if attributes:
            event_attributes.update(attributes)
        self.add_event("exception", event_attributes)

    def set_status(self, code: StatusCode, description: str | None = None) -> None:
        """Set the status. ``OK`` is final; ``description`` is kept for ``ERROR`` only."""
        if not self.is_recording:
            return
        rec = self._rec
        if rec.status.code is StatusCode.OK:
            return
        code = StatusCode(code)
        if code is StatusCode.UNSET:
            return
        if code is StatusCode.ERROR and description is not None:
            rec.status = Status(code, _safe_str(description))
        else:
            rec.status = Status(code)

    # --- ending ------------------------------------------------------------------------------

    def end(self, end_time_ns: int | None = None) -> None:
        """End the span and hand its record to every lane. Ending twice is a no-op.

        This never waits: a full lane drops the record and counts it. It is safe to call from a
        worker thread; the hand-off then happens on the event loop thread.

        Args:
            end_time_ns: the end time in nanoseconds since the epoch (now by default).
        """
        record = self._finish(end_time_ns)
        if record is not None:
            self._sink._end_span(self, record)  # type: ignore[union-attr]

    async def aend(self, end_time_ns: int | None = None) -> None:
        """End the span; with ``on_full="wait"`` wait up to ``wait_timeout`` for room in lanes."""
        record = self._finish(end_time_ns)
        if record is not None:
            await self._sink._aend_span(self, record)  # type: ignore[union-attr]

    def _finish(self, end_time_ns: int | None) -> SpanRecord | None:
        rec = self._rec
        if rec.end_time_ns is not None or self._sink is None:
            return None
        rec.end_time_ns = end_time_ns if type(end_time_ns) is int else time_ns()
        return self._seal(rec)

    def _seal(self, rec: Any) -> SpanRecord:
        """Store what only the live span held and freeze the builder into the record."""
        if self._attributes:
            # Wrapped, not copied: the span never writes to the dict again.
            rec.attributes = MappingProxyType(self._attributes)
        if self._events:
            rec.events = tuple(self._events)
        rec.__class__ = SpanRecord
        return rec  # type: ignore[no-any-return]

    def _mark(self, key: str) -> None:
        """Set one of spanlane's own marker attributes (``spanlane.unfinished``/``cancelled``).

        Not through :meth:`set_attribute`: a span already holding ``max_attributes`` attributes
        would drop the marker, and the record would no longer say how the span ended (found by
        the fuzz suite). A marker may exceed the limit by one; the limit bounds the caller's data.
        """
        if not self.is_recording:
            return
        if self._attributes is None:
            self._attributes = {}
        self._attributes[key] = True

    def _end_unfinished(self) -> SpanRecord | None:
        """Mark the span unfinished and freeze it; used by the tracer at shutdown."""
        self._mark(UNFINISHED_ATTRIBUTE)
        return self._finish(None)

    def _start_record(self) -> SpanRecord:
        """A separate frozen copy of the span as it is now, for start notifications."""
        fields = {name: getattr(self._rec, name) for name in RECORD_FIELDS}
        # Copied, not wrapped: the live span keeps changing its attributes.
        fields["attributes"] = freeze(dict(self._attributes) if self._attributes else None)
        return new_record(**fields)

    # --- context managers ----------------------------------------------------------------------

    def _exit(self, exc: BaseException | None) -> None:
        token = self._token
        if token is not None:
            self._token = None
            try:
                current_span_var.reset(token)
            except ValueError:
                # Left in another context than it was entered in (a misuse we survive): the
                # entering context keeps its value, this one is not ours to change.
                pass
        if exc is not None and self.is_recording:
            self._note_exception(exc)

    def _note_exception(self, exc: BaseException) -> None:
        if _is_cancellation(exc):
            self._mark(CANCELLED_ATTRIBUTE)
        elif isinstance(exc, GeneratorExit):
            return
        else:
            self.record_exception(exc)
            if self._rec.status.code is StatusCode.UNSET:
                self.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {_safe_str(exc)}")

    def __enter__(self) -> Self:
        if self._token is not None:
            raise RuntimeError(f"{self!r} is already entered; a span can be entered once")
        self._token = current_span_var.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)
        # The hot path: end() and _finish() inlined.
        rec = self._rec
        if rec.end_time_ns is None and self._sink is not None:
            rec.end_time_ns = time_ns()
            self._sink._end_span(self, self._seal(rec))

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)
        if exc is not None and _is_cancellation(exc):
            # The task is being cancelled: waiting for room now would only be cancelled too.
            self.end()
        else:
            await self.aend()


class NonRecordingSpan(Span):
    """A span that records nothing: what :func:`current_span` returns outside any span, and what
    :func:`spanlane.span` returns without a tracer. Every method is a cheap no-op."""

    __slots__ = ()

    def __init__(self, context: SpanContext) -> None:
        super().__init__(
            None,
            "",
            context.trace_id,
            context.span_id,
            context.trace_state,
            None,
            SpanKind.INTERNAL,
            0,
            None,
            0,
            (),
            0,
        )
        self._context = context

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


INVALID_CONTEXT = SpanContext(trace_id=0, span_id=0, trace_flags=0)
INVALID_SPAN = NonRecordingSpan(INVALID_CONTEXT)


def current_span() -> Span:
    """Return the current span, or a non-recording span when there is none."""
    span = current_span_var.get()
    return INVALID_SPAN if span is None else span


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__}>"


def make_links(
    links: Iterable[Link | SpanContext | Span] | None, limits: SpanLimits
) -> tuple[tuple[Link, ...], int]:
    """Normalise the ``links=`` argument: contexts and spans become links; apply the limit.

    Anything that is not a link, a context or a span is dropped and counted.
    """
    if not links:
        return (), 0
    kept: list[Link] = []
    dropped = 0
    try:
        items: Sequence[Any] = list(links)
    except Exception:
        return (), 1
    for item in items:
        if isinstance(item, Span):
            item = Link(item.context)
        elif isinstance(item, SpanContext):
            item = Link(item)
        if not isinstance(item, Link) or len(kept) >= limits.max_links:
            dropped += 1
            continue
        if item.attributes:
            attributes, extra = coerce_attributes(
                item.attributes, limits.max_link_attributes, limits.max_attribute_length
            )
            item = Link(item.context, freeze(attributes), item.dropped_attributes + extra)
        kept.append(item)
    return tuple(kept), dropped
