"""Attribute coercion to OTLP-legal values, and the limits that bound a span's size.

Bad input never raises here: a value OTLP cannot carry becomes a truncated ``repr``, and a key or
value that cannot be kept at all (a non-string or empty key, ``None``) is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._records import EMPTY_ATTRIBUTES, Attributes, AttributeValue
from ._runtime import is_cancellation
from ._safe import REPR_LIMIT, safe_repr

__all__ = ["REPR_LIMIT", "SpanLimits", "coerce_attributes", "coerce_value", "freeze"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: Integers beyond 64 bits keep their decimal digits up to this many bits (about 1000 digits);
#: larger ones are described by their size. Python refuses str() of an int over 4300 digits,
#: and converting one takes time quadratic in its length.
_INT_DIGITS_BITS = 3322
_SCALARS = (str, bool, int, float)


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int or None, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative int, got {value!r}")


@attrs.frozen
class SpanLimits:
    """Bounds on what one span may carry; what goes over is dropped and counted on the record.

    Attributes:
        max_attributes: attributes per span; new keys past it are dropped (updates still apply).
        max_events: events per span; later events are dropped.
        max_links: links per span; later links are dropped.
        max_attribute_length: longest string value (also each string in a sequence); longer
            strings are truncated, which is not counted as a drop. None means no limit.
        max_event_attributes: attributes per event.
        max_link_attributes: attributes per link.
    """

    max_attributes: int = attrs.field(default=128, validator=_non_negative)
    max_events: int = attrs.field(default=128, validator=_non_negative)
    max_links: int = attrs.field(default=128, validator=_non_negative)
    max_attribute_length: int | None = attrs.field(default=None, validator=_positive_or_none)
    max_event_attributes: int = attrs.field(default=128, validator=_non_negative)
    max_link_attributes: int = attrs.field(default=128, validator=_non_negative)


def _coerce_scalar(value: object, max_length: int | None) -> AttributeValue | None:
    """Return a legal scalar, or None if ``value`` is not one of OTLP's scalar types."""
    # The real type decides, not isinstance(): an object may claim another __class__ (a
    # Mock(spec=str) does), and the unbound str/int/float methods below would then raise.
    kind = type(value)
    if issubclass(kind, str):
        text = str.__str__(value)
        return text if max_length is None else text[:max_length]
    if kind is bool:
        return value  # type: ignore[return-value]
    if issubclass(kind, int):
        # int.__int__, not int(): a subclass may override __int__ to raise or lie, and coercion
        # must never raise. The same goes for float below.
        number = int.__int__(value)  # type: ignore[arg-type]
        # OTLP integers are 64-bit; a larger one keeps its digits as a string.
        if _INT64_MIN <= number <= _INT64_MAX:
            return number
        text = _big_int_text(number)
        return text if max_length is None else text[:max_length]
    if issubclass(kind, float):
        return float.__float__(value)  # type: ignore[arg-type]
    return None


def _big_int_text(number: int) -> str:
    bits = number.bit_length()
    if bits <= _INT_DIGITS_BITS:
        return str(number)
    return f"<int of {bits} bits>"


def coerce_value(value: object, max_length: int | None = None) -> AttributeValue | None:
    """Coerce ``value`` to an OTLP-legal attribute value.

    Args:
        value: any object.
        max_length: the longest string kept, or None for no limit.

    Returns:
        ``str``, ``bool``, ``int``, ``float``, a homogeneous tuple of one of them, or a truncated
        ``repr`` string for anything else. None when the value is None (the caller drops it).
    """
    if value is None:
        return None
    # Fast path for the common exact types.
    kind = type(value)
    if kind is str:
        return value if max_length is None else value[:max_length]  # type: ignore[index,return-value]
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            return value  # type: ignore[return-value]
    elif kind is bool or kind is float:
        return value  # type: ignore[return-value]
    limit = REPR_LIMIT if max_length is None else min(max_length, REPR_LIMIT)
    try:
        scalar = _coerce_scalar(value, max_length)
        if scalar is not None:
            return scalar
        if issubclass(kind, (list, tuple)):
            return _coerce_sequence(value, max_length, limit)  # type: ignore[arg-type]
    except BaseException as exc:  # a hostile subclass; anything but cancellation is bad input
        if is_cancellation(exc):
            raise
    return safe_repr(value, limit)


def _coerce_sequence(
    value: list[Any] | tuple[Any, ...], max_length: int | None, limit: int
) -> AttributeValue:
    # The element types are gathered at C speed (about 20 ns an element): a homogeneous list of
    # millions of ints costs milliseconds, not the seconds an element-by-element check took.
    kinds = set(map(type, value))
    if not kinds:
        return ()
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is str:
            if max_length is None:
                return tuple(value)
            return tuple(text[:max_length] for text in value)
        if kind is bool or kind is float:
            return tuple(value)
        if kind is int:
            if min(value) >= _INT64_MIN and max(value) <= _INT64_MAX:
                return tuple(value)
        elif issubclass(kind, _SCALARS):
            # Subclasses (IntEnum, str subclasses) are stored as their base type.
            items = tuple(_coerce_scalar(item, max_length) for item in value)
            if len({type(item) for item in items}) == 1:
                return items  # type: ignore[return-value]
    # Mixed or nested sequences are not legal OTLP arrays: keep a short, readable trace of them.
    return safe_repr(value, limit)


def coerce_attributes(
    attributes: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None,
    max_count: int,
    max_length: int | None,
) -> tuple[dict[str, AttributeValue], int]:
    """Coerce a whole mapping; return the kept attributes and how many were dropped.

    Never raises (but for cancellation): a mapping whose truth value, length or iteration
    fails counts what could not be read as one dropped attribute, and keeps what was read
    before the failure.
    """
    kept: dict[str, AttributeValue] = {}
    dropped = 0
    if attributes is None:
        return kept, dropped
    try:
        items = attributes.items() if isinstance(attributes, Mapping) else attributes
        for item in items:
            if type(item) is tuple and len(item) == 2:
                key, value = item
            else:
                try:
                    key, value = item
                except Exception:
                    dropped += 1
                    continue
            if type(key) is not str or not key:
                dropped += 1
                continue
            if key not in kept and len(kept) >= max_count:
                dropped += 1
                continue
            coerced = coerce_value(value, max_length)
            if coerced is None:
                dropped += 1
                continue
            kept[key] = coerced
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        dropped += 1
    return kept, dropped


def freeze(attributes: dict[str, AttributeValue] | None) -> Attributes:
    """Wrap a dict read-only; empty and missing dicts share one empty mapping."""
    if not attributes:
        return EMPTY_ATTRIBUTES
    return MappingProxyType(attributes)
