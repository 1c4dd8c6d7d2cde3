"""RuntimeContext: the OpenTelemetry context, stored where spanlane keeps its own.

OpenTelemetry keeps the current span as one value of its ``Context`` (an immutable dict);
spanlane keeps it in its context layer. With this runtime context there is one current span:

- ``attach(context)`` makes the context's span spanlane's current span (the spanlane span of a
  view, or a non-recording stand-in for any other OpenTelemetry span) and carries the rest of
  the context (baggage, the instrumentation-suppression keys) alongside;
- ``get_current()`` returns the carried context with spanlane's current span in it, as its
  OpenTelemetry view; when spanlane's current span is the one attached with the context, that is
  the very context object that was attached;
- inside telemetry's own code (exporters) the context says "suppress instrumentation", so
  OpenTelemetry-instrumented clients used by an exporter make no spans.

Enable it with ``OTEL_PYTHON_CONTEXT=spanlane`` (the ``opentelemetry_context`` entry point)
before ``opentelemetry.context`` is first imported, or call :func:`spanlane.otel.install`, which
switches at run time: contexts attached before the switch are then not visible through
``get_current()``, and detaching one of them logs an error (a span ended normally is still
recorded).
"""

from __future__ import annotations

from contextvars import Token
from typing import Any, cast

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.context.context import _RuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY

from .._context import (
    get_carried,
    get_span,
    is_suppressed,
    reset_carried,
    reset_span,
    use_carried,
    use_span,
)
from ._span import native_span_of, view_of

__all__ = ["RuntimeContext"]

_EMPTY = Context()
_SUPPRESSED = Context({_SUPPRESS_INSTRUMENTATION_KEY: True})


class _Attached:
    """What ``attach`` returns: the two tokens to undo it."""

    __slots__ = ("carried", "span")

    def __init__(self, carried: Token[object], span: Token[Any]) -> None:
        self.carried = carried
        self.span = span


class RuntimeContext(_RuntimeContext):
    """An OpenTelemetry runtime context that shares spanlane's current span."""

    def attach(self, context: Context) -> Token[Context]:
        span = context.get(_SPAN_KEY)
        carried = use_carried(context)
        current = use_span(native_span_of(span))
        return cast("Token[Context]", _Attached(carried, current))

    def get_current(self) -> Context:
        carried = get_carried()
        base = carried if type(carried) is Context else _EMPTY
        span = get_span()
        if span is None:
            if is_suppressed():
                return _SUPPRESSED if not base else Context({**base, **_SUPPRESSED})
            if _SPAN_KEY in base:
                # A spanlane scope left the span the context was attached with: none is current.
                return Context({key: value for key, value in base.items() if key != _SPAN_KEY})
            return base
        view = view_of(span)
        if base.get(_SPAN_KEY) is view:
            return base
        return Context({**base, _SPAN_KEY: view})

    def detach(self, token: Token[Context]) -> None:
        attached = cast(Any, token)
        if type(attached) is not _Attached:
            raise ValueError(f"{token!r} was not returned by this runtime context's attach()")
        reset_span(attached.span)
        reset_carried(attached.carried)
