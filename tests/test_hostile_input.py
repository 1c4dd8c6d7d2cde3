"""Bad input never reaches the caller and one bad record never sinks a batch (core v2, 6 and 7).

Only two mistakes raise, and both are documented: a span name that is not a str, and a
``parent=`` that is neither a Span, a SpanContext nor None (``TypeError``). Everything else is
coerced, clamped, or ignored and counted (``Stats.ignored_calls``, the record's drop counts).
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import spanlane
from spanlane import (
    DropReason,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
    open_tracer,
)
from spanlane._span import MAX_TIME_NS
from spanlane.exporters import ConsoleExporter, JSONLinesExporter, MemoryExporter
from spanlane.exporters._otlp_encode import JSON, PROTOBUF, encode_batch
from spanlane.sampling import ALWAYS_ON
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio


class Raises:
    """A container whose every dunder raises."""

    def __init__(self, error: type[BaseException] = RuntimeError) -> None:
        self.error = error

    def __bool__(self) -> bool:
        raise self.error("no bool")

    def __len__(self) -> int:
        raise self.error("no len")

    def __iter__(self) -> Iterator[Any]:
        raise self.error("no iter")

    def items(self) -> Any:
        raise self.error("no items")

    def __repr__(self) -> str:
        raise self.error("no repr")


class BaseRepr:
    """A value whose ``__repr__`` raises a BaseException."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __repr__(self) -> str:
        raise self.error()


class WeirdModule(Exception):
    pass


WeirdModule.__module__ = 42  # type: ignore[assignment]


class NoneModule(Exception):
    pass


NoneModule.__module__ = None  # type: ignore[assignment]


async def _one(**span_options: Any) -> tuple[SpanRecord, spanlane.Stats]:
    async with capture_spans() as captured:
        with captured.tracer.span("x", **span_options):
            pass
        (record,) = await captured.flush()
    return record, captured.tracer.stats()


# --- 7. the caller never gets an exception -----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["ok", "OK", 3, -1, None, 1.0, object()],
    ids=["ok", "OK", "3", "-1", "None", "float", "object"],
)
async def test_set_status_with_a_bad_code_is_ignored_and_counted(value: object) -> None:
    async with capture_spans() as captured:
        with captured.tracer.span("x") as span:
            span.set_status(value)  # type: ignore[arg-type]
        (record,) = await captured.flush()
    assert record.status.code is StatusCode.UNSET
    assert captured.tracer.stats().ignored_calls == 1


async def test_set_status_accepts_a_status_object_and_the_int_values() -> None:
    async with capture_spans() as captured:
        with captured.tracer.span("a") as span:
            span.set_status(Status(StatusCode.ERROR, "broken"))
        with captured.tracer.span("b") as span:
            span.set_status(1)  # type: ignore[arg-type]
        a, b = await captured.flush()
    assert a.status == Status(StatusCode.ERROR, "broken")
    assert b.status == Status(StatusCode.OK)


@pytest.mark.parametrize("kind", [99, 0, -3, "server", None, 2.0], ids=str)
async def test_an_unknown_kind_means_internal_and_is_counted(kind: object) -> None:
    record, stats = await _one(kind=kind)
    assert record.kind is SpanKind.INTERNAL
    assert stats.ignored_calls == 1


async def test_kind_as_its_int_value_is_accepted() -> None:
    record, stats = await _one(kind=3)
    assert record.kind is SpanKind.CLIENT
    assert stats.ignored_calls == 0


async def test_an_int_of_more_than_4300_digits_is_kept_as_a_description() -> None:
    huge = 10**5000
    async with capture_spans() as captured:
        with captured.tracer.span("x", attributes={"a": huge}) as span:
            span.set_attribute("b", huge)
            span.set_attribute("c", [huge, huge])
            span.add_event("e", {"d": huge})
        (record,) = await captured.flush()
    assert record.attributes["a"] == record.attributes["b"] == f"<int of {huge.bit_length()} bits>"
    assert record.attributes["c"] == (record.attributes["a"], record.attributes["a"])
    assert record.events[0].attributes["d"] == record.attributes["a"]
    assert coerce_big(2**100) == str(2**100)


def coerce_big(value: int) -> object:
    from spanlane._attributes import coerce_value

    return coerce_value(value)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit], ids=str)
async def test_attributes_and_links_whose_dunders_raise_never_raise_into_the_caller(
    error: type[BaseException],
) -> None:
    hostile = Raises(error)
    async with capture_spans() as captured:
        tracer = captured.tracer
        with tracer.span("x", attributes=hostile, links=hostile) as span:  # type: ignore[arg-type]
            span.set_attributes(hostile)  # type: ignore[arg-type]
            span.add_event("e", hostile)  # type: ignore[arg-type]
            span.set_attribute("v", hostile)
            span.record_exception(ValueError("v"), attributes=hostile)  # type: ignore[arg-type]
        (record,) = await captured.flush()
    assert record.dropped_attributes >= 2
    assert record.dropped_links == 1
    assert record.attributes["v"] == "<unrepresentable Raises>"


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit], ids=str)
async def test_a_value_whose_repr_raises_a_base_exception_is_kept_as_a_description(
    error: type[BaseException],
) -> None:
    async with capture_spans() as captured:
        with captured.tracer.span("x", attributes={"a": BaseRepr(error)}) as span:
            span.set_attribute("b", [BaseRepr(error)])
        (record,) = await captured.flush()
    assert record.attributes["a"] == "<unrepresentable BaseRepr>"
    assert record.attributes["b"] == ("<unrepresentable BaseRepr>",)


@pytest.mark.parametrize("cls", [WeirdModule, NoneModule], ids=["int-module", "none-module"])
async def test_an_exception_class_with_a_strange_module_does_not_replace_the_body_exception(
    cls: type[Exception],
) -> None:
    error = cls("odd")
    async with capture_spans() as captured:
        with pytest.raises(cls) as caught, captured.tracer.span("x"):
            raise error
        (record,) = await captured.flush()
    assert caught.value is error
    assert record.events[0].attributes["exception.type"] == cls.__qualname__
    assert record.status.code is StatusCode.ERROR


class Unprintable(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


async def test_an_exception_whose_str_raises_a_base_exception_is_still_recorded() -> None:
    error = Unprintable()
    async with capture_spans() as captured:
        with pytest.raises(Unprintable) as caught, captured.tracer.span("x"):
            raise error
        (record,) = await captured.flush()
    assert caught.value is error
    assert record.events[0].attributes["exception.message"] == "<unprintable Unprintable>"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("v"), "ValueError"),
        (json.JSONDecodeError("m", "d", 0), "json.decoder.JSONDecodeError"),
        (anyio.BrokenResourceError(), "anyio.BrokenResourceError"),
    ],
    ids=["builtin", "module", "package"],
)
async def test_exception_type_is_written_as_the_sdk_writes_it(
    exc: BaseException, expected: str
) -> None:
    async with capture_spans() as captured:
        with captured.tracer.span("x") as span:
            span.record_exception(exc)
        (record,) = await captured.flush()
    assert record.events[0].attributes["exception.type"] == expected


async def test_exception_type_from_main_has_no_prefix() -> None:
    from spanlane._safe import exception_type

    cls = type("Local", (Exception,), {"__module__": "__main__"})
    assert exception_type(cls()) == "Local"


async def test_a_two_million_element_list_costs_a_bounded_repr() -> None:
    """A huge mixed list is abbreviated before it is formatted, not formatted then cut."""
    huge: list[object] = [1, "a"] * 1_000_000
    async with capture_spans() as captured:
        with captured.tracer.span("x", attributes={"huge": huge}):
            pass
        (record,) = await captured.flush()
    value = record.attributes["huge"]
    assert isinstance(value, str)
    assert value.startswith("[1, 'a', 1, 'a'")
    assert len(value) <= 1024


async def test_a_huge_homogeneous_list_is_kept_whole() -> None:
    numbers = list(range(100_000))
    record, _ = await _one(attributes={"n": numbers})
    assert record.attributes["n"] == tuple(numbers)


async def test_only_the_documented_type_errors_raise() -> None:
    async with capture_spans() as captured:
        with pytest.raises(TypeError, match="name"):
            captured.tracer.span(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="parent"):
            captured.tracer.span("x", parent="not a parent")  # type: ignore[arg-type]


async def test_ended_span_setters_and_a_non_exception_record_exception_never_raise() -> None:
    async with capture_spans() as captured:
        span = captured.tracer.start_span("x")
        span.record_exception("not an exception")  # type: ignore[arg-type]
        span.add_event(object(), {1: 2}, time_ns="now")  # type: ignore[arg-type,dict-item]
        span.end()
        span.set_attribute("late", 1)
        span.set_status(StatusCode.ERROR, object())  # type: ignore[arg-type]
        span.update_name(3)  # type: ignore[arg-type]
        span.end(end_time_ns="later")  # type: ignore[arg-type]
        (record,) = await captured.flush()
    assert record.events[0].name.startswith("<object object")
    assert "late" not in record.attributes
    # record_exception with a str, and add_event's time_ns: two ignored calls.
    assert captured.tracer.stats().ignored_calls == 2


# --- 6. bad timestamps and ids are fixed when the span is made, not at export -----------------


@pytest.mark.parametrize(
    "value", [-1, -(2**70), 2**64, 2**200], ids=["-1", "-2^70", "2^64", "2^200"]
)
async def test_out_of_range_timestamps_are_clamped_and_counted(value: int) -> None:
    async with capture_spans() as captured:
        span = captured.tracer.start_span("x", start_time_ns=value)
        span.add_event("e", time_ns=value)
        span.end(end_time_ns=value)
        (record,) = await captured.flush()
    expected = 0 if value < 0 else MAX_TIME_NS
    assert record.start_time_ns == record.end_time_ns == record.events[0].time_ns == expected
    assert captured.tracer.stats().ignored_calls == 3


@pytest.mark.parametrize(
    "context",
    [
        SpanContext(2**128, 1),
        SpanContext(1, 2**64),
        SpanContext(-1, 5),
        SpanContext(0, 5),
        SpanContext("1", 5),  # type: ignore[arg-type]
    ],
    ids=["trace-id-too-big", "span-id-too-big", "negative", "zero", "str"],
)
async def test_an_invalid_parent_starts_a_new_trace_and_an_invalid_link_is_dropped(
    context: SpanContext,
) -> None:
    assert not context.is_valid
    record, _ = await _one(parent=context, links=[context, Link(context)])
    assert record.parent_span_id is None
    assert 0 < record.trace_id < 2**128
    assert record.links == ()
    assert record.dropped_links == 2


async def test_a_link_with_odd_flags_and_state_is_cleaned_up() -> None:
    odd = SpanContext(5, 6, trace_flags=999, trace_state=7, is_remote="yes")  # type: ignore[arg-type]
    record, _ = await _one(links=[odd])
    (link,) = record.links
    assert link.context == SpanContext(5, 6, 999 & 0xFF, "", False)


async def _poisoned_records() -> list[SpanRecord]:
    """Records built by a tracer from hostile input: every one must encode."""
    async with capture_spans() as captured:
        tracer = captured.tracer
        with tracer.span("ok-1"):
            pass
        tracer.start_span("bad times", start_time_ns=-5).end(end_time_ns=2**80)
        with tracer.span("bad \ud800 name", attributes={"k\udfff": "v\ud83d"}):
            pass
        bad_parent = SpanContext(2**130, 2**70)
        with tracer.span("bad parent", parent=bad_parent, links=[SpanContext(-1, -1)]):
            pass
        with tracer.span("ok-2"):
            pass
        return await captured.flush()


@pytest.mark.parametrize("codec", [PROTOBUF, JSON], ids=["protobuf", "json"])
async def test_otlp_encodes_every_record_made_from_hostile_input(codec: Any) -> None:
    records = await _poisoned_records()
    encoded = await encode_batch(records, codec, 1 << 20, gzip=False)
    assert encoded.unencodable == 0
    (part,) = encoded.parts
    assert part.spans == len(records) == 5
    if codec is PROTOBUF:
        request = ExportTraceServiceRequest()
        request.ParseFromString(part.body)
        spans = request.resource_spans[0].scope_spans[0].spans
        assert spans[2].name == "bad ? name"
        assert spans[1].start_time_unix_nano == 0
        assert spans[1].end_time_unix_nano == MAX_TIME_NS
    else:
        assert isinstance(part.body, bytes)
        json.loads(part.body)


async def test_a_hand_built_record_the_otlp_encoder_cannot_write_is_left_out_alone() -> None:
    import attrs

    good = await _poisoned_records()
    bad = attrs.evolve(good[0], name=b"bytes, not str")  # type: ignore[arg-type]
    encoded = await encode_batch([good[1], bad, good[4]], PROTOBUF, 1 << 20, gzip=False)
    assert encoded.unencodable == 1
    assert sum(part.spans for part in encoded.parts) == 2


async def test_json_lines_write_every_record_made_from_hostile_input(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with open_tracer(JSONLinesExporter(path)) as tracer:
        with tracer.span("bad \ud800 name", attributes={"k": "v\udfff"}):
            pass
        with tracer.span("good"):
            pass
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [line["name"] for line in lines] == ["bad \ufffd name", "good"]
    assert tracer.stats().lanes[0].exported == 2


async def test_the_console_prints_a_1200_deep_parent_chain() -> None:
    out = io.StringIO()
    async with open_tracer(ConsoleExporter(out), max_batch_size=2048, buffer_size=4096) as tracer:
        spans = [tracer.start_span("s0")]
        for number in range(1, 1200):
            spans.append(tracer.start_span(f"s{number}", parent=spans[-1]))
        for span in reversed(spans):
            span.end()
    lane = tracer.stats().lanes[0]
    assert lane.exported == 1200
    assert lane.dropped == {}
    assert out.getvalue().count("s1199") == 1
    assert sys.getrecursionlimit() // 2 < 1200  # deep enough that recursion would have failed


async def test_a_non_recording_span_carries_its_context_and_can_be_a_parent() -> None:
    remote = SpanContext(0xABC, 0xDEF, trace_flags=1, is_remote=True)
    parent = NonRecordingSpan(remote)
    async with capture_spans() as captured:
        with parent:
            assert spanlane.current_span() is parent
            with captured.tracer.span("child"):
                pass
        with captured.tracer.span("explicit", parent=parent):
            pass
        child, explicit = await captured.flush()
    for record in (child, explicit):
        assert record.trace_id == 0xABC
        assert record.parent_span_id == 0xDEF
        assert record.parent_is_remote


async def test_span_context_validity_and_sampling() -> None:
    assert SpanContext(1, 1).is_valid
    assert SpanContext(1, 1).is_sampled
    assert not SpanContext(1, 1, trace_flags=0).is_sampled
    assert not SpanContext(1, 1, trace_flags="1").is_sampled  # type: ignore[arg-type]
    assert not SpanContext(0, 1).is_valid
    assert not SpanContext(1, 0).is_valid
    assert not SpanContext(2**128, 1).is_valid
    assert not SpanContext(1, 2**64).is_valid
    assert not SpanContext(True, 1).is_valid


@pytest.mark.parametrize("flags", [0x00, 0x01, 0x03], ids=["00", "01", "03"])
async def test_records_carry_trace_flags_and_encoders_write_them(flags: int) -> None:
    parent = SpanContext(0x1234, 0x5678, trace_flags=flags, is_remote=True)
    # ALWAYS_ON records the child of an unsampled parent too (the default would not).
    async with capture_spans(sampler=ALWAYS_ON) as captured:
        with captured.tracer.span("x", parent=parent):
            pass
        (record,) = await captured.flush()
    assert record.trace_flags == flags | 0x01  # recorded, so sampled
    assert record.context.trace_flags == record.trace_flags
    encoded = await encode_batch([record], PROTOBUF, 1 << 20, gzip=False)
    request = ExportTraceServiceRequest()
    request.ParseFromString(encoded.parts[0].body)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.flags & 0xFF == record.trace_flags
    assert span.flags & 0x300 == 0x300  # has-is-remote, is-remote
    encoded = await encode_batch([record], JSON, 1 << 20, gzip=False)
    assert isinstance(encoded.parts[0].body, bytes)
    body = json.loads(encoded.parts[0].body)
    assert body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["flags"] & 0xFF == flags | 1


async def test_memory_exporter_sees_nan_and_huge_floats_unchanged() -> None:
    record, _ = await _one(attributes={"nan": math.nan, "inf": math.inf})
    assert math.isnan(record.attributes["nan"])  # type: ignore[arg-type]
    assert record.attributes["inf"] == math.inf


async def test_a_tracer_refuses_a_scope_with_a_name_that_is_not_a_str() -> None:
    with pytest.raises(TypeError, match="scope"):
        open_tracer(MemoryExporter(), scope=spanlane.InstrumentationScope(name=3))  # type: ignore[arg-type]


async def test_dropped_reasons_do_not_include_unencodable_for_hostile_input(tmp_path: Path) -> None:
    async with open_tracer(JSONLinesExporter(tmp_path / "x.jsonl")) as tracer:
        with tracer.span("x", attributes={"a": Raises()}):
            pass
    assert DropReason.UNENCODABLE not in tracer.stats().lanes[0].dropped
