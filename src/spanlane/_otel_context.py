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

This module lives outside the ``spanlane.otel`` package, and imports only
``opentelemetry.context.context`` when it is imported: the OpenTelemetry API loads the entry
point while ``opentelemetry.context`` itself is still being imported, so anything that imports
``opentelemetry.trace`` (as ``spanlane.otel`` does) would be a circular import at that moment.
The rest is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token
from typing import Any, cast

from opentelemetry.context.context import Context, _RuntimeContext

from ._context import (
    get_carried,
    get_span,
    is_suppressed,
    reset_carried,
    reset_span,
    use_carried,
    use_span,
)

__all__ = ["RuntimeContext"]

_EMPTY = Context()


class _Late:
    """What is imported on first use (see the module docstring)."""

    span_key: str
    suppressed: Context
    native_span_of: Callable[[object], Any]
    view_of: Callable[[Any], object]
    loaded = False

    @classmethod
    def load(cls) -> type[_Late]:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
        from opentelemetry.trace.propagation import _SPAN_KEY

        from .otel._span import native_span_of, view_of

        cls.span_key = _SPAN_KEY
        cls.suppressed = Context({_SUPPRESS_INSTRUMENTATION_KEY: True})
        cls.native_span_of = staticmethod(native_span_of)
        cls.view_of = staticmethod(view_of)
        cls.loaded = True
        return cls


class _Attached:
    """What ``attach`` returns: the two tokens to undo it."""

    __slots__ = ("carried", "span")

    def __init__(self, carried: Token[object], span: Token[Any]) -> None:
        self.carried = carried
        self.span = span


class RuntimeContext(_RuntimeContext):
    """An OpenTelemetry runtime context that shares spanlane's current span."""

    def attach(self, context: Context) -> Token[Context]:
        late = _Late if _Late.loaded else _Late.load()
        span = context.get(late.span_key)
        carried = use_carried(context)
        current = use_span(late.native_span_of(span))
        return cast("Token[Context]", _Attached(carried, current))

    def get_current(self) -> Context:
        late = _Late if _Late.loaded else _Late.load()
        key = late.span_key
        carried = get_carried()
        base = carried if type(carried) is Context else _EMPTY
        span = get_span()
        if span is None or is_suppressed():
            # In telemetry's own code the current span is spanlane's shared invalid span.
            if is_suppressed():
                return late.suppressed if not base else Context({**base, **late.suppressed})
            if key in base:
                # A spanlane scope left the span the context was attached with: none is current.
                return Context({name: value for name, value in base.items() if name != key})
            return base
        view = late.view_of(span)
        if base.get(key) is view:
            return base
        return Context({**base, key: view})

    def detach(self, token: Token[Context]) -> None:
        attached = cast(Any, token)
        if type(attached) is not _Attached:
            raise ValueError(f"{token!r} was not returned by this runtime context's attach()")
        reset_span(attached.span)
        reset_carried(attached.carried)
