"""Packing queued records into untracked tuples, and the byte-bound size estimate."""

from __future__ import annotations

import gc
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otlp_receiver import full_record
from spanlane import SpanKind, SpanRecord, Status, StatusCode
from spanlane._packing import PackTable, estimate_size, item_key, pack, unpack
from spanlane._records import EMPTY_ATTRIBUTES, new_record
from test_otlp_encoding import _records  # every legal value a record can hold


def round_trip(record: SpanRecord, table: PackTable | None = None) -> tuple[object, SpanRecord]:
    table = table or PackTable()
    packed = pack(record, table)
    return packed, unpack(packed, table.objects)


@settings(max_examples=200, deadline=None)
@given(
    record=_records,
    start=st.booleans(),
    root=st.booleans(),
    resource=st.booleans(),
)
def test_any_record_packs_into_a_tuple_and_unpacks_equal(
    record: SpanRecord, start: bool, root: bool, resource: bool
) -> None:
    """Packing is exact: for every record of legal values (start notifications and root spans
    included) the unpacked record equals the original, field by field."""
    record = attrs.evolve(
        record,
        end_time_ns=None if start else record.end_time_ns,
        parent_span_id=None if root else record.parent_span_id,
        attributes=MappingProxyType(dict(record.attributes)),
    )
    if resource:
        record = attrs.evolve(record, resource=full_record().resource, scope=full_record().scope)
    packed, unpacked = round_trip(record)
    assert type(packed) is tuple
    assert type(unpacked) is SpanRecord
    assert unpacked == record
    assert item_key(packed) == (record.span_id, record.end_time_ns is None)


def test_every_field_of_a_full_record_survives() -> None:
    record = full_record()
    packed, unpacked = round_trip(record)
    assert type(packed) is tuple
    assert unpacked == record
    assert unpacked.resource is record.resource
    assert unpacked.scope is record.scope


def test_a_plain_record_is_two_untracked_values() -> None:
    record = new_record("x", 1, 2, None, SpanKind.INTERNAL, 3, 4)
    packed, unpacked = round_trip(record)
    assert len(packed) == 2  # type: ignore[arg-type]
    assert unpacked.attributes is EMPTY_ATTRIBUTES
    gc.collect()
    assert not gc.is_tracked(packed)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"trace_flags": 256}, id="flags-out-of-range"),
        pytest.param({"trace_flags": True}, id="flags-a-bool"),
        pytest.param({"span_id": -1}, id="negative-id"),
        pytest.param({"dropped_attributes": 2**40}, id="huge-count"),
        pytest.param({"kind": 3}, id="kind-an-int"),
        pytest.param({"parent_is_remote": 1}, id="remote-an-int"),
        pytest.param({"name": b"bytes"}, id="name-bytes"),
        pytest.param({"attributes": (("a", 1),)}, id="attributes-not-a-mapping"),
        pytest.param({"status": Status(2)}, id="status-code-an-int"),  # type: ignore[arg-type]
        pytest.param({"events": [1]}, id="events-a-list"),
    ],
)
def test_a_record_that_cannot_be_packed_faithfully_stays_as_it_is(
    changes: dict[str, Any],
) -> None:
    record = attrs.evolve(full_record(), **changes)
    assert pack(record, PackTable()) is record


def test_a_table_full_of_resources_leaves_further_records_unpacked() -> None:
    table = PackTable()
    records = [
        attrs.evolve(full_record(), resource=attrs.evolve(full_record().resource))
        for _ in range(40)
    ]
    packed = [pack(record, table) for record in records]
    assert sum(type(item) is tuple for item in packed) == 32  # resource and scope each use one
    assert [unpack(item, table.objects) for item in packed] == records


def test_records_with_the_same_keys_share_one_key_tuple() -> None:
    table = PackTable()
    one = pack(full_record(attributes={"a": 1, "b": "x"}), table)
    two = pack(full_record(attributes={"a": 2, "b": "y"}), table)
    assert one[2] is two[2]  # type: ignore[index]


def test_the_size_estimate_grows_with_what_the_record_holds() -> None:
    bare = estimate_size(new_record("x", 1, 2, None, SpanKind.INTERNAL, 3, 4))
    prompt = estimate_size(full_record(attributes={"prompt": "p" * 10_000}, events=(), links=()))
    wide = estimate_size(full_record(attributes={"p": "ü" * 10_000}, events=(), links=()))
    assert 300 < bare < 600
    assert 10_000 < prompt < 11_000
    assert wide > 40_000  # non-ASCII text may take four bytes a character
    million = tuple(f"item{i}" for i in range(1_000_000))
    assert estimate_size(full_record(attributes={"list": million})) > 50_000_000


def test_the_status_of_an_error_survives() -> None:
    record = full_record(status=Status(StatusCode.ERROR, None), events=(), links=())
    assert round_trip(record)[1] == record
