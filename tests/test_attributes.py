"""Attribute coercion to OTLP-legal values, and the span limits that bound what a span carries."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any
from unittest import mock

import pytest

from spanlane import Link, SpanContext, SpanLimits, SpanRecord
from spanlane._attributes import ANY_VALUE_ITEMS, REPR_LIMIT, coerce_attributes, coerce_value
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio


class _Color(enum.IntEnum):
    RED = 1


class _Text(str):
    __slots__ = ()


class _HostileRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class _LongRepr:
    def __repr__(self) -> str:
        return "x" * (REPR_LIMIT * 2)


class _HostileText(str):
    """A str subclass whose str() and repr() both raise."""

    __slots__ = ()

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _HostileInt(int):
    """An int subclass whose conversions raise."""

    def __int__(self) -> int:
        raise RuntimeError("no int")

    def __index__(self) -> int:
        raise RuntimeError("no index")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _HostileFloat(float):
    """A float subclass whose conversion raises."""

    def __float__(self) -> float:
        raise RuntimeError("no float")


# --- coerce_value --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("text", "text", id="str"),
        pytest.param("", "", id="empty-str"),
        pytest.param(True, True, id="bool"),
        pytest.param(0, 0, id="int"),
        pytest.param(-(2**63), -(2**63), id="int64-min"),
        pytest.param(2**63 - 1, 2**63 - 1, id="int64-max"),
        pytest.param(1.5, 1.5, id="float"),
        pytest.param(("a", "b"), ("a", "b"), id="tuple-of-str"),
        pytest.param([1, 2], (1, 2), id="list-of-int"),
        pytest.param([True, False], (True, False), id="list-of-bool"),
        pytest.param([1.0, 2.5], (1.0, 2.5), id="list-of-float"),
        pytest.param([], (), id="empty-list"),
        pytest.param(_Color.RED, 1, id="int-enum"),
        pytest.param(_Text("sub"), "sub", id="str-subclass"),
    ],
)
async def test_legal_values_are_kept_with_their_type(value: object, expected: object) -> None:
    coerced = coerce_value(value)
    assert coerced == expected
    assert type(coerced) is type(expected)
    if isinstance(coerced, tuple):
        assert isinstance(expected, tuple)
        assert [type(item) for item in coerced] == [type(item) for item in expected]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(2**63, "9223372036854775808", id="just-over-int64"),
        pytest.param(-(2**63) - 1, "-9223372036854775809", id="just-under-int64"),
        pytest.param(10**30, "1" + "0" * 30, id="huge"),
    ],
)
async def test_integers_outside_int64_become_strings(value: int, expected: str) -> None:
    assert coerce_value(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param([1, "a"], (1, "a"), id="mixed-int-str"),
        pytest.param([1, True], (1, True), id="mixed-int-bool"),
        pytest.param([[1], [2]], ((1,), (2,)), id="nested"),
        pytest.param((1, None), (1, None), id="with-none"),
        pytest.param({"a": 1, "b": [b"x", None]}, {"a": 1, "b": (b"x", None)}, id="map"),
        pytest.param(b"bytes", b"bytes", id="bytes"),
        pytest.param(bytearray(b"ba"), b"ba", id="bytearray"),
        pytest.param([{"k": {"deep": (1.5, "s")}}], ({"k": {"deep": (1.5, "s")}},), id="deep"),
    ],
)
async def test_any_values_are_kept_as_the_sdk_keeps_them(value: object, expected: object) -> None:
    coerced = coerce_value(value)
    assert coerced == expected
    if isinstance(expected, dict):
        assert isinstance(coerced, MappingProxyType)


async def test_a_map_drops_keys_that_are_not_strings() -> None:
    assert coerce_value({"a": 1, 2: "b", "": 3}) == {"a": 1}


async def test_a_mixed_value_over_the_item_budget_becomes_its_repr() -> None:
    big = [1, "a"] * (ANY_VALUE_ITEMS // 2 + 1)
    coerced = coerce_value(big)
    assert isinstance(coerced, str)
    assert coerced.startswith("[1, 'a', 1")
    assert coerce_value([1, "a"] * (ANY_VALUE_ITEMS // 4)) == tuple(
        [1, "a"] * (ANY_VALUE_ITEMS // 4)
    )


async def test_a_self_containing_list_becomes_its_repr() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    assert coerce_value(loop) == "[1, [1, [1, [1, [...]]]]]"  # reprlib stops at 4 levels


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
    ],
)
async def test_illegal_values_become_their_repr(value: object) -> None:
    assert coerce_value(value) == repr(value)


async def test_long_repr_is_truncated() -> None:
    assert coerce_value(_LongRepr()) == "x" * REPR_LIMIT
    assert coerce_value(_LongRepr(), max_length=5) == "xxxxx"


async def test_hostile_repr_never_raises() -> None:
    assert coerce_value(_HostileRepr()) == "<unrepresentable _HostileRepr>"
    assert coerce_value([_HostileRepr()]) == ("<unrepresentable _HostileRepr>",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(_HostileText("abc"), "abc", id="str-subclass"),
        pytest.param(_HostileInt(5), 5, id="int-subclass"),
        pytest.param(_HostileFloat(2.5), 2.5, id="float-subclass"),
        pytest.param([_HostileInt(1), _HostileInt(2)], (1, 2), id="in-a-list"),
    ],
)
async def test_hostile_subclasses_of_legal_types_are_coerced_without_raising(
    value: object, expected: object
) -> None:
    coerced = coerce_value(value)
    assert coerced == expected
    assert type(coerced) is type(expected)


@pytest.mark.parametrize("spec", [str, int, float, bool, list])
async def test_objects_only_claiming_a_legal_class_become_their_repr(spec: type) -> None:
    # A Mock(spec=str) passes isinstance(value, str) without being a str.
    value = mock.Mock(spec=spec)
    assert coerce_value(value) == repr(value)
    assert coerce_value([value]) == (repr(value),)


async def test_none_coerces_to_none() -> None:
    assert coerce_value(None) is None


async def test_max_length_truncates_strings_also_inside_sequences() -> None:
    assert coerce_value("abcdef", max_length=3) == "abc"
    assert coerce_value(["abcdef", "xy"], max_length=3) == ("abc", "xy")
    assert coerce_value(2**70, max_length=4) == "1180"


# --- coerce_attributes ---------------------------------------------------------------------------


async def test_none_values_and_bad_keys_are_dropped_and_counted() -> None:
    attributes: dict[object, object] = {
        "ok": 1,
        "none": None,
        5: "int key",
        None: "none key",
        "": "empty key",
        ("t",): "tuple key",
    }
    kept, dropped = coerce_attributes(attributes, max_count=128, max_length=None)
    assert kept == {"ok": 1}
    assert dropped == 5


async def test_count_limit_drops_new_keys_but_applies_updates() -> None:
    pairs = [("a", 1), ("b", 2), ("c", 3), ("a", 10)]
    kept, dropped = coerce_attributes(pairs, max_count=2, max_length=None)
    assert kept == {"a": 10, "b": 2}
    assert dropped == 1


async def test_unusable_attribute_containers_count_as_drops() -> None:
    class _Exploding:
        def __iter__(self) -> Iterator[tuple[str, int]]:
            raise RuntimeError("no iteration")

        def __bool__(self) -> bool:
            return True

    kept, dropped = coerce_attributes(_Exploding(), max_count=128, max_length=None)
    assert (kept, dropped) == ({}, 1)
    pairs: list[Any] = [("a", 1), "not-a-pair", ("b",)]
    kept, dropped = coerce_attributes(pairs, 128, None)
    assert (kept, dropped) == ({"a": 1}, 2)
    assert coerce_attributes(None, 128, None) == ({}, 0)


# --- SpanLimits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "max_attributes",
        "max_events",
        "max_links",
        "max_attribute_length",
        "max_event_attributes",
        "max_link_attributes",
    ],
)
@pytest.mark.parametrize("value", [-1, 1.5, "3", True])
async def test_span_limits_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SpanLimits(**{field: value})  # type: ignore[arg-type]


async def test_max_attribute_length_must_keep_at_least_one_character() -> None:
    with pytest.raises(ValueError, match="max_attribute_length"):
        SpanLimits(max_attribute_length=0)
    assert SpanLimits(max_attribute_length=1).max_attribute_length == 1


async def test_span_limit_defaults() -> None:
    limits = SpanLimits()
    assert (limits.max_attributes, limits.max_events, limits.max_links) == (128, 128, 128)
    assert limits.max_attribute_length is None


async def _one_span(limits: SpanLimits, **span_options: object) -> SpanRecord:
    async with capture_spans(limits=limits) as captured:
        with captured.tracer.span("limited", **span_options) as span:  # type: ignore[arg-type]
            span.set_attribute("late", "value")
        (record,) = await captured.flush()
    return record


async def test_span_coerces_values_and_counts_dropped_attributes() -> None:
    async with capture_spans() as captured:
        with captured.tracer.span("s", attributes={"initial": [1, 2], "bad": None}) as span:
            span.set_attribute("big", 2**64)
            span.set_attribute("mixed", [1, "a"])
            span.set_attribute("hostile", _HostileRepr())
            span.set_attribute("none", None)
            span.set_attribute(3, "int key")  # type: ignore[arg-type]
            span.set_attribute("", "empty key")
            span.set_attributes({"x": 1.5, "y": None})
        (record,) = await captured.flush()
    assert dict(record.attributes) == {
        "initial": (1, 2),
        "big": str(2**64),
        "mixed": (1, "a"),
        "hostile": "<unrepresentable _HostileRepr>",
        "x": 1.5,
    }
    assert record.dropped_attributes == 5


async def test_max_attributes_is_enforced_and_counted() -> None:
    async with capture_spans(limits=SpanLimits(max_attributes=2)) as captured:
        with captured.tracer.span("s", attributes={"a": 1, "b": 2, "c": 3}) as span:
            span.set_attribute("a", 10)  # an update still applies
            span.set_attribute("d", 4)
        (record,) = await captured.flush()
    assert dict(record.attributes) == {"a": 10, "b": 2}
    assert record.dropped_attributes == 2


async def test_max_events_is_enforced_and_counted() -> None:
    async with capture_spans(limits=SpanLimits(max_events=2)) as captured:
        with captured.tracer.span("s") as span:
            for index in range(5):
                span.add_event(f"e{index}")
        (record,) = await captured.flush()
    assert [event.name for event in record.events] == ["e0", "e1"]
    assert record.dropped_events == 3


async def test_max_event_attributes_is_enforced_and_counted_on_the_event() -> None:
    async with capture_spans(limits=SpanLimits(max_event_attributes=1)) as captured:
        with captured.tracer.span("s") as span:
            span.add_event("e", {"a": 1, "b": 2, "c": None})
        (record,) = await captured.flush()
    (event,) = record.events
    assert dict(event.attributes) == {"a": 1}
    assert event.dropped_attributes == 2


async def test_max_links_and_link_attributes_are_enforced_and_counted() -> None:
    limits = SpanLimits(max_links=2, max_link_attributes=1)
    links = [Link(SpanContext(1, index + 1), {"a": 1, "b": 2}) for index in range(3)]
    async with capture_spans(limits=limits) as captured:
        with captured.tracer.span("s", links=links):
            pass
        (record,) = await captured.flush()
    assert [link.context.span_id for link in record.links] == [1, 2]
    assert record.dropped_links == 1
    assert all(dict(link.attributes) == {"a": 1} for link in record.links)
    assert all(link.dropped_attributes == 1 for link in record.links)


async def test_max_attribute_length_truncates_every_string() -> None:
    limits = SpanLimits(max_attribute_length=3)
    async with capture_spans(limits=limits) as captured:
        with captured.tracer.span("s", attributes={"initial": "abcdef"}) as span:
            span.set_attribute("seq", ["abcdef", "x"])
            span.set_attribute("map", {"k": "value"})
            span.set_attribute("repr", {1, 2})
            span.add_event("e", {"event": "abcdef"})
        (record,) = await captured.flush()
    assert dict(record.attributes) == {
        "initial": "abc",
        "seq": ("abc", "x"),
        "map": {"k": "val"},
        "repr": "{1,",
    }
    assert dict(record.events[0].attributes) == {"event": "abc"}
    assert record.dropped_attributes == 0  # truncation is not a drop


async def test_zero_limits_drop_everything_and_count_it() -> None:
    limits = SpanLimits(max_attributes=0, max_events=0, max_links=0)
    async with capture_spans(limits=limits) as captured:
        with captured.tracer.span("s", attributes={"a": 1}, links=[SpanContext(1, 2)]) as span:
            span.set_attribute("b", 2)
            span.add_event("e")
        (record,) = await captured.flush()
    assert dict(record.attributes) == {}
    assert (record.events, record.links) == ((), ())
    assert (record.dropped_attributes, record.dropped_events, record.dropped_links) == (2, 1, 1)
