"""Records: the frozen value types that cross a lane's stream, and the fast record builder."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs
import pytest

from spanlane import (
    Event,
    InstrumentationScope,
    Link,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
    __version__,
)
from spanlane._records import _RecordBuilder, new_record

pytestmark = pytest.mark.anyio

CONTEXT = SpanContext(trace_id=0x1234, span_id=0x5678)
RESOURCE = Resource(MappingProxyType({"service.name": "svc"}))
SCOPE = InstrumentationScope("mylib", "1.2")


def _full_record_arguments() -> dict[str, object]:
    """A value for every SpanRecord field, none of them the default."""
    return {
        "name": "op",
        "trace_id": 0xABC,
        "span_id": 0xDEF,
        "parent_span_id": 0x123,
        "kind": SpanKind.SERVER,
        "start_time_ns": 10,
        "end_time_ns": 25,
        "attributes": MappingProxyType({"k": "v"}),
        "events": (Event("e", 11),),
        "links": (Link(CONTEXT),),
        "status": Status(StatusCode.ERROR, "bad"),
        "dropped_attributes": 1,
        "dropped_events": 2,
        "dropped_links": 3,
        "resource": RESOURCE,
        "scope": SCOPE,
        "trace_state": "a=b",
        "parent_is_remote": True,
    }


async def test_record_builder_has_the_same_fields_in_the_same_order() -> None:
    record_fields = attrs.fields(SpanRecord)
    builder_fields = attrs.fields(_RecordBuilder)
    assert [field.name for field in builder_fields] == [field.name for field in record_fields]
    assert [field.default for field in builder_fields] == [field.default for field in record_fields]
    # The same layout, which is what lets the builder be re-labelled as a record.
    assert vars(_RecordBuilder)["__slots__"] == vars(SpanRecord)["__slots__"]


async def test_new_record_equals_the_attrs_constructor_and_is_frozen() -> None:
    arguments = _full_record_arguments()
    fast = new_record(**arguments)
    slow = SpanRecord(**arguments)  # type: ignore[arg-type]
    assert fast == slow
    assert type(fast) is SpanRecord
    assert attrs.asdict(fast, recurse=False) == attrs.asdict(slow, recurse=False)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.name = "changed"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.end_time_ns = 0  # type: ignore[misc]
    assert not hasattr(fast, "__dict__")


async def test_record_defaults() -> None:
    record = SpanRecord("op", 1, 2, None, SpanKind.INTERNAL, 10, 20)
    assert dict(record.attributes) == {}
    assert (record.events, record.links) == ((), ())
    assert record.status == Status(StatusCode.UNSET, None)
    assert (record.dropped_attributes, record.dropped_events, record.dropped_links) == (0, 0, 0)
    assert record.scope == InstrumentationScope("spanlane", __version__)
    assert dict(record.resource.attributes) == {}
    assert (record.trace_state, record.parent_is_remote) == ("", False)


async def test_start_record_has_no_end_and_no_duration() -> None:
    start = SpanRecord("op", 1, 2, None, SpanKind.INTERNAL, 10, None)
    end = attrs.evolve(start, end_time_ns=35)
    assert start.is_start
    assert start.duration_ns is None
    assert not end.is_start
    assert end.duration_ns == 25


async def test_record_context_carries_the_ids_and_trace_state() -> None:
    record = SpanRecord("op", 7, 8, None, SpanKind.INTERNAL, 0, 1, trace_state="x=y")
    assert record.context == SpanContext(7, 8, trace_state="x=y")


async def test_enum_values_are_otlp_numbers() -> None:
    assert [kind.value for kind in SpanKind] == [1, 2, 3, 4, 5]
    assert [kind.name for kind in SpanKind] == [
        "INTERNAL",
        "SERVER",
        "CLIENT",
        "PRODUCER",
        "CONSUMER",
    ]
    assert (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR) == (0, 1, 2)


async def test_value_types_are_frozen() -> None:
    values: list[Any] = [
        Status(),
        CONTEXT,
        Event("e", 1),
        Link(CONTEXT),
        RESOURCE,
        SCOPE,
    ]
    for value in values:
        field = attrs.fields(type(value))[0]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(value, field.name, None)


async def test_span_context_defaults_to_sampled_and_local() -> None:
    context = SpanContext(trace_id=1, span_id=2)
    assert (context.trace_flags, context.trace_state, context.is_remote) == (1, "", False)


async def test_resource_service_name() -> None:
    assert RESOURCE.service_name == "svc"
    assert Resource().service_name is None
    assert Resource(MappingProxyType({"service.name": 5})).service_name is None
