"""spanlane.otel: OpenTelemetry-instrumented code traces into spanlane.

Needs the ``otel`` extra (``pip install "spanlane[otel]"``), which brings in
``opentelemetry-api``. Two directions:

- :func:`install` makes the OpenTelemetry API (``opentelemetry.trace``) start spanlane spans:
  every ``opentelemetry-instrumentation-*`` package then records into the open spanlane tracer,
  with one notion of "current span" shared by both APIs (:class:`RuntimeContext`);
- :class:`SpanProcessor` is for services that keep the OpenTelemetry SDK: its spans become
  spanlane records in a tracer's lanes.

See ``docs/otel.md``.
"""

from __future__ import annotations

try:
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ModuleNotFoundError(
        'spanlane.otel needs the OpenTelemetry API: pip install "spanlane[otel]"',
        name=exc.name,
    ) from exc

from .._otel_context import RuntimeContext as RuntimeContext
from ._sdk import SpanProcessor as SpanProcessor
from ._span import Span as Span
from ._tracer import Tracer as Tracer
from ._tracer import TracerProvider as TracerProvider
from ._tracer import install as install
from ._tracer import uninstall as uninstall

__all__ = [
    "RuntimeContext",
    "Span",
    "SpanProcessor",
    "Tracer",
    "TracerProvider",
    "install",
    "uninstall",
]
