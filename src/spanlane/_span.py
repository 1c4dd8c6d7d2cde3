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
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._attributes import SpanLimits, coerce_attributes, coerce_value, freeze
from ._context import current_span_var
from ._records import (
    CANCELLED_ATTRIBUTE,
    DEFAULT_SCOPE,
    EMPTY_ATTRIBUTES,
    EMPTY_RESOURCE,
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
    UNFINISHED_ATTRIBUTE,
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
        name: the span's name.
        context: the span's own :class:`SpanContext`.
        parent: the parent's context, or None for a root span.
        kind: the span's :class:`SpanKind`.
    """

    __slots__ = (
        "_attributes",
        "_dropped_attributes",
        "_dropped_events",
        "_dropped_links",
        "_end_ns",
        "_events",
        "_links",
        "_sink",
        "_start_ns",
        "_status",
        "_tokens",
        "context",
        "kind",
        "name",
        "parent",
    )

    def __init__(
        self,
        sink: SpanSink | None,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time_ns: int,
        attributes: dict[str, AttributeValue] | None,
        dropped_attributes: int,
        links: tuple[Link, ...],
        dropped_links: int,
    ) -> None:
        self._sink = sink
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self._start_ns = start_time_ns
        self._attributes = attributes
        self._dropped_attributes = dropped_attributes
        self._links = links
        self._dropped_links = dropped_links
        self._events: list[Event] | None = None
        self._dropped_events = 0
        self._status = UNSET_STATUS
        self._end_ns: int | None = None
        self._tokens: list[Token[Span | None]] | None = None

    def __repr__(self) -> str:
        state = "ended" if self._end_ns is not None else "open"
        return (
            f"<{type(self).__name__} {self.name!r} trace={self.context.trace_id:032x} "
            f"span={self.context.span_id:016x} {state}>"
        )

    # --- state -------------------------------------------------------------------------------

    @property
    def is_recording(self) -> bool:
        """True until the span has ended; setters are no-ops afterwards."""
        return self._end_ns is None

    @property
    def start_time_ns(self) -> int:
        """Start time, nanoseconds since the Unix epoch."""
        return self._start_ns

    @property
    def end_time_ns(self) -> int | None:
        """End time in nanoseconds since the epoch, or None while the span is open."""
        return self._end_ns

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """A read-only view of the attributes set so far."""
        return freeze(self._attributes)

    @property
    def status(self) -> Status:
        """The span's current status."""
        return self._status

    # --- setters -----------------------------------------------------------------------------

    def set_attribute(self, key: str, value: object) -> None:
        """Set one attribute, coerced to an OTLP-legal value.

        A non-string or empty key, a None value, or a new key past ``SpanLimits.max_attributes``
        is dropped and counted in the record's ``dropped_attributes``; it never raises.
        """
        if self._end_ns is not None or self._sink is None:
            return
        if type(key) is not str or not key:
            self._dropped_attributes += 1
            return
        limits = self._sink.limits
        coerced = coerce_value(value, limits.max_attribute_length)
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = {}
        if coerced is None or (key not in attributes and len(attributes) >= limits.max_attributes):
            self._dropped_attributes += 1
            return
        attributes[key] = coerced

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        """Set several attributes; see :meth:`set_attribute`."""
        if self._end_ns is not None or self._sink is None:
            return
        try:
            items = list(attributes.items())
        except Exception:
            self._dropped_attributes += 1
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
        if self._end_ns is not None or self._sink is None:
            return
        limits = self._sink.limits
        events = self._events
        if events is None:
            events = self._events = []
        if len(events) >= limits.max_events:
            self._dropped_events += 1
            return
        kept, dropped = coerce_attributes(
            attributes, limits.max_event_attributes, limits.max_attribute_length
        )
        events.append(
            Event(
                name if type(name) is str else str(coerce_value(name)),
                time_ns if type(time_ns) is int else time_ns_now(),
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
        if self._end_ns is not None or self._sink is None:
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
        if self._end_ns is not None or self._sink is None:
            return
        if self._status.code is StatusCode.OK:
            return
        code = StatusCode(code)
        if code is StatusCode.UNSET:
            return
        if code is StatusCode.ERROR and description is not None:
            self._status = Status(code, _safe_str(description))
        else:
            self._status = Status(code)

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
        if self._end_ns is not None or self._sink is None:
            return None
        self._end_ns = end_ns = end_time_ns if type(end_time_ns) is int else time_ns()
        return self._record(end_ns)

    def _end_unfinished(self) -> SpanRecord | None:
        """Mark the span unfinished and freeze it; used by the tracer at shutdown."""
        self.set_attribute(UNFINISHED_ATTRIBUTE, True)
        return self._finish(None)

    def _record(self, end_ns: int | None) -> SpanRecord:
        sink = self._sink
        context = self.context
        parent = self.parent
        events = self._events
        return new_record(
            self.name,
            context.trace_id,
            context.span_id,
            None if parent is None else parent.span_id,
            self.kind,
            self._start_ns,
            end_ns,
            # At start the dict is copied, since the live span will keep changing it; at the end
            # it is wrapped as is, because nothing can change it any more.
            EMPTY_ATTRIBUTES
            if not self._attributes
            else freeze(self._attributes if end_ns is not None else dict(self._attributes)),
            tuple(events) if events else (),
            self._links,
            self._status,
            self._dropped_attributes,
            self._dropped_events,
            self._dropped_links,
            sink.resource if sink is not None else EMPTY_RESOURCE,
            sink.scope if sink is not None else DEFAULT_SCOPE,
            context.trace_state,
            parent is not None and parent.is_remote,
        )

    # --- context managers ----------------------------------------------------------------------

    def _enter(self) -> None:
        token = current_span_var.set(self)
        if self._tokens is None:
            self._tokens = [token]
        else:
            self._tokens.append(token)

    def _exit(self, exc: BaseException | None) -> None:
        tokens = self._tokens
        if tokens:
            try:
                current_span_var.reset(tokens.pop())
            except ValueError:
                # Left in another context than it was entered in (a misuse we survive): the
                # entering context keeps its value, this one is not ours to change.
                pass
        if exc is not None and self._end_ns is None:
            self._note_exception(exc)

    def _note_exception(self, exc: BaseException) -> None:
        if _is_cancellation(exc):
            self.set_attribute(CANCELLED_ATTRIBUTE, True)
        elif isinstance(exc, GeneratorExit):
            return
        else:
            self.record_exception(exc)
            if self._status.code is StatusCode.UNSET:
                self.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {_safe_str(exc)}")

    def __enter__(self) -> Self:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)
        self.end()

    async def __aenter__(self) -> Self:
        self._enter()
        return self

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
        super().__init__(None, "", context, None, SpanKind.INTERNAL, 0, None, 0, (), 0)

    @property
    def is_recording(self) -> bool:
        return False

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


def time_ns_now() -> int:
    """Nanoseconds since the Unix epoch (a seam for tests)."""
    return time_ns()


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
