"""Immutable value types: what crosses a lane's stream and what exporters receive.

Everything here is an attrs ``@frozen`` class with slots. A record that has been offered to a lane
can be shared by every exporter and never copied, because nobody can change it afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs

from ._version import __version__

#: A value as OTLP's ``AnyValue`` carries it: a scalar, bytes, None (inside an array or a map),
#: an array of any of them (a tuple, possibly mixed or nested) or a map (read-only, str keys).
AnyValue: TypeAlias = (
    str | bool | int | float | bytes | tuple["AnyValue", ...] | Mapping[str, "AnyValue"] | None
)
#: An attribute value: any ``AnyValue`` but None (a None attribute is dropped and counted).
AttributeValue: TypeAlias = (
    str | bool | int | float | bytes | tuple[AnyValue, ...] | Mapping[str, AnyValue]
)
#: A read-only mapping of attribute keys to coerced values.
Attributes = Mapping[str, AttributeValue]

#: Attribute set on a span that the tracer ended at shutdown because its owner never did.
UNFINISHED_ATTRIBUTE = "spanlane.unfinished"
#: Attribute set on a span whose body was left by cancellation (which is not an error).
CANCELLED_ATTRIBUTE = "spanlane.cancelled"

#: The shared empty attribute mapping: most spans and events carry none, so they share this one.
EMPTY_ATTRIBUTES: Attributes = MappingProxyType({})


class SpanKind(enum.IntEnum):
    """The role of a span in a trace; the values are OTLP's ``Span.SpanKind`` numbers."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(enum.IntEnum):
    """The outcome of a span; the values are OTLP's ``Status.StatusCode`` numbers."""

    UNSET = 0
    OK = 1
    ERROR = 2


@attrs.frozen
class Status:
    """A span's status: a code and, for errors, a human-readable description."""

    code: StatusCode = StatusCode.UNSET
    description: str | None = None


#: The status of a span nobody set a status on.
UNSET_STATUS = Status()


#: One more than the largest trace id (128 bits) and span id (64 bits).
TRACE_ID_LIMIT = 1 << 128
SPAN_ID_LIMIT = 1 << 64
#: W3C trace flags bit 0: the caller may have recorded this span (it was sampled).
SAMPLED_FLAG = 0x01
#: The other seven bits of the flags byte: what an unsampled child keeps of its parent's flags.
NOT_SAMPLED = 0xFF ^ SAMPLED_FLAG


# weakref_slot=False keeps SpanContext's layout equal to _ContextBuilder's (see new_context).
@attrs.frozen(weakref_slot=False)
class SpanContext:
    """The identity of a span, as W3C trace context carries it; the one source of identity.

    Constructing one never raises: a context with ids that are zero, out of range or not ints is
    simply not :attr:`is_valid`, and spanlane treats it as absent wherever it is used (as a
    parent it starts a new trace; as a link it is dropped and counted).

    Attributes:
        trace_id: 128-bit trace id, never 0 in a valid context.
        span_id: 64-bit span id, never 0 in a valid context.
        trace_flags: W3C trace flags; bit 0 is "sampled".
        trace_state: the W3C ``tracestate`` header value, passed through unchanged.
        is_remote: True when the context was extracted from another process.
    """

    trace_id: int
    span_id: int
    trace_flags: int = SAMPLED_FLAG
    trace_state: str = ""
    is_remote: bool = False

    @property
    def is_valid(self) -> bool:
        """True when both ids are ints in range and not zero (W3C Trace Context)."""
        trace_id = self.trace_id
        span_id = self.span_id
        return (
            type(trace_id) is int
            and type(span_id) is int
            and 0 < trace_id < TRACE_ID_LIMIT
            and 0 < span_id < SPAN_ID_LIMIT
        )

    @property
    def is_sampled(self) -> bool:
        """True when the "sampled" flag (W3C trace flags bit 0) is set."""
        flags = self.trace_flags
        return type(flags) is int and bool(flags & SAMPLED_FLAG)


def clean_flags(flags: object) -> int:
    """Trace flags as one W3C byte; anything but an int counts as "no flags"."""
    return flags & 0xFF if type(flags) is int else 0


@attrs.frozen
class Event:
    """A timestamped annotation on a span (``time_ns`` is nanoseconds since the Unix epoch)."""

    name: str
    time_ns: int
    attributes: Attributes = EMPTY_ATTRIBUTES
    dropped_attributes: int = 0


@attrs.frozen
class Link:
    """A reference from one span to another span, possibly in another trace."""

    context: SpanContext
    attributes: Attributes = EMPTY_ATTRIBUTES
    dropped_attributes: int = 0


@attrs.frozen
class Resource:
    """The entity that produced the spans: a service, described by attributes.

    One ``Resource`` is built by :func:`spanlane.open_tracer` and shared by every record of that
    tracer, so carrying it on each record costs one reference.
    """

    attributes: Attributes = EMPTY_ATTRIBUTES

    @property
    def service_name(self) -> str | None:
        """The ``service.name`` attribute, if any."""
        value = self.attributes.get("service.name")
        return value if isinstance(value, str) else None


@attrs.frozen
class InstrumentationScope:
    """The library or module that created a span (OTLP's instrumentation scope).

    Attributes:
        name: the instrumenting library's name.
        version: its version, or None.
        schema_url: the semantic-conventions schema its spans follow, or None.
        attributes: attributes of the scope itself (read-only).
    """

    name: str = "spanlane"
    version: str | None = __version__
    schema_url: str | None = None
    attributes: Attributes = attrs.field(default=EMPTY_ATTRIBUTES, hash=False)


DEFAULT_SCOPE = InstrumentationScope()
EMPTY_RESOURCE = Resource()


# weakref_slot=False keeps SpanRecord's layout equal to _RecordBuilder's (see _RecordBuilder below).
@attrs.frozen(weakref_slot=False)
class SpanRecord:
    """An immutable snapshot of a span, as exporters receive it.

    A record with ``end_time_ns=None`` is a *start notification*: it is only sent to exporters whose
    ``wants_starts`` is true, when the span starts. Every span also produces one end record, with
    the final attributes, events, links and status.

    Attributes:
        name: the span name.
        trace_id: 128-bit trace id.
        span_id: 64-bit span id.
        parent_span_id: the parent's span id, or None for a root span.
        kind: the span's :class:`SpanKind`.
        start_time_ns: start time, nanoseconds since the Unix epoch.
        end_time_ns: end time in nanoseconds since the epoch, or None for a start notification.
        attributes: the span's attributes (read-only), after coercion and limits.
        events: the span's events, oldest first.
        links: links to other spans.
        status: the span's status.
        dropped_attributes: attributes dropped by limits or coercion.
        dropped_events: events dropped by ``SpanLimits.max_events``.
        dropped_links: links dropped by ``SpanLimits.max_links``.
        resource: the resource of the tracer that produced the span.
        scope: the instrumentation scope that produced the span.
        trace_state: the W3C ``tracestate`` of the span's context.
        parent_is_remote: True when the parent came from another process.
        trace_flags: the W3C trace flags of the span's context (bit 0: sampled); encoders
            write these, never a constant.
    """

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    kind: SpanKind
    start_time_ns: int
    end_time_ns: int | None
    attributes: Attributes = EMPTY_ATTRIBUTES
    events: tuple[Event, ...] = ()
    links: tuple[Link, ...] = ()
    status: Status = UNSET_STATUS
    dropped_attributes: int = 0
    dropped_events: int = 0
    dropped_links: int = 0
    resource: Resource = EMPTY_RESOURCE
    scope: InstrumentationScope = DEFAULT_SCOPE
    trace_state: str = ""
    parent_is_remote: bool = False
    trace_flags: int = SAMPLED_FLAG

    @property
    def is_start(self) -> bool:
        """True for a start notification (a record without an end time)."""
        return self.end_time_ns is None

    @property
    def duration_ns(self) -> int | None:
        """End minus start in nanoseconds, or None for a start notification."""
        if self.end_time_ns is None:
            return None
        return self.end_time_ns - self.start_time_ns

    @property
    def context(self) -> SpanContext:
        """The :class:`SpanContext` of the recorded span."""
        return new_context(self.trace_id, self.span_id, self.trace_flags, self.trace_state)


# A mutable twin of SpanRecord with the same slots in the same order. attrs' frozen __init__ sets
# every field through object.__setattr__ (about 2.5 us for 18 fields on the reference machine);
# the plain slotted __init__ stores them with STORE_ATTR (about 0.4 us). The hot path builds the
# twin and then re-labels it as a SpanRecord, which CPython allows between classes of identical
# layout. tests/test_records.py keeps the two field lists equal.
_RecordBuilder: type[Any] = attrs.make_class(
    "_RecordBuilder",
    {
        field.name: attrs.field(default=field.default)
        if field.default is not attrs.NOTHING
        # A field without a default must stay positional and required.
        else attrs.field()
        for field in attrs.fields(SpanRecord)
    },
    slots=True,
    weakref_slot=False,
    eq=False,
    repr=False,
)


#: The names of SpanRecord's fields, in order.
RECORD_FIELDS = tuple(field.name for field in attrs.fields(SpanRecord))


def new_record(*args: Any, **kwargs: Any) -> SpanRecord:
    """Build a :class:`SpanRecord` quickly; takes the same arguments as ``SpanRecord(...)``."""
    record = _RecordBuilder(*args, **kwargs)
    record.__class__ = SpanRecord
    return record  # type: ignore[no-any-return]


# The same trick for SpanContext: attrs' frozen __init__ costs about 0.7 us for five fields, and
# a context is built for every span that becomes a parent (and for every unsampled span asked for
# its context); the twin builds one in about a third of that.
_ContextBuilder: type[Any] = attrs.make_class(
    "_ContextBuilder",
    {
        field.name: attrs.field(default=field.default)
        if field.default is not attrs.NOTHING
        else attrs.field()
        for field in attrs.fields(SpanContext)
    },
    slots=True,
    weakref_slot=False,
    eq=False,
    repr=False,
)

#: The names of SpanContext's fields, in order.
CONTEXT_FIELDS = tuple(field.name for field in attrs.fields(SpanContext))


def new_context(
    trace_id: int,
    span_id: int,
    trace_flags: int = SAMPLED_FLAG,
    trace_state: str = "",
    is_remote: bool = False,
) -> SpanContext:
    """Build a :class:`SpanContext` quickly; same arguments as ``SpanContext(...)``."""
    context = _ContextBuilder(trace_id, span_id, trace_flags, trace_state, is_remote)
    context.__class__ = SpanContext
    return context  # type: ignore[no-any-return]
