"""SpanProcessor: for services that keep the OpenTelemetry SDK, its spans into spanlane's lanes.

Register it with the SDK's provider (``provider.add_span_processor(SpanProcessor(tracer))``):
each SDK span that ends becomes a frozen spanlane record handed to the tracer's processors and
lanes. ``on_end`` is called by the SDK in whatever thread ended the span; it converts the span
and hands the record on through the tracer's thread inbox, so it never waits for the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._attributes import coerce_attributes
from .._records import (
    EMPTY_ATTRIBUTES,
    Attributes,
    Event,
    InstrumentationScope,
    Link,
    Resource,
    Status,
    StatusCode,
    clean_flags,
    new_record,
)
from .._tracer import Tracer as NativeTracer
from ._convert import from_otel_context, from_otel_kind

__all__ = ["SpanProcessor"]

if TYPE_CHECKING:
    # For type checkers it is an SDK span processor, so that the documented
    # ``provider.add_span_processor(SpanProcessor(tracer))`` type-checks; at run time the SDK
    # (not a dependency of the ``otel`` extra) is not imported: its provider only calls the
    # methods below. ``unused-ignore``: where the SDK is not installed the base is Any.
    from opentelemetry.sdk.trace import SpanProcessor as _SDKSpanProcessor
else:
    _SDKSpanProcessor = object


class SpanProcessor(_SDKSpanProcessor):  # type: ignore[misc, unused-ignore]
    """An OpenTelemetry SDK span processor that sends the SDK's spans to a spanlane tracer.

    Args:
        tracer: the spanlane tracer whose lanes receive the spans (it must be open; spans that
            end while it is not are counted as it counts any late record).
    """

    def __init__(self, tracer: NativeTracer) -> None:
        if not isinstance(tracer, NativeTracer):
            raise TypeError(f"SpanProcessor needs a spanlane Tracer, got {tracer!r}")
        self._tracer = tracer
        self._resources: dict[int, tuple[object, Resource]] = {}
        self._scopes: dict[int, tuple[object, InstrumentationScope]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<spanlane.otel.SpanProcessor tracer={self._tracer!r}>"

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do when an SDK span starts."""

    def _on_ending(self, span: Any) -> None:  # the SDK calls it on processors that have it
        """Nothing to do just before an SDK span ends."""

    def on_end(self, span: Any) -> None:
        """Convert the ended SDK span into a record and hand it to the tracer; never raises."""
        try:
            record = self._convert(span)
        except Exception:  # an SDK span of an unexpected shape: count it, never raise
            self._tracer.note_ignored("an OpenTelemetry SDK span", span)
            return
        self._tracer.submit(record)

    def shutdown(self) -> None:
        """Nothing to release: the spanlane tracer owns its lanes."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Records are handed on as spans end; the tracer's ``flush()`` exports them."""
        return True

    # --- conversion ----------------------------------------------------------------------

    def _convert(self, span: Any) -> Any:
        limits = self._tracer.limits
        context = span.context
        parent = span.parent
        attributes = self._attributes(span.attributes, limits.max_attributes)
        events = tuple(
            Event(
                event.name,
                event.timestamp,
                self._attributes(event.attributes, limits.max_event_attributes),
            )
            for event in span.events
        )
        links = tuple(
            Link(
                from_otel_context(link.context),
                self._attributes(link.attributes, limits.max_link_attributes),
            )
            for link in span.links
        )
        status = span.status
        code = StatusCode(int(status.status_code.value))
        return new_record(
            span.name if isinstance(span.name, str) else str(span.name),
            context.trace_id,
            context.span_id,
            None if parent is None else parent.span_id,
            from_otel_kind(span.kind),
            span.start_time,
            span.end_time,
            attributes,
            events,
            links,
            Status(code, status.description if code is StatusCode.ERROR else None),
            int(getattr(span, "dropped_attributes", 0) or 0),
            int(getattr(span, "dropped_events", 0) or 0),
            int(getattr(span, "dropped_links", 0) or 0),
            self._resource(span.resource),
            self._scope(span.instrumentation_scope),
            context.trace_state.to_header() if context.trace_state else "",
            bool(parent is not None and parent.is_remote),
            clean_flags(int(context.trace_flags)),
        )

    def _attributes(self, attributes: Mapping[str, Any] | None, count: int) -> Attributes:
        if not attributes:
            return EMPTY_ATTRIBUTES
        kept, _ = coerce_attributes(attributes, count, self._tracer.limits.max_attribute_length)
        return MappingProxyType(kept)

    def _resource(self, resource: Any) -> Resource:
        # An SDK provider has one resource: convert it once (by identity, kept alive here).
        found = self._resources.get(id(resource))
        if found is not None and found[0] is resource:
            return found[1]
        attributes = getattr(resource, "attributes", None) or {}
        kept, _ = coerce_attributes(attributes, len(attributes) + 1, None)
        converted = Resource(MappingProxyType(kept))
        with self._lock:
            self._resources[id(resource)] = (resource, converted)
        return converted

    def _scope(self, scope: Any) -> InstrumentationScope:
        found = self._scopes.get(id(scope))
        if found is not None and found[0] is scope:
            return found[1]
        if scope is None:
            converted = InstrumentationScope("", None)
        else:
            attributes = getattr(scope, "attributes", None) or {}
            kept, _ = coerce_attributes(attributes, len(attributes) + 1, None)
            converted = InstrumentationScope(
                scope.name or "",
                scope.version or None,
                getattr(scope, "schema_url", None) or None,
                MappingProxyType(kept),
            )
        with self._lock:
            self._scopes[id(scope)] = (scope, converted)
        return converted
