"""Queued records in a form the garbage collector does not look at, and their size estimates.

A :class:`~spanlane.SpanRecord` is an attrs slotted instance: the cyclic garbage collector tracks
it, and every full collection visits it and what it refers to. With 100,000 records queued (an
outage, a burst) that made a full collection take 30 to 120 ms instead of 3 to 5. A lane
therefore *packs* records that have waited in its queue beyond a threshold into exact tuples of
atomic values (a ``bytes`` of the ids, times and small fields; the attribute keys and values as
two tuples): CPython stops tracking a tuple whose items are all untracked at the first collection
that sees it, so packed records cost a collection nothing. A batch is unpacked into ordinary
``SpanRecord`` objects just before it is exported (see ``docs/design.md``, "Queued records are
packed").

Packing is exact: a record that cannot be packed faithfully (fields of unexpected types, which
only a hand-built or processor-evolved record can carry, or more distinct resources and scopes
than a table holds) stays a ``SpanRecord`` in the queue.

:func:`estimate_size` is the lane's cheap, encoding-free size estimate for ``max_buffer_bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ._records import (
    EMPTY_ATTRIBUTES,
    UNSET_STATUS,
    Event,
    Link,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
    _RecordBuilder,
)

__all__ = ["PackTable", "estimate_size", "item_key", "pack", "unpack"]

#: trace id (high, low), span id, parent span id, start, end: six unsigned 64-bit fields; kind,
#: trace flags, presence bits, resource and scope indexes; the three drop counters.
_FIXED = struct.Struct("<QQQQQQBBBBBIII")
_SPAN_ID = struct.Struct("<Q")
_SPAN_ID_OFFSET = 16
_BITS_OFFSET = 50
_HAS_PARENT = 1
_HAS_END = 2
_REMOTE_PARENT = 4
_LOW64 = (1 << 64) - 1
_KIND_VALUE = {kind: kind.value for kind in SpanKind}
_KINDS = {kind.value: kind for kind in SpanKind}
_STATUS_CODES = {code.value: code for code in StatusCode}
#: Distinct resources and scopes one table refers to by index (a tracer has one of each).
MAX_SHARED = 64
#: Distinct attribute key tuples kept for sharing between packed records.
MAX_KEY_TUPLES = 1024


class PackTable:
    """What packed records of one lane share: resources and scopes by index, key tuples."""

    __slots__ = ("_by_id", "_keys", "objects")

    def __init__(self) -> None:
        self.objects: list[object] = []
        self._by_id: dict[int, int] = {}
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def index(self, value: object) -> int | None:
        """The index of ``value`` (kept alive by the table), or None when the table is full."""
        found = self._by_id.get(id(value))
        if found is not None:
            return found
        if len(self.objects) >= MAX_SHARED:
            return None
        self._by_id[id(value)] = position = len(self.objects)
        self.objects.append(value)
        return position

    def keys(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        """One shared tuple per distinct attribute key sequence (spans repeat their keys)."""
        shared = self._keys.get(keys)
        if shared is not None:
            return shared
        if len(self._keys) >= MAX_KEY_TUPLES:
            self._keys.clear()
        self._keys[keys] = keys
        return keys


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value <= _LOW64


def _pack_mapping(
    attributes: object, table: PackTable
) -> tuple[tuple[str, ...], tuple[object, ...]] | None:
    if attributes is EMPTY_ATTRIBUTES:
        return (), ()
    if type(attributes) is not MappingProxyType and type(attributes) is not dict:
        return None
    mapping: Mapping[str, object] = attributes
    if not mapping:
        return (), ()
    return table.keys(tuple(mapping)), tuple(mapping.values())


def _pack_extras(record: SpanRecord, table: PackTable) -> tuple[Any, ...] | bool | None:
    """Events, links, status and trace state, packed; None when all are defaults; False when
    one of them cannot be packed faithfully."""
    events = record.events
    links = record.links
    status = record.status
    trace_state = record.trace_state
    if not events and not links and status is UNSET_STATUS and trace_state == "":
        return None
    if type(events) is not tuple or type(links) is not tuple or type(trace_state) is not str:
        return False
    packed_events = []
    for event in events:
        if (
            type(event) is not Event
            or type(event.name) is not str
            or type(event.time_ns) is not int
        ):
            return False
        mapping = _pack_mapping(event.attributes, table)
        if mapping is None or type(event.dropped_attributes) is not int:
            return False
        packed_events.append((event.name, event.time_ns, *mapping, event.dropped_attributes))
    packed_links = []
    for link in links:
        context = link.context
        if type(link) is not Link or type(context) is not SpanContext:
            return False
        mapping = _pack_mapping(link.attributes, table)
        if mapping is None or type(link.dropped_attributes) is not int:
            return False
        packed_links.append(
            (
                context.trace_id,
                context.span_id,
                context.trace_flags,
                context.trace_state,
                context.is_remote,
                *mapping,
                link.dropped_attributes,
            )
        )
    if type(status) is not Status or type(status.code) is not StatusCode:
        return False
    description = status.description
    if description is not None and type(description) is not str:
        return False
    return (
        tuple(packed_events),
        tuple(packed_links),
        status.code.value,
        description,
        trace_state,
    )


def pack(record: SpanRecord, table: PackTable) -> tuple[Any, ...] | SpanRecord:
    """``record`` as an exact tuple of untracked values, or the record itself when it cannot be
    packed faithfully."""
    try:
        trace_id = record.trace_id
        parent = record.parent_span_id
        end = record.end_time_ns
        kind = _KIND_VALUE.get(record.kind)
        flags = record.trace_flags
        remote = record.parent_is_remote
        if (
            type(record) is not SpanRecord
            or type(record.name) is not str
            or type(trace_id) is not int
            or not 0 <= trace_id < (1 << 128)
            or not _is_u64(record.span_id)
            or not (parent is None or _is_u64(parent))
            or not _is_u64(record.start_time_ns)
            or not (end is None or _is_u64(end))
            or kind is None
            or type(record.kind) is not SpanKind
            or type(flags) is not int
            or not 0 <= flags <= 0xFF
            or type(remote) is not bool
            or type(record.dropped_attributes) is not int
            or type(record.dropped_events) is not int
            or type(record.dropped_links) is not int
        ):
            return record
        resource = table.index(record.resource)
        scope = table.index(record.scope)
        if resource is None or scope is None:
            return record
        bits = (
            (0 if parent is None else _HAS_PARENT)
            | (0 if end is None else _HAS_END)
            | (_REMOTE_PARENT if remote else 0)
        )
        fixed = _FIXED.pack(
            trace_id >> 64,
            trace_id & _LOW64,
            record.span_id,
            parent or 0,
            record.start_time_ns,
            end or 0,
            kind,
            flags,
            bits,
            resource,
            scope,
            record.dropped_attributes,
            record.dropped_events,
            record.dropped_links,
        )
        mapping = _pack_mapping(record.attributes, table)
        if mapping is None:
            return record
        extras = _pack_extras(record, table)
        if extras is False:
            return record
    except (struct.error, TypeError, ValueError, OverflowError, AttributeError):
        return record
    if extras is not None:
        return (record.name, fixed, *mapping, extras)
    if mapping[0]:
        return (record.name, fixed, *mapping)
    return (record.name, fixed)


def _mapping(keys: tuple[str, ...], values: tuple[object, ...]) -> Any:
    return MappingProxyType(dict(zip(keys, values, strict=True))) if keys else EMPTY_ATTRIBUTES


def _unpack_extras(extras: tuple[Any, ...]) -> tuple[Any, Any, Status, str]:
    packed_events, packed_links, code, description, trace_state = extras
    events = tuple(
        Event(name, time_ns, _mapping(keys, values), dropped)
        for name, time_ns, keys, values, dropped in packed_events
    )
    links = tuple(
        Link(
            SpanContext(trace_id, span_id, flags, state, is_remote),
            _mapping(keys, values),
            dropped,
        )
        for trace_id, span_id, flags, state, is_remote, keys, values, dropped in packed_links
    )
    if code == 0 and description is None:
        status = UNSET_STATUS
    else:
        status = Status(_STATUS_CODES[code], description)
    return events, links, status, trace_state


def unpack(item: Any, shared: list[object]) -> SpanRecord:
    """The ``SpanRecord`` a packed item stands for (an unpacked record is returned as is)."""
    if type(item) is not tuple:
        return item  # type: ignore[no-any-return]
    (
        high,
        low,
        span_id,
        parent,
        start,
        end,
        kind,
        flags,
        bits,
        resource,
        scope,
        dropped_attributes,
        dropped_events,
        dropped_links,
    ) = _FIXED.unpack(item[1])
    attributes = _mapping(item[2], item[3]) if len(item) > 2 else EMPTY_ATTRIBUTES
    if len(item) > 4:
        events, links, status, trace_state = _unpack_extras(item[4])
    else:
        events, links, status, trace_state = (), (), UNSET_STATUS, ""
    record = _RecordBuilder(
        item[0],
        (high << 64) | low,
        span_id,
        parent if bits & _HAS_PARENT else None,
        _KINDS[kind],
        start,
        end if bits & _HAS_END else None,
        attributes,
        events,
        links,
        status,
        dropped_attributes,
        dropped_events,
        dropped_links,
        shared[resource],
        shared[scope],
        trace_state,
        bool(bits & _REMOTE_PARENT),
        flags,
    )
    record.__class__ = SpanRecord
    return record  # type: ignore[no-any-return]


def item_key(item: Any) -> tuple[int, bool]:
    """``(span_id, is_start)`` of a queued item, packed or not, without unpacking it."""
    if type(item) is tuple:
        fixed: bytes = item[1]
        return (
            _SPAN_ID.unpack_from(fixed, _SPAN_ID_OFFSET)[0],
            not fixed[_BITS_OFFSET] & _HAS_END,
        )
    return item.span_id, item.end_time_ns is None


# --- size estimates ----------------------------------------------------------------------------

#: What a queued record costs besides its strings and containers: the record (or its packed
#: tuple), its ids and times as int objects, its queue slot (measured: benchmarks/memory.py).
RECORD_BYTES = 400
#: A per-attribute cost besides the value: a dict entry (or tuple slots) and the key's share.
ATTRIBUTE_BYTES = 64
#: Elements of a sequence value looked at one by one; longer ones are extrapolated.
_SAMPLE = 64


def _str_bytes(text: str) -> int:
    # CPython stores ASCII in one byte a character; other text in up to four (an upper bound).
    return 49 + len(text) if text.isascii() else 80 + 4 * len(text)


def _value_bytes(value: object) -> int:
    kind = type(value)
    if kind is str:
        return _str_bytes(value)  # type: ignore[arg-type]
    if kind is tuple or kind is list:
        items: tuple[object, ...] = value  # type: ignore[assignment]
        count = len(items)
        size = 56 + 8 * count
        if not count:
            return size
        if type(items[0]) is str:
            sample = items[:_SAMPLE]
            per = sum(map(_str_bytes, sample)) / len(sample)  # type: ignore[arg-type]
            return size + int(per * count)
        return size + 32 * count
    return 32


def _mapping_bytes(attributes: Mapping[str, object]) -> int:
    if not attributes:
        return 0
    size = 240
    for key, value in attributes.items():
        size += ATTRIBUTE_BYTES + len(key) + _value_bytes(value)
    return size


def estimate_size(record: SpanRecord) -> int:
    """An estimate, in bytes, of the memory a queued record holds; no encoding, O(fields).

    It errs on the high side: strings are counted at CPython's in-memory size, every attribute
    value as if the record held the only copy. A sequence of strings is extrapolated from its
    first elements, so a million-element attribute costs what 64 elements cost to estimate.
    """
    size = RECORD_BYTES + len(record.name)
    attributes = record.attributes
    if attributes:
        size += _mapping_bytes(attributes)
    for event in record.events:
        size += 120 + len(event.name) + _mapping_bytes(event.attributes)
    for link in record.links:
        size += 200 + _mapping_bytes(link.attributes)
    description = record.status.description
    if description:
        size += _str_bytes(description)
    return size
