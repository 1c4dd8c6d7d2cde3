"""Conversions between OpenTelemetry's API types and spanlane's, in both directions."""

from __future__ import annotations

from opentelemetry import trace

from .._records import SpanContext, SpanKind, StatusCode, clean_flags

__all__ = [
    "from_otel_context",
    "from_otel_kind",
    "from_otel_status_code",
    "to_otel_context",
    "to_otel_kind",
]

# OpenTelemetry's SpanKind counts from 0 (INTERNAL); OTLP's, and so spanlane's, from 1.
_FROM_OTEL_KIND = {kind: SpanKind(kind.value + 1) for kind in trace.SpanKind}
_TO_OTEL_KIND = {value: key for key, value in _FROM_OTEL_KIND.items()}
_FROM_OTEL_STATUS = {code: StatusCode(code.value) for code in trace.StatusCode}

_EMPTY_STATE = trace.TraceState()


def from_otel_kind(kind: object) -> SpanKind:
    """spanlane's kind for an OpenTelemetry ``SpanKind`` (INTERNAL for anything else)."""
    found: SpanKind = _FROM_OTEL_KIND.get(kind, SpanKind.INTERNAL)  # type: ignore[call-overload]
    return found


def to_otel_kind(kind: SpanKind) -> trace.SpanKind:
    """OpenTelemetry's ``SpanKind`` for a spanlane kind."""
    return _TO_OTEL_KIND[kind]


def from_otel_status_code(code: object) -> StatusCode | None:
    """spanlane's status code for an OpenTelemetry ``StatusCode``, or None."""
    found: StatusCode | None = _FROM_OTEL_STATUS.get(code)  # type: ignore[call-overload]
    return found


def from_otel_context(context: trace.SpanContext) -> SpanContext:
    """A spanlane ``SpanContext`` for an OpenTelemetry one (trace state as its header)."""
    state = context.trace_state
    header = state.to_header() if state else ""
    return SpanContext(
        context.trace_id,
        context.span_id,
        clean_flags(int(context.trace_flags)),
        header,
        bool(context.is_remote),
    )


def to_otel_context(context: SpanContext) -> trace.SpanContext:
    """An OpenTelemetry ``SpanContext`` for a spanlane one."""
    state = context.trace_state
    return trace.SpanContext(
        context.trace_id,
        context.span_id,
        context.is_remote is True,
        trace.TraceFlags(clean_flags(context.trace_flags)),
        trace.TraceState.from_header([state]) if state else _EMPTY_STATE,
    )
