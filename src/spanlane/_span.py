"""Span: the live, caller-owned handle. Ending it freezes it into a :class:`SpanRecord` once.

A span is mutable until it ends and inert afterwards: every setter becomes a no-op, so nothing a
caller does later can change the record exporters see.

Ending is safe from any thread and from re-entrant code (a ``__repr__`` that ends the span it is
being recorded on). Exactly one caller wins the right to end a span: it pops the span's entry
from the tracer's table of open spans, which is one atomic dict operation. The record then gets
a copy of the attribute dict, so a setter racing the end can only write into the live dict, which
no record references. Setters that lose such a race find the record frozen and do nothing.

No setter raises into the caller: a value that cannot be used is coerced, or ignored and counted
(see :meth:`SpanSink.note_ignored`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from threading import RLock
from time import time_ns
from time import time_ns as _clock_ns  # add_event's time_ns parameter hides the name
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast
from weakref import ref as _ref

from ._attributes import SpanLimits, coerce_attributes, coerce_value, freeze
from ._context import get_span, reset_current, reset_span, use_span
from ._ids import new_span_id, new_trace_id
from ._records import (
    CANCELLED_ATTRIBUTE,
    DEFAULT_SCOPE,
    EMPTY_ATTRIBUTES,
    EMPTY_RESOURCE,
    NOT_SAMPLED,
    RECORD_FIELDS,
    SAMPLED_FLAG,
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
    clean_flags,
    new_context,
    new_record,
)
from ._runtime import is_cancellation
from ._safe import exception_type, format_stacktrace, safe_str

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "INVALID_CONTEXT",
    "INVALID_SPAN",
    "NonRecordingSpan",
    "Span",
    "SpanSink",
    "Unsampled",
    "abandon",
    "clamp_time",
    "companion",
    "current_span",
    "make_links",
    "mark",
    "note_exception",
    "parent_context",
    "resource_of",
    "seal",
    "seal_unfinished",
    "set_companion",
    "start_record",
]

#: The largest timestamp OTLP can carry (fixed64 nanoseconds since the epoch).
MAX_TIME_NS = (1 << 64) - 1


class SpanSink(Protocol):
    """Where a span delivers its records: implemented by the tracer.

    Attributes:
        limits: bounds on what a span may carry.
        resource: the resource every record carries.
        scope: the instrumentation scope every record carries.
        open_spans: the builders of spans not yet ended, keyed by a weak reference to the span;
            popping a span's entry is the right to end it.
        on_collected: the weak reference's callback: a span was garbage-collected unended.
    """

    limits: SpanLimits
    resource: Resource
    scope: InstrumentationScope
    open_spans: dict[_ref[Span], Any]
    on_collected: Callable[[_ref[Span]], None]

    def deliver(self, record: SpanRecord) -> None:
        """Hand a finished record on, without waiting; from any thread."""

    async def adeliver(self, record: SpanRecord) -> None:
        """Hand a finished record on, waiting for room if the tracer's policy says so."""

    def note_ignored(self, what: str, value: object) -> None:
        """Count (and log, rate-limited) a call whose argument could not be used."""


def clamp_time(value: object, sink: SpanSink | None, what: str) -> int:
    """A timestamp in nanoseconds that OTLP can carry: an int clamped to ``[0, 2**64 - 1]``.

    None means now. Anything else that is not an int is ignored (counted) and means now too.
    """
    if type(value) is int:
        if 0 <= value <= MAX_TIME_NS:
            return value
        if sink is not None:
            sink.note_ignored(what, value)
        return 0 if value < 0 else MAX_TIME_NS
    if value is not None and sink is not None:
        sink.note_ignored(what, value)
    return time_ns()


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
    # as a frozen SpanRecord. Copying nineteen fields at the end would cost as much again.
    # While the span is live, the builder's ``attributes`` is a plain dict (or the shared empty
    # mapping) and its ``events`` a list (or ``()``); sealing turns them into a read-only copy and
    # a tuple. All of a span's state is in the builder, so the tracer can still seal it, as
    # unfinished, after the span handle itself has been garbage-collected unended.
    __slots__ = ("__weakref__", "_companion", "_context", "_rec", "_sink", "_token", "parent")

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
        trace_flags: int = SAMPLED_FLAG,
        scope: InstrumentationScope | None = None,
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
            EMPTY_ATTRIBUTES if attributes is None else attributes,
            (),
            links,
            UNSET_STATUS,
            dropped_attributes,
            0,
            dropped_links,
            EMPTY_RESOURCE if sink is None else sink.resource,
            scope if scope is not None else DEFAULT_SCOPE if sink is None else sink.scope,
            trace_state,
            parent is not None and parent.is_remote is True,
            trace_flags,
        )
        self.parent = parent
        self._context: SpanContext | None = None
        self._companion: object = None
        # None, the token of the one `with` that entered the span, or a list of tokens when it
        # was entered again before being left (a misuse that must not raise).
        self._token: Token[Span | None] | list[Token[Span | None]] | None = None
        if sink is not None:
            sink.open_spans[_ref(self, sink.on_collected)] = self._rec

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
            context = self._context = new_context(
                rec.trace_id, rec.span_id, rec.trace_flags, rec.trace_state
            )
        return context

    @property
    def is_recording(self) -> bool:
        """True until the span has ended; setters are no-ops afterwards.

        Always False for a :class:`NonRecordingSpan`, which includes the spans the sampler did
        not sample: code that computes an expensive attribute can check this first.
        """
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
        """A read-only snapshot of the attributes set so far."""
        attributes = self._rec.attributes
        return freeze(dict(attributes) if attributes else None)

    @property
    def status(self) -> Status:
        """The span's current status."""
        return self._rec.status  # type: ignore[no-any-return]

    @property
    def record(self) -> SpanRecord | None:
        """The frozen record once the span has ended, else None."""
        rec = self._rec
        return rec if type(rec) is SpanRecord else None

    # --- setters -----------------------------------------------------------------------------
    # Each setter checks that the span is recording, then writes into the builder. A write that
    # loses a race with end() (another thread, or re-entrant code) meets a frozen record and is
    # dropped: FrozenInstanceError is an AttributeError, caught where it can happen.

    def _count(self, field: str) -> None:
        try:
            rec = self._rec
            setattr(rec, field, getattr(rec, field) + 1)
        except AttributeError:
            pass

    def update_name(self, name: str) -> None:
        """Rename the span (for example once a router has matched the request's route).

        A name that is not a str is ignored (and counted in ``Stats.ignored_calls``).
        """
        if not self.is_recording:
            return
        if type(name) is not str:
            self._sink.note_ignored("update_name", name)  # type: ignore[union-attr]
            return
        try:
            self._rec.name = name
        except AttributeError:
            pass

    def set_attribute(self, key: str, value: object) -> None:
        """Set one attribute, coerced to an OTLP-legal value.

        A non-string or empty key, a None value, or a new key past ``SpanLimits.max_attributes``
        is dropped and counted in the record's ``dropped_attributes``; it never raises.
        """
        sink = self._sink
        if sink is None or self._rec.end_time_ns is not None:
            return
        if type(key) is not str or not key:
            self._count("dropped_attributes")
            return
        limits = sink.limits
        rec = self._rec
        attributes = rec.attributes
        if type(attributes) is not dict:
            attributes = {}
            try:
                rec.attributes = attributes
            except AttributeError:  # ended meanwhile
                return
        if key not in attributes and len(attributes) >= limits.max_attributes:
            self._count("dropped_attributes")
            return
        coerced = coerce_value(value, limits.max_attribute_length)
        if coerced is None:
            self._count("dropped_attributes")
            return
        # The coercion may have run the caller's code (a __repr__), which may have ended this
        # span; the write then goes to the live dict only, which the record does not share.
        attributes[key] = coerced

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        """Set several attributes; see :meth:`set_attribute`.

        A mapping that cannot be read counts as one dropped attribute; what was read before the
        failure is kept.
        """
        if not self.is_recording:
            return
        try:
            for key, value in attributes.items():
                self.set_attribute(key, value)
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            self._count("dropped_attributes")

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, object] | None = None,
        *,
        time_ns: int | None = None,
    ) -> None:
        """Add a timestamped event; past ``SpanLimits.max_events`` it is dropped and counted.

        Args:
            name: the event name (anything else is converted with ``str``).
            attributes: the event's attributes, coerced like span attributes.
            time_ns: the event time in nanoseconds since the epoch (now by default; clamped to
                what OTLP can carry).
        """
        sink = self._sink
        if sink is None or self._rec.end_time_ns is not None:
            return
        limits = sink.limits
        rec = self._rec
        events = rec.events
        if type(events) is not list:
            events = []
            try:
                rec.events = events
            except AttributeError:  # ended meanwhile
                return
        if len(events) >= limits.max_events:
            self._count("dropped_events")
            return
        kept, dropped = coerce_attributes(
            attributes, limits.max_event_attributes, limits.max_attribute_length
        )
        events.append(
            Event(
                name if type(name) is str else safe_str(name),
                _clock_ns() if time_ns is None else clamp_time(time_ns, sink, "add_event"),
                freeze(kept),
                dropped,
            )
        )

    def record_exception(
        self,
        exc: BaseException,
        attributes: Mapping[str, object] | None = None,
        *,
        time_ns: int | None = None,
    ) -> None:
        """Add an ``exception`` event with the type, message and stack trace of ``exc``.

        This does not change the status; leaving a ``with`` block by an exception does both.
        Anything but an exception is ignored (and counted).

        Args:
            exc: the exception.
            attributes: more event attributes (they win over the three above).
            time_ns: the event time in nanoseconds since the epoch (now by default).
        """
        if not self.is_recording:
            return
        given: object = exc
        if not isinstance(given, BaseException):
            self._sink.note_ignored("record_exception", given)  # type: ignore[union-attr]
            return
        event_attributes: dict[str, object] = {
            "exception.type": exception_type(exc),
            "exception.message": safe_str(exc),
            "exception.stacktrace": format_stacktrace(exc),
        }
        if attributes is not None:
            limits = self._sink.limits  # type: ignore[union-attr]
            extra, _ = coerce_attributes(attributes, limits.max_event_attributes, None)
            event_attributes.update(extra)
        self.add_event("exception", event_attributes, time_ns=time_ns)

    def add_link(
        self, context: SpanContext | Span, attributes: Mapping[str, object] | None = None
    ) -> None:
        """Link the span to another span after it started (as OpenTelemetry's ``add_link``).

        A link to an invalid context, or past ``SpanLimits.max_links``, is dropped and counted
        in the record's ``dropped_links``.
        """
        sink = self._sink
        if sink is None or self._rec.end_time_ns is not None:
            return
        given: object = context
        if isinstance(given, Span):
            given = given.context
        if not isinstance(given, SpanContext):
            self._count("dropped_links")
            return
        link = Link(given) if attributes is None else Link(given, attributes)  # type: ignore[arg-type]
        kept, dropped = make_links((link,), sink.limits)
        rec = self._rec
        if dropped or len(rec.links) >= sink.limits.max_links:
            self._count("dropped_links")
            return
        try:
            rec.links = rec.links + kept
        except AttributeError:  # ended meanwhile
            pass

    def set_status(self, code: StatusCode | Status, description: str | None = None) -> None:
        """Set the status. ``OK`` is final; ``description`` is kept for ``ERROR`` only.

        ``code`` may be a :class:`StatusCode`, its int value, or a :class:`Status`; anything else
        is ignored (and counted).
        """
        if not self.is_recording:
            return
        given: object = code
        if isinstance(given, Status):
            description = given.description
            given = given.code
        if type(given) is int and given in (0, 1, 2):
            given = StatusCode(given)
        if type(given) is not StatusCode:
            self._sink.note_ignored("set_status", given)  # type: ignore[union-attr]
            return
        rec = self._rec
        if rec.status.code is StatusCode.OK or given is StatusCode.UNSET:
            return
        if given is StatusCode.ERROR and description is not None:
            status = Status(given, safe_str(description))
        else:
            status = Status(given)
        try:
            rec.status = status
        except AttributeError:
            pass

    # --- ending ------------------------------------------------------------------------------

    def end(self, end_time_ns: int | None = None) -> None:
        """End the span and hand its record on. Ending twice is a no-op, from any thread.

        This never waits: a full lane drops the record and counts it. It is safe to call from any
        thread; the record reaches the lanes through the tracer's thread inbox.

        Args:
            end_time_ns: the end time in nanoseconds since the epoch (now by default).
        """
        record = self._finish(end_time_ns)
        if record is not None:
            self._sink.deliver(record)  # type: ignore[union-attr]

    async def aend(self, end_time_ns: int | None = None) -> None:
        """End the span; with ``on_full="wait"`` wait up to ``wait_timeout`` for room in lanes."""
        record = self._finish(end_time_ns)
        if record is not None:
            await self._sink.adeliver(record)  # type: ignore[union-attr]

    def _finish(self, end_time_ns: int | None) -> SpanRecord | None:
        sink = self._sink
        if sink is None or self._rec.end_time_ns is not None:
            return None
        # The right to end the span: one atomic pop, won by exactly one caller.
        if sink.open_spans.pop(_ref(self), None) is None:
            return None
        rec = self._rec
        if end_time_ns is None:
            rec.end_time_ns = time_ns()
        else:
            rec.end_time_ns = clamp_time(end_time_ns, sink, "end")
        return seal(rec)

    def _mark(self, key: str) -> None:
        """Set one of spanlane's own marker attributes (``spanlane.unfinished``/``cancelled``)."""
        if self.is_recording:
            mark(self._rec, key)

    # --- context managers ----------------------------------------------------------------------

    def _leave(self) -> None:
        token = self._token
        if token is None:
            return
        # A token is given up only once it has been used: leaving the span from another
        # context (another thread, another task) must not make its own exit a no-op.
        if type(token) is list:
            if reset_span(token[-1]):
                token.pop()
                if not token:
                    self._token = None
        elif reset_span(token):  # type: ignore[arg-type]
            self._token = None

    def __enter__(self) -> Self:
        token = use_span(self)
        held = self._token
        if held is None:
            self._token = token
        elif type(held) is list:
            held.append(token)
        else:
            self._token = [held, token]  # type: ignore[list-item]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The hot path: _leave(), _finish() and seal() inlined for the common case (one
        # `with`, no attributes or events set after start); measured at about 8% of a span.
        token = self._token
        if token is not None:
            if type(token) is list:
                self._leave()
            else:
                try:
                    reset_current(token)  # type: ignore[arg-type]
                except ValueError:  # left from another context: keep it (see _leave)
                    pass
                else:
                    self._token = None
        if exc is not None:
            note_exception(self, exc)
        sink = self._sink
        rec = self._rec
        if sink is None or rec.end_time_ns is not None:
            return
        if sink.open_spans.pop(_ref(self), None) is None:
            return
        rec.end_time_ns = time_ns()
        if type(rec.attributes) is dict or type(rec.events) is list:
            sink.deliver(seal(rec))
        else:
            rec.__class__ = SpanRecord
            sink.deliver(rec)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()
        if exc is not None:
            note_exception(self, exc)
            if is_cancellation(exc):
                # The task is being cancelled: waiting for room now would only be cancelled too.
                self.end()
                return
        await self.aend()


class NonRecordingSpan(Span):
    """A span that records nothing but carries a context.

    It is what :func:`current_span` returns outside any span, what :func:`spanlane.span` returns
    without a tracer, what a tracer returns where it does not record (telemetry's own code, a
    tracer that was never entered), and what it returns for a span the sampler did not sample
    (see :mod:`spanlane.sampling`). It can be a parent: ``parent=NonRecordingSpan(remote)``
    continues the remote trace, and the children of an unsampled span continue its trace (and,
    through :class:`~spanlane.sampling.ParentBased`, its decision). Entering one with a valid
    context makes it the current span; every other method is a cheap no-op, and it keeps no
    name, attributes or times (``name`` is ``""``, ``start_time_ns`` is 0).

    Attributes:
        parent: the parent's context for a span the sampler did not sample, else None.
    """

    # Only _context, _token and parent are used; _sink is None and, while _context is None (an
    # unsampled span), _rec holds its trace id (0 for a root whose id is not made yet) until
    # someone asks for the context: one that is never a parent nor propagated never builds one.
    __slots__ = ()

    def __init__(self, context: SpanContext) -> None:
        self._sink = None
        self._rec = None
        self._context = context
        self._token = None
        self.parent = None

    def __repr__(self) -> str:
        context = self.context
        return (
            f"<NonRecordingSpan trace={_hex(context.trace_id, 32)} "
            f"span={_hex(context.span_id, 16)} flags={_hex(context.trace_flags, 2)}>"
        )

    @property
    def name(self) -> str:
        """Always ``""``: a non-recording span keeps no name."""
        return ""

    @property
    def kind(self) -> SpanKind:
        """Always ``INTERNAL``."""
        return SpanKind.INTERNAL

    @property
    def context(self) -> SpanContext:
        """The context this span carries."""
        context = self._context
        if context is None:
            # An unsampled span: its ids are made now, when first observed; random ids made
            # later are as unique as ids made at the start, and cost nothing until something (a
            # child, propagation.inject) looks. They are made outside the lock (making them
            # allocates, so a garbage collection, and a finaliser reading another span's
            # context, may run in between); the lock only decides whose ids are kept.
            made = _unsampled_context(self._rec, self.parent)
            with _IDS_LOCK:
                context = self._context
                if context is None:
                    context = self._context = made
        return context

    @property
    def is_recording(self) -> bool:
        """Always False."""
        return False

    @property
    def start_time_ns(self) -> int:
        """Always 0: a non-recording span keeps no times."""
        return 0

    @property
    def end_time_ns(self) -> int | None:
        """Always None."""
        return None

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """Always empty."""
        return EMPTY_ATTRIBUTES

    @property
    def status(self) -> Status:
        """Always unset."""
        return UNSET_STATUS

    @property
    def record(self) -> SpanRecord | None:
        """Always None: nothing is recorded."""
        return None

    # The setters and end() do nothing, without looking at their arguments.

    def update_name(self, name: str) -> None:
        """Do nothing."""

    def set_attribute(self, key: str, value: object) -> None:
        """Do nothing."""

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        """Do nothing."""

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, object] | None = None,
        *,
        time_ns: int | None = None,
    ) -> None:
        """Do nothing."""

    def record_exception(
        self,
        exc: BaseException,
        attributes: Mapping[str, object] | None = None,
        *,
        time_ns: int | None = None,
    ) -> None:
        """Do nothing."""

    def set_status(self, code: StatusCode | Status, description: str | None = None) -> None:
        """Do nothing."""

    def end(self, end_time_ns: int | None = None) -> None:
        """Do nothing (a non-recording span has nothing to hand on)."""

    async def aend(self, end_time_ns: int | None = None) -> None:
        """Do nothing."""

    def _mark(self, key: str) -> None:
        pass

    def __enter__(self) -> Self:
        if self is INVALID_SPAN:  # shared by every caller: no state may be kept on it
            return self
        token = use_span(self)
        held = self._token
        if held is None:
            self._token = token
        elif type(held) is list:
            held.append(token)
        else:
            self._token = [held, token]  # type: ignore[list-item]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Span's token handling, inlined (Unsampled, the common non-recording span, uses this).
        token = self._token
        if token is None:
            return
        if type(token) is list:
            self._leave()
            return
        try:
            reset_current(token)  # type: ignore[arg-type]
        except ValueError:  # left from another context: keep it (see Span._leave)
            pass
        else:
            self._token = None

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _hex(value: object, digits: int) -> str:
    return f"{value:0{digits}x}" if type(value) is int and value >= 0 else repr(value)


class Unsampled(NonRecordingSpan):
    """A span the sampler did not sample: a NonRecordingSpan built as cheaply as CPython can.

    No Python ``__init__`` (``object.__init__`` makes the class call run no Python frame):
    :meth:`Tracer.span` stores the five slots itself: ``_sink`` None, ``_context`` None,
    ``_token`` None, ``parent`` the parent's context, ``_rec`` the trace id (0 for a root under
    ``ALWAYS_OFF``). Its ids are made the first time someone asks for its context (a child,
    ``propagation.inject``); most unsampled spans never need them.
    """

    __slots__ = ()
    __init__ = object.__init__

    # Never INVALID_SPAN, so without NonRecordingSpan's identity test: Span's own __enter__.
    # (__exit__ is NonRecordingSpan's.)
    __enter__ = Span.__enter__


def _unsampled_context(trace_id: int, parent: SpanContext | None) -> SpanContext:
    """The context of an unsampled span: its parent's trace, flags without "sampled" (W3C level
    2's "random trace id" and any other bit describe the trace, and are kept) and state; a new
    span id (and, for a root nobody asked a sampler about, a new trace id)."""
    if parent is None:
        return new_context(trace_id or new_trace_id(), new_span_id(), 0, "")
    flags = parent.trace_flags
    state = parent.trace_state
    return new_context(
        trace_id,
        new_span_id(),
        flags & NOT_SAMPLED if type(flags) is int else 0,
        state if type(state) is str else "",
    )


# Orders the first look at an unsampled span's context between threads, so that all of them see
# the same ids (which are made at that moment). Re-entrant: a signal handler may look at a span's
# context while its own thread holds the lock.
_IDS_LOCK = RLock()


INVALID_CONTEXT = SpanContext(trace_id=0, span_id=0, trace_flags=0)
INVALID_SPAN = NonRecordingSpan(INVALID_CONTEXT)


def current_span() -> Span:
    """Return the current span, or a non-recording span when there is none."""
    span = get_span()
    return INVALID_SPAN if span is None else span


# --- the tracer's side of a span: public names of a private module -----------------------------


def parent_context(parent: object) -> SpanContext | None:
    """The context a new span continues, from a ``parent=`` value or the current span.

    A span (recording or not) or a context continues its trace when its context is valid; an
    invalid one (zero or out-of-range ids) starts a new trace.

    Raises:
        TypeError: ``parent`` is neither a Span, a SpanContext nor None.
    """
    if type(parent) is Span or type(parent) is Unsampled:
        return cast(Span, parent).context  # made by a tracer: always valid
    if isinstance(parent, Span):
        context = parent.context
    elif isinstance(parent, SpanContext):
        context = parent
    else:
        raise TypeError(
            f"parent must be a Span, a SpanContext or None, got {type(parent).__name__}"
        )
    return context if context.is_valid else None


def resource_of(span: Span) -> Resource:
    """The resource a span's record carries (an empty one for a span that records nothing)."""
    if isinstance(span, NonRecordingSpan):
        return EMPTY_RESOURCE
    resource: Resource = span._rec.resource
    return resource


def companion(span: Span) -> object:
    """The object another tracing API keeps for ``span`` (the OpenTelemetry bridge's view of
    it), or None."""
    # An unsampled span is built without __init__ and may not have the slot set.
    return getattr(span, "_companion", None)


def set_companion(span: Span, value: object) -> None:
    """Keep ``value`` with ``span`` for another tracing API, for the span's lifetime."""
    span._companion = value


def seal(rec: Any) -> SpanRecord:
    """Freeze a span's builder into its record: what was live becomes a copy, then re-label.

    The attributes are copied (a C-level snapshot under the GIL), not wrapped: a setter that
    raced the end can then only write into the live dict, which no record references.
    """
    attributes = rec.attributes
    if type(attributes) is dict:
        rec.attributes = MappingProxyType(dict(attributes)) if attributes else EMPTY_ATTRIBUTES
    events = rec.events
    if type(events) is list:
        rec.events = tuple(events)
    rec.__class__ = SpanRecord
    return rec  # type: ignore[no-any-return]


def mark(rec: Any, key: str) -> None:
    """Set one of spanlane's own marker attributes on a live builder.

    Not through :meth:`Span.set_attribute`: a span already holding ``max_attributes`` attributes
    would drop the marker, and the record would no longer say how the span ended (found by the
    fuzz suite). A marker may exceed the limit by one; the limit bounds the caller's data.
    """
    attributes = rec.attributes
    if type(attributes) is not dict:
        attributes = rec.attributes = {}
    attributes[key] = True


def start_record(span: Span) -> SpanRecord:
    """A separate frozen copy of the span as it is now, for start notifications."""
    rec = span._rec
    fields = {name: getattr(rec, name) for name in RECORD_FIELDS}
    # Copied, not wrapped: the live span keeps changing its attributes.
    attributes = rec.attributes
    fields["attributes"] = freeze(dict(attributes) if attributes else None)
    fields["events"] = ()
    fields["end_time_ns"] = None
    return new_record(**fields)


def seal_unfinished(rec: Any) -> SpanRecord:
    """Mark a claimed span's builder ``spanlane.unfinished``, end it now and freeze it.

    Used by the tracer at shutdown, and when a span is garbage-collected without being ended.
    """
    mark(rec, UNFINISHED_ATTRIBUTE)
    rec.end_time_ns = max(time_ns(), rec.start_time_ns)
    return seal(rec)


def abandon(rec: Any) -> None:
    """Stop a claimed span from recording without producing a record (shutdown overrun)."""
    if rec.end_time_ns is None:
        rec.end_time_ns = max(time_ns(), rec.start_time_ns)


def note_exception(span: Span, exc: BaseException) -> None:
    """What leaving a span by ``exc`` records: an error event and status, or the cancelled mark.

    Cancellation is not an error (``spanlane.cancelled = True``); ``GeneratorExit`` is neither.
    """
    if not span.is_recording:
        return
    if is_cancellation(exc):
        span._mark(CANCELLED_ATTRIBUTE)
    elif isinstance(exc, GeneratorExit):
        return
    else:
        span.record_exception(exc)
        if span._rec.status.code is StatusCode.UNSET:
            span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {safe_str(exc)}")


def make_links(
    links: Iterable[Link | SpanContext | Span] | None, limits: SpanLimits
) -> tuple[tuple[Link, ...], int]:
    """Normalise the ``links=`` argument: contexts and spans become links; apply the limit.

    Anything that is not a link, a context or a span, and any link to an invalid context, is
    dropped and counted. Never raises (but for cancellation).
    """
    kept: list[Link] = []
    dropped = 0
    try:
        for item in links or ():
            if isinstance(item, Span):
                item = Link(item.context)
            elif isinstance(item, SpanContext):
                item = Link(item)
            if (
                not isinstance(item, Link)
                or not isinstance(item.context, SpanContext)
                or not item.context.is_valid
                or len(kept) >= limits.max_links
            ):
                dropped += 1
                continue
            context = item.context
            if (
                type(context.trace_state) is not str
                or type(context.trace_flags) is not int
                or not 0 <= context.trace_flags <= 0xFF
                or type(context.is_remote) is not bool
            ):
                # Whatever an encoder reads from a link must be of the type it expects.
                state = context.trace_state
                context = SpanContext(
                    context.trace_id,
                    context.span_id,
                    clean_flags(context.trace_flags),
                    state if type(state) is str else "",
                    context.is_remote is True,
                )
                item = Link(context, item.attributes, item.dropped_attributes)
            if item.attributes:
                attributes, extra = coerce_attributes(
                    item.attributes, limits.max_link_attributes, limits.max_attribute_length
                )
                extra += item.dropped_attributes if type(item.dropped_attributes) is int else 0
                item = Link(item.context, freeze(attributes), extra)
            elif type(item.dropped_attributes) is not int or item.dropped_attributes < 0:
                item = Link(item.context)
            kept.append(item)
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        dropped += 1
    return tuple(kept), dropped
