"""The JSON form of a record, shared by the JSON-lines exporter and the command line."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from .._ids import format_span_id, format_trace_id
from .._records import AnyValue, AttributeValue, SpanRecord


def _json_value(value: AnyValue) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN or infinity; write them as the strings OTLP/JSON uses.
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, bytes):
        # JSON has no bytes either; base64, as OTLP/JSON writes bytesValue.
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {key: _json_value(item) for key, item in value.items()}
    return value


def json_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """Attributes as a JSON-safe dict (tuples become lists, non-finite floats strings)."""
    return {key: _json_value(value) for key, value in attributes.items()}


def record_to_json(record: SpanRecord) -> dict[str, Any]:
    """The JSON-lines form of a record: ids as lowercase hex, enums by name.

    Each record carries its own resource and instrumentation scope, so that every line of a
    JSON-lines file stands alone (files from several services can be merged and still told
    apart): ``"resource"`` is the resource's attributes (``service.name`` among them) and
    ``"scope"`` is ``{"name": ..., "version": ...}``. The keys are described in
    ``docs/guide.md`` ("The JSON-lines format").

    Args:
        record: the record to convert.

    Returns:
        A dict of JSON-safe values (tuples become lists, non-finite floats the strings
        ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``), ready for :func:`json.dumps`.
    """
    return {
        "name": record.name,
        "trace_id": format_trace_id(record.trace_id),
        "span_id": format_span_id(record.span_id),
        "parent_span_id": (
            None if record.parent_span_id is None else format_span_id(record.parent_span_id)
        ),
        "kind": record.kind.name,
        "trace_flags": record.trace_flags,
        "trace_state": record.trace_state,
        "start_time_ns": record.start_time_ns,
        "end_time_ns": record.end_time_ns,
        "attributes": json_attributes(record.attributes),
        "events": [
            {
                "name": event.name,
                "time_ns": event.time_ns,
                "attributes": json_attributes(event.attributes),
            }
            for event in record.events
        ],
        "links": [
            {
                "trace_id": format_trace_id(link.context.trace_id),
                "span_id": format_span_id(link.context.span_id),
                "attributes": json_attributes(link.attributes),
            }
            for link in record.links
        ],
        "status": {"code": record.status.code.name, "description": record.status.description},
        "dropped_attributes": record.dropped_attributes,
        "dropped_events": record.dropped_events,
        "dropped_links": record.dropped_links,
        "resource": json_attributes(record.resource.attributes),
        "scope": {
            "name": record.scope.name,
            "version": record.scope.version,
            "schema_url": record.scope.schema_url,
            "attributes": json_attributes(record.scope.attributes),
        },
    }
