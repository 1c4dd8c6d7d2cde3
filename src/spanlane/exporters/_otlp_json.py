"""OTLP/JSON encoding of span records, as the OTLP specification defines it.

OTLP/JSON is the proto3 JSON mapping of the same messages with three deviations the
specification requires: trace and span ids are hex strings (not base64), enum values are integers,
and field names are lowerCamelCase. 64-bit integers (timestamps, ``intValue``) are decimal strings,
as proto3 JSON writes them.

Like the protobuf encoder, every span is encoded on its own into a fragment (here one JSON
object), so that a batch can be split by size and a request assembled by joining fragments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._records import Event, InstrumentationScope, Link, Resource, SpanRecord, clean_flags

__all__ = [
    "CONTENT_TYPE",
    "decode_partial_success",
    "encode_request",
    "encode_resource",
    "encode_scope",
    "encode_span",
    "group_overhead",
]

CONTENT_TYPE = "application/json"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# See _otlp_proto: a recorded span is sampled (bit 0); bit 8 says bit 9 (remote parent) is known.
# Span flags: the record's W3C trace flags in bits 0-7, bit 8 "bit 9 is meaningful", bit 9
# "the parent was remote".
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

# Compact separators keep requests small. Non-ASCII text is written as UTF-8 rather than \u
# escapes: an escaped lone surrogate would be valid JSON that every OTLP receiver rejects, while
# encoding lets _utf8 replace it, as the protobuf encoder does.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _any_value(value: object) -> dict[str, Any]:
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        number: int = value  # type: ignore[assignment]
        if _INT64_MIN <= number <= _INT64_MAX:
            return {"intValue": str(number)}
        return {"stringValue": str(number)}
    if kind is float:
        number_f: float = value  # type: ignore[assignment]
        if math.isfinite(number_f):
            return {"doubleValue": number_f}
        # proto3 JSON spells the non-finite doubles as these strings; bare NaN is not JSON.
        if math.isnan(number_f):
            return {"doubleValue": "NaN"}
        return {"doubleValue": "Infinity" if number_f > 0 else "-Infinity"}
    if kind is tuple or kind is list:
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}  # type: ignore[attr-defined]
    return _any_value_slow(value)


def _any_value_slow(value: object) -> dict[str, Any]:
    """Subclasses of the legal types, and anything else, which becomes its ``repr``."""
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, str):
        return {"stringValue": str.__str__(value)}
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, (tuple, list)):
        return _any_value(tuple(value))
    return {"stringValue": repr(value)}


def _attributes(attributes: Mapping[str, object]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _any_value(value)} for key, value in attributes.items()]


def _event(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"timeUnixNano": str(event.time_ns), "name": event.name}
    if event.attributes:
        out["attributes"] = _attributes(event.attributes)
    if event.dropped_attributes:
        out["droppedAttributesCount"] = event.dropped_attributes
    return out


def _link(link: Link) -> dict[str, Any]:
    context = link.context
    flags = (
        clean_flags(context.trace_flags) | _HAS_IS_REMOTE | (_IS_REMOTE if context.is_remote else 0)
    )
    out: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "flags": flags,
    }
    if context.trace_state:
        out["traceState"] = context.trace_state
    if link.attributes:
        out["attributes"] = _attributes(link.attributes)
    if link.dropped_attributes:
        out["droppedAttributesCount"] = link.dropped_attributes
    return out


def encode_span(record: SpanRecord) -> bytes:
    """Encode one finished span as a JSON ``Span`` object (one fragment of a ``spans`` array)."""
    span: dict[str, Any] = {
        "traceId": f"{record.trace_id:032x}",
        "spanId": f"{record.span_id:016x}",
        "flags": (record.trace_flags & 0xFF)
        | _HAS_IS_REMOTE
        | (_IS_REMOTE if record.parent_is_remote else 0),
        "name": record.name,
        "kind": int(record.kind),
        "startTimeUnixNano": str(record.start_time_ns),
        "endTimeUnixNano": str(record.end_time_ns or 0),
    }
    if record.parent_span_id is not None:
        span["parentSpanId"] = f"{record.parent_span_id:016x}"
    if record.trace_state:
        span["traceState"] = record.trace_state
    if record.attributes:
        span["attributes"] = _attributes(record.attributes)
    if record.dropped_attributes:
        span["droppedAttributesCount"] = record.dropped_attributes
    if record.events:
        span["events"] = [_event(event) for event in record.events]
    if record.dropped_events:
        span["droppedEventsCount"] = record.dropped_events
    if record.links:
        span["links"] = [_link(link) for link in record.links]
    if record.dropped_links:
        span["droppedLinksCount"] = record.dropped_links
    status = record.status
    if status.code or status.description:
        status_out: dict[str, Any] = {"code": int(status.code)}
        if status.description:
            status_out["message"] = status.description
        span["status"] = status_out
    return _utf8(_dumps(span))


def encode_resource(resource: Resource) -> bytes:
    """Encode a resource as a JSON ``Resource`` object."""
    return _utf8(_dumps({"attributes": _attributes(resource.attributes)}))


def encode_scope(scope: InstrumentationScope) -> bytes:
    """Encode an instrumentation scope as a JSON ``InstrumentationScope`` object."""
    out: dict[str, Any] = {}
    if scope.name:
        out["name"] = scope.name
    if scope.version:
        out["version"] = scope.version
    return _utf8(_dumps(out))


def group_overhead(resource_field: bytes, scope_field: bytes) -> int:
    """An upper bound on the bytes one resource-and-scope group adds to a request besides spans."""
    return len(resource_field) + len(scope_field) + 64


def encode_request(
    groups: Sequence[tuple[bytes, Sequence[tuple[bytes, Sequence[bytes]]]]],
) -> bytes:
    """Assemble an ``ExportTraceServiceRequest`` JSON document from encoded fragments.

    Args:
        groups: per resource, its JSON object and, per scope, the scope's JSON object and the
            span objects from :func:`encode_span`.

    Returns:
        The request body.
    """
    resource_parts = []
    for resource, scopes in groups:
        scope_parts = [
            b'{"scope":' + scope + b',"spans":[' + b",".join(spans) + b"]}"
            for scope, spans in scopes
        ]
        resource_parts.append(
            b'{"resource":' + resource + b',"scopeSpans":[' + b",".join(scope_parts) + b"]}"
        )
    return b'{"resourceSpans":[' + b",".join(resource_parts) + b"]}"


def decode_partial_success(body: bytes) -> tuple[int, str]:
    """Read ``rejectedSpans`` and ``errorMessage`` from a JSON ``ExportTraceServiceResponse``.

    Receivers may write field names in lowerCamelCase or as in the proto file, and 64-bit
    integers as strings or numbers; all are accepted.

    Raises:
        ValueError: the body is not a valid response.
    """
    document = json.loads(body) if body.strip() else {}
    if not isinstance(document, dict):
        raise ValueError("response is not a JSON object")
    partial = document.get("partialSuccess", document.get("partial_success")) or {}
    if not isinstance(partial, dict):
        raise ValueError("partialSuccess is not a JSON object")
    rejected = partial.get("rejectedSpans", partial.get("rejected_spans", 0)) or 0
    message = partial.get("errorMessage", partial.get("error_message", "")) or ""
    return int(rejected), str(message)
