"""The OTLP encoders, checked against the official opentelemetry-proto definitions."""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from otlp_receiver import check_span, decode_request, full_record
from spanlane._records import (
    Event,
    InstrumentationScope,
    Link,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
)
from spanlane.exporters import _otlp_encode, _otlp_json, _otlp_proto
from spanlane.exporters._otlp_encode import JSON, PROTOBUF, Codec

CODECS = [pytest.param(PROTOBUF, id="protobuf"), pytest.param(JSON, id="json")]


def encode(records: list[SpanRecord], codec: Codec, max_bytes: int = 1 << 30) -> list[bytes]:
    fragments = [codec.encode_span(record) for record in records]
    bodies = [body for body, _ in _otlp_encode.split(records, fragments, codec, max_bytes)]
    assert all(isinstance(body, bytes) for body in bodies)  # no rope for small spans
    return bodies  # type: ignore[return-value]


def decode(body: bytes, codec: Codec) -> Any:
    return decode_request(body, codec.content_type)[0]


@pytest.mark.parametrize("codec", CODECS)
def test_every_field_round_trips(codec: Codec) -> None:
    record = full_record()
    request = decode(encode([record], codec)[0], codec)
    (resource_spans,) = request.resource_spans
    assert {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes} == {
        "service.name": "checkout",
        "service.instance.id": "i-1",
    }
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "checkout.http"
    assert scope_spans.scope.version == "2.1.0"
    (span,) = scope_spans.spans
    check_span(span, record)


@pytest.mark.parametrize("codec", CODECS)
def test_root_span_without_status_or_extras_round_trips(codec: Codec) -> None:
    record = SpanRecord("root", 1, 2, None, SpanKind.INTERNAL, 5, 6)
    request = decode(encode([record], codec)[0], codec)
    (span,) = request.resource_spans[0].scope_spans[0].spans
    check_span(span, record)
    assert not span.HasField("status")


@pytest.mark.parametrize("codec", CODECS)
def test_spans_are_grouped_by_resource_then_scope(codec: Codec) -> None:
    shop, bank = Resource({"service.name": "shop"}), Resource({"service.name": "bank"})
    http, db = InstrumentationScope("http", "1"), InstrumentationScope("db", None)
    records = [
        full_record(span_id=1, resource=shop, scope=http),
        full_record(span_id=2, resource=bank, scope=http),
        full_record(span_id=3, resource=shop, scope=db),
        # Equal to ``shop`` but another object: it joins shop's group.
        full_record(span_id=4, resource=Resource({"service.name": "shop"}), scope=http),
    ]
    request = decode(encode(records, codec)[0], codec)
    layout = [
        (
            rs.resource.attributes[0].value.string_value,
            [
                (
                    ss.scope.name,
                    ss.scope.version,
                    [int.from_bytes(s.span_id, "big") for s in ss.spans],
                )
                for ss in rs.scope_spans
            ],
        )
        for rs in request.resource_spans
    ]
    assert layout == [
        ("shop", [("http", "1", [1, 4]), ("db", "", [3])]),
        ("bank", [("http", "1", [2])]),
    ]


def test_json_follows_the_otlp_json_rules() -> None:
    """Hex ids, 64-bit integers as strings, enums as integers, lowerCamelCase names."""
    document = json.loads(encode([full_record()], JSON)[0])
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "0102030405060708090a0b0c0d0e0f10"
    assert span["spanId"] == "1112131415161718"
    assert span["parentSpanId"] == "2122232425262728"
    assert span["links"][0]["traceId"] == f"{0xAA << 100:032x}"
    assert span["startTimeUnixNano"] == "1700000000123456789"
    assert span["events"][0]["timeUnixNano"] == "1700000000200000000"
    assert span["kind"] == 3
    assert span["status"] == {"code": 2, "message": "it broke"}
    attributes = {kv["key"]: kv["value"] for kv in span["attributes"]}
    assert attributes["max"] == {"intValue": str(2**63 - 1)}
    assert attributes["true"] == {"boolValue": True}
    assert attributes["float"] == {"doubleValue": -1.25e-7}
    assert attributes["none"] == {"arrayValue": {"values": []}}
    assert span["droppedLinksCount"] == 6


def test_json_writes_non_finite_doubles_as_strings() -> None:
    record = full_record(
        attributes={"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "arr": (math.inf,)}
    )
    body = encode([record], JSON)[0]
    json.loads(body)  # strict JSON: no bare NaN tokens
    span = decode(body, JSON).resource_spans[0].scope_spans[0].spans[0]
    values = {kv.key: kv.value for kv in span.attributes}
    assert math.isnan(values["nan"].double_value)
    assert values["inf"].double_value == math.inf
    assert values["ninf"].double_value == -math.inf
    assert values["arr"].array_value.values[0].double_value == math.inf


@pytest.mark.parametrize("codec", CODECS)
def test_lone_surrogates_are_replaced_not_fatal(codec: Codec) -> None:
    record = full_record(name="bad\udcffname", attributes={"k\ud800": "v\udfff"})
    span = decode(encode([record], codec)[0], codec).resource_spans[0].scope_spans[0].spans[0]
    assert span.name.startswith("bad")
    assert span.name.endswith("name")
    assert len(span.attributes) == 1


@pytest.mark.parametrize("codec", CODECS)
def test_values_outside_the_record_types_are_encoded_sensibly(codec: Codec) -> None:
    """A hand-built record may hold subclasses, lists or big ints; none of them breaks encoding."""

    class Tag(str):
        pass

    record = full_record(
        attributes={
            "sub": Tag("x"),
            "list": [1, 2],
            "huge": 2**70,
            "obj": complex(1, 2),
            "kind": SpanKind.SERVER,
        }
    )
    span = decode(encode([record], codec)[0], codec).resource_spans[0].scope_spans[0].spans[0]
    values = {kv.key: kv.value for kv in span.attributes}
    assert values["sub"].string_value == "x"
    assert [v.int_value for v in values["list"].array_value.values] == [1, 2]
    assert values["huge"].string_value == str(2**70)
    assert values["kind"].int_value == 2
    assert values["obj"].string_value == "(1+2j)"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("max_bytes", [1024, 2500, 6000])
def test_split_bodies_respect_the_cap_and_keep_every_span_once_in_order(
    codec: Codec, max_bytes: int
) -> None:
    other = Resource({"service.name": "other"})
    records = [
        full_record(
            span_id=i + 1,
            resource=other if i % 7 == 0 else full_record().resource,
            attributes={"i": i},
            events=(),
            links=(),
        )
        for i in range(60)
    ]
    bodies = encode(records, codec, max_bytes)
    assert len(bodies) > 1
    assert all(len(body) <= max_bytes for body in bodies)
    seen = [
        int.from_bytes(span.span_id, "big")
        for body in bodies
        for rs in decode(body, codec).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert sorted(seen) == list(range(1, 61))
    # Within one resource, order survives across the parts.
    assert [s for s in seen if (s - 1) % 7 != 0] == [s for s in range(1, 61) if (s - 1) % 7 != 0]


@pytest.mark.parametrize("codec", CODECS)
def test_a_span_bigger_than_the_cap_is_sent_alone(codec: Codec) -> None:
    big = full_record(span_id=2, attributes={"blob": "x" * 5000})
    records = [full_record(span_id=1), big, full_record(span_id=3)]
    fragments = [codec.encode_span(record) for record in records]
    counts = [count for _, count in _otlp_encode.split(records, fragments, codec, 2048)]
    assert counts == [1, 1, 1]


@pytest.mark.anyio
async def test_encode_batch_gzips_parts_and_reports_sizes() -> None:
    records = [full_record(span_id=i + 1) for i in range(300)]
    parts = (await _otlp_encode.encode_batch(records, PROTOBUF, 1 << 20, gzip=True)).parts
    assert [part.spans for part in parts] == [300]
    assert isinstance(parts[0].body, bytes)
    body = gzip.decompress(parts[0].body)
    assert len(body) == parts[0].encoded_size
    assert len(decode(body, PROTOBUF).resource_spans[0].scope_spans[0].spans) == 300


@pytest.mark.anyio
async def test_large_bodies_are_compressed_off_the_loop_identically() -> None:
    records = [full_record(span_id=i + 1, attributes={"pad": "y" * 2000}) for i in range(300)]
    parts = (await _otlp_encode.encode_batch(records, PROTOBUF, 1 << 22, gzip=True)).parts
    assert parts[0].encoded_size >= _otlp_encode.THREAD_COMPRESS_BYTES
    assert isinstance(parts[0].body, bytes)
    assert len(gzip.decompress(parts[0].body)) == parts[0].encoded_size


def test_partial_success_is_decoded_from_protobuf_and_json() -> None:
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=3, error_message="too old")
    )
    assert _otlp_proto.decode_partial_success(response.SerializeToString()) == (3, "too old")
    assert _otlp_proto.decode_partial_success(b"") == (0, "")
    assert _otlp_json.decode_partial_success(
        b'{"partialSuccess": {"rejectedSpans": "3", "errorMessage": "too old"}}'
    ) == (3, "too old")
    assert _otlp_json.decode_partial_success(b'{"partial_success": {"rejected_spans": 2}}') == (
        2,
        "",
    )
    assert _otlp_json.decode_partial_success(b"{}") == (0, "")


@pytest.mark.parametrize("body", [b"\x0a\xff", b"\x0b", b"\x08"])
def test_malformed_protobuf_responses_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the decoder's one documented error
        _otlp_proto.decode_partial_success(body)


def test_encoding_caches_stay_bounded() -> None:
    records = [full_record(attributes={f"key{i}": f"value{i}", "n": i}) for i in range(5000)]
    for record in records:
        _otlp_proto.encode_span(record)
    assert 0 < len(_otlp_proto._STR_FIELD_CACHE) <= _otlp_proto._CACHE_LIMIT
    assert 0 < len(_otlp_proto._INT_FIELD_CACHE) <= _otlp_proto._CACHE_LIMIT


def test_cached_fields_never_confuse_equal_values_of_different_types() -> None:
    """True == 1 and 1 == 1.0 in Python; on the wire they are a bool, an int and a double."""
    encoded = [
        _otlp_proto.encode_span(full_record(attributes={"v": value}))
        for value in (1, True, 1.0, "1", 1, True)
    ]
    assert len(set(encoded[:4])) == 4
    assert encoded[4] == encoded[0]
    assert encoded[5] == encoded[1]


# --- property: whatever a record holds, the receiver decodes exactly that -----------------------

# Lone surrogates cannot be encoded; test_lone_surrogates_are_replaced_not_fatal covers them.
_text = st.text(st.characters(codec="utf-8"), max_size=12)
_int64 = st.integers(-(2**63), 2**63 - 1)
_float = st.floats(allow_nan=False)
_scalar = st.one_of(_text, st.booleans(), _int64, _float)
_array = st.one_of(
    st.lists(_text, max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(_int64, max_size=3).map(tuple),
    st.lists(_float, max_size=3).map(tuple),
)
# OTLP AnyValue beyond scalars and homogeneous arrays: bytes, maps, mixed and nested arrays,
# None inside arrays and maps.
_any = st.recursive(
    st.one_of(_scalar, st.binary(max_size=8), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_text.filter(bool), inner, max_size=3),
    ),
    max_leaves=8,
)
_attributes = st.dictionaries(
    _text,
    st.one_of(_scalar, _array, st.binary(max_size=8), _any.filter(lambda v: v is not None)),
    max_size=5,
)
_time = st.integers(0, 2**64 - 1)
_count = st.integers(0, 2**32 - 1)
_context = st.builds(
    SpanContext,
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    trace_flags=st.integers(0, 255),
    trace_state=_text,
    is_remote=st.booleans(),
)
_records = st.builds(
    SpanRecord,
    name=_text,
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    parent_span_id=st.none() | st.integers(1, 2**64 - 1),
    kind=st.sampled_from(SpanKind),
    start_time_ns=_time,
    end_time_ns=_time,
    attributes=_attributes,
    events=st.lists(st.builds(Event, _text, _time, _attributes, _count), max_size=2).map(tuple),
    links=st.lists(st.builds(Link, _context, _attributes, _count), max_size=2).map(tuple),
    status=st.builds(Status, st.sampled_from(StatusCode), st.none() | _text),
    dropped_attributes=_count,
    dropped_events=_count,
    dropped_links=_count,
    trace_state=_text,
    parent_is_remote=st.booleans(),
)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=150, deadline=None)
@given(record=_records)
def test_any_record_round_trips_through_the_official_definitions(
    codec: Codec, record: SpanRecord
) -> None:
    """For every record of legal values, decoding its encoding yields exactly its fields."""
    span = decode(encode([record], codec)[0], codec).resource_spans[0].scope_spans[0].spans[0]
    # An empty description reads back as no description; both mean "no message".
    if record.status.description == "":
        record = attrs.evolve(record, status=Status(record.status.code))
    check_span(span, record)


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_maps_and_mixed_arrays_are_encoded_as_any_values(codec: Codec) -> None:
    record = full_record(
        attributes={
            "bytes": b"\x00\xff",
            "map": {"a": 1, "nested": {"b": (True, None)}},
            "mixed": (1, "two", 3.0, None, b"x", ("deep",)),
        }
    )
    span = decode(encode([record], codec)[0], codec).resource_spans[0].scope_spans[0].spans[0]
    values = {kv.key: kv.value for kv in span.attributes}
    assert values["bytes"].bytes_value == b"\x00\xff"
    assert values["map"].WhichOneof("value") == "kvlist_value"
    mixed = values["mixed"].array_value.values
    assert [item.WhichOneof("value") for item in mixed] == [
        "int_value",
        "string_value",
        "double_value",
        None,
        "bytes_value",
        "array_value",
    ]
    check_span(span, record)


@pytest.mark.parametrize("codec", CODECS)
def test_a_scope_carries_its_schema_url_and_attributes(codec: Codec) -> None:
    scope = InstrumentationScope(
        "opentelemetry.instrumentation.httpx",
        "0.50b0",
        schema_url="https://opentelemetry.io/schemas/1.11.0",
        attributes=_frozen({"library.language": "python"}),
    )
    plain = InstrumentationScope("plain", None)
    records = [full_record(scope=scope), full_record(scope=plain, span_id=99)]
    request = decode(encode(records, codec)[0], codec)
    first, second = request.resource_spans[0].scope_spans
    assert first.scope.name == "opentelemetry.instrumentation.httpx"
    assert first.scope.version == "0.50b0"
    assert first.schema_url == "https://opentelemetry.io/schemas/1.11.0"
    assert {kv.key: kv.value.string_value for kv in first.scope.attributes} == {
        "library.language": "python"
    }
    assert second.scope.name == "plain"
    assert second.schema_url == ""


def _frozen(values: dict[str, Any]) -> Any:
    from types import MappingProxyType

    return MappingProxyType(values)


# --- large spans: encoded in pieces, kept in chunks ---------------------------------------------


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """What counts as large, scaled down so that tests stay small."""
    monkeypatch.setattr(_otlp_proto, "LARGE_CHARS", 1000)
    monkeypatch.setattr(_otlp_proto, "LARGE_ITEMS", 100)
    monkeypatch.setattr(_otlp_proto, "LARGE_EVENTS", 100)
    monkeypatch.setattr(_otlp_proto, "CHUNK_BYTES", 4096)


def _large_records() -> list[SpanRecord]:
    return [
        full_record(attributes={"prompt": "ab✓" * 3000, "n": 1}),
        full_record(attributes={"list": tuple(range(5000)), "words": tuple(["w"] * 3000)}),
        full_record(
            events=tuple(
                Event(f"e{i}", 1_700_000_000_000_000_000 + i, {"i": i}) for i in range(1200)
            )
        ),
        full_record(events=(Event("big", 1, {"text": "t" * 300_000}),)),
        full_record(attributes={"nested": ("x" * 300_000, "y")}),
    ]


@pytest.mark.anyio
@pytest.mark.usefixtures("small_limits")
async def test_a_large_span_is_encoded_in_pieces_to_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = 0

    async def pause() -> None:
        nonlocal pauses
        pauses += 1

    for record in _large_records():
        with pytest.raises(_otlp_proto.LargeValue):
            _otlp_proto.encode_span(record)
        rope = await _otlp_proto.encode_span_sliced(record, pause)
        assert all(len(chunk) <= 300_100 for chunk in rope.chunks)
        with monkeypatch.context() as unlimited:
            unlimited.setattr(_otlp_proto, "LARGE_CHARS", 1 << 30)
            unlimited.setattr(_otlp_proto, "LARGE_ITEMS", 1 << 30)
            unlimited.setattr(_otlp_proto, "LARGE_EVENTS", 1 << 30)
            assert b"".join(rope.chunks) == _otlp_proto.encode_span(record)
    assert pauses > 10


@pytest.mark.anyio
@pytest.mark.usefixtures("small_limits")
async def test_a_batch_with_a_large_span_round_trips_as_a_rope() -> None:
    records = [full_record(span_id=1), *_large_records(), full_record(span_id=2)]
    encoded = await _otlp_encode.encode_batch(records, PROTOBUF, 1 << 30, gzip=True)
    (part,) = encoded.parts
    assert isinstance(part.body, _otlp_proto.Rope)
    body = gzip.decompress(b"".join(part.body.chunks))
    spans = decode(body, PROTOBUF).resource_spans[0].scope_spans[0].spans
    assert len(spans) == len(records)
    for span, record in zip(spans, records, strict=True):
        check_span(span, record)
