"""Span: the OpenTelemetry API's view of a spanlane span.

Every method goes to the spanlane span underneath; nothing is stored twice. A spanlane span has
at most one view, kept with it (``spanlane._span.companion``), so that the OpenTelemetry API and
spanlane agree on what the current span is, object for object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.util import types

from .. import _span as native
from .._records import Link, Resource, SpanContext, StatusCode
from .._runtime import is_cancellation
from ._convert import from_otel_context, from_otel_status_code, to_otel_context, to_otel_kind

__all__ = ["Span", "native_span_of", "view_of"]


class Span(trace.Span):
    """An OpenTelemetry ``Span`` over a spanlane span.

    Besides the API, it has what instrumentations read from the SDK's spans: ``name``,
    ``kind``, ``attributes``, ``context``, ``parent``, ``start_time``, ``end_time``, ``status``.

    Attributes:
        record_exception_on_exit: record an exception leaving ``with span:`` as an event.
        set_status_on_exit: set status ERROR when an exception leaves ``with span:``.
    """

    __slots__ = ("_context", "_inner", "record_exception_on_exit", "set_status_on_exit")

    def __init__(
        self,
        inner: native.Span,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self._inner = inner
        self._context: trace.SpanContext | None = None
        self.record_exception_on_exit = record_exception
        self.set_status_on_exit = set_status_on_exception
        # One view per span: the spanlane span keeps it, so both APIs see the same object.
        native.set_companion(inner, self)

    def __repr__(self) -> str:
        return f"<spanlane.otel.Span of {self._inner!r}>"

    @property
    def native(self) -> native.Span:
        """The spanlane span underneath."""
        return self._inner

    # --- the API ---------------------------------------------------------------------------

    def get_span_context(self) -> trace.SpanContext:
        context = self._context
        if context is None:
            context = self._context = to_otel_context(self._inner.context)
        return context

    def is_recording(self) -> bool:
        return self._inner.is_recording

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self._inner.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._inner.set_attributes(attributes)

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        self._inner.add_event(name, attributes, time_ns=timestamp)

    def add_link(self, context: trace.SpanContext, attributes: types.Attributes = None) -> None:
        given: object = context
        if isinstance(given, trace.SpanContext):
            self._inner.add_link(from_otel_context(given), attributes)
        else:
            self._inner.add_link(given, attributes)  # type: ignore[arg-type]

    def update_name(self, name: str) -> None:
        self._inner.update_name(name)

    def set_status(
        self, status: trace.Status | trace.StatusCode, description: str | None = None
    ) -> None:
        if isinstance(status, trace.Status):
            code = from_otel_status_code(status.status_code)
            description = status.description
        else:
            code = from_otel_status_code(status)
        self._inner.set_status(code if code is not None else status, description)  # type: ignore[arg-type]

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # As the SDK writes it: the three exception attributes and exception.escaped.
        extra: dict[str, object] = {"exception.escaped": str(escaped)}
        if attributes:
            extra.update(attributes)
        self._inner.record_exception(exception, extra, time_ns=timestamp)

    def end(self, end_time: int | None = None) -> None:
        self._inner.end(end_time)

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None:
            note_exit(self, exc_val, self.record_exception_on_exit, self.set_status_on_exit)
        self._inner.end()

    # --- what instrumentations read from SDK spans ------------------------------------------

    @property
    def name(self) -> str:
        """The span's name."""
        return self._inner.name

    @property
    def kind(self) -> trace.SpanKind:
        """The span's kind, as OpenTelemetry numbers it."""
        return to_otel_kind(self._inner.kind)

    @property
    def attributes(self) -> Mapping[str, Any]:
        """A read-only snapshot of the span's attributes."""
        return self._inner.attributes

    @property
    def context(self) -> trace.SpanContext:
        """The span's context (as ``get_span_context()``)."""
        return self.get_span_context()

    @property
    def parent(self) -> trace.SpanContext | None:
        """The parent's context, or None for a root span."""
        parent = self._inner.parent
        return None if parent is None else to_otel_context(parent)

    @property
    def start_time(self) -> int | None:
        """Start time in nanoseconds since the epoch (None for a non-recording span)."""
        return self._inner.start_time_ns if self._inner.is_recording else None

    @property
    def end_time(self) -> int | None:
        """End time in nanoseconds since the epoch, None while open."""
        return self._inner.end_time_ns

    @property
    def resource(self) -> Resource:
        """The resource of the tracer that records the span (as SDK spans have one)."""
        return native.resource_of(self._inner)

    @property
    def status(self) -> trace.Status:
        """The span's status, as an OpenTelemetry ``Status``."""
        status = self._inner.status
        return trace.Status(trace.StatusCode(int(status.code)), status.description)


def note_exit(span: Span, exc: BaseException, record: bool, set_status: bool) -> None:
    """What an exception leaving a span's ``with`` (or ``start_as_current_span``) records.

    As the OpenTelemetry API's ``use_span``: only an ``Exception`` is an error (recorded with
    ``exception.escaped``, status ERROR ``"Type: message"``), as the flags say. spanlane adds one
    thing: cancellation is marked ``spanlane.cancelled`` on the span, as native spans do.
    """
    inner = span._inner
    if not inner.is_recording:
        return
    if is_cancellation(exc):
        native.note_exception(inner, exc)
        return
    if not isinstance(exc, Exception):
        return
    if record:
        span.record_exception(exc, escaped=True)
    if set_status and inner.status.code is StatusCode.UNSET:
        inner.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")


def view_of(inner: native.Span) -> trace.Span:
    """The OpenTelemetry view of a spanlane span: its companion, made on first use.

    A non-recording span that stands for a span of another implementation (a remote parent
    extracted by OpenTelemetry's propagators, an SDK span) has that span as its companion, so
    the OpenTelemetry API gets back the very object it put in.
    """
    view = native.companion(inner)
    if view is None:
        if inner is native.INVALID_SPAN:
            return trace.INVALID_SPAN
        view = Span(inner)
    return view  # type: ignore[return-value]


def native_span_of(span: object) -> native.Span | None:
    """The spanlane span an OpenTelemetry span stands for, or None for no (or an invalid) span.

    A view gives its spanlane span; any other OpenTelemetry span gives a non-recording spanlane
    span with its context, which keeps it as its companion.
    """
    if type(span) is Span:
        return span._inner
    if span is None or span is trace.INVALID_SPAN or not isinstance(span, trace.Span):
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    stand_in = native.NonRecordingSpan(from_otel_context(context))
    native.set_companion(stand_in, span)
    return stand_in


def native_context_of(span: object) -> SpanContext | None:
    """The spanlane context of an OpenTelemetry span (for links and explicit parents)."""
    found = native_span_of(span)
    return None if found is None else found.context


def links_of(links: Sequence[trace.Link] | None) -> list[object]:
    """OpenTelemetry links as spanlane ones (the tracer validates and counts them)."""
    converted: list[object] = []
    for link in links or ():
        try:
            context: object = link.context
            attributes = link.attributes
        except AttributeError:
            converted.append(link)  # not a link at all: the tracer drops and counts it
            continue
        if isinstance(context, trace.SpanContext):
            converted.append(Link(from_otel_context(context), attributes or {}))  # type: ignore[arg-type]
        else:
            converted.append(link)
    return converted
