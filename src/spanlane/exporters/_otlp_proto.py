"""OTLP protobuf encoding of span records, written by hand without the protobuf runtime.

The wire format is that of ``opentelemetry/proto/collector/trace/v1/trace_service.proto``; the
field numbers are spelled out next to each tag below. Building ``opentelemetry-proto`` message
objects and serialising them costs several times more per span than appending pre-computed tag
bytes to a list (numbers in ``docs/design-otlp.md``), and would make the protobuf runtime a
dependency of the ``otlp`` extra.

Encoding works bottom-up: every span becomes one ``ScopeSpans.spans`` field (tag, length, body)
on its own, so that a batch can be cut into requests of bounded size by summing fragment lengths,
and a request is assembled by joining fragments without re-encoding anything.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .._records import (
    Event,
    InstrumentationScope,
    Link,
    Resource,
    SpanRecord,
    Status,
    clean_flags,
)

__all__ = [
    "CONTENT_TYPE",
    "LargeValue",
    "Rope",
    "decode_partial_success",
    "decode_status_message",
    "encode_request",
    "encode_resource",
    "encode_scope",
    "encode_span",
    "encode_span_sliced",
    "group_overhead",
]

CONTENT_TYPE = "application/x-protobuf"

_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack

# Varints below 128 are one byte; most lengths, counts and enum values in a span are.
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(128))

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64 = 2**64

# Span flags (trace.proto, SpanFlags): bits 0-7 carry the W3C trace flags (the record's own);
# bit 8 says bit 9 is meaningful; bit 9 says the parent was remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# kind, start, end and flags in one call: tag bytes and values, little-endian as protobuf wants.
_pack_fixed_fields = struct.Struct("<BBBQBQBBI").pack


#: A string attribute value longer than this (characters), a sequence value with more elements
#: than :data:`LARGE_ITEMS`, or a span with more events than :data:`LARGE_EVENTS`, makes
#: :func:`encode_span` raise :class:`LargeValue`: such a span is encoded by
#: :func:`encode_span_sliced` instead, in pieces, yielding to the event loop between them, so
#: that one pathological span (a 100 MB prompt, a million-element list) cannot hold the loop.
LARGE_CHARS = 256 * 1024
LARGE_ITEMS = 2048
LARGE_EVENTS = 512
#: The size of the chunks a large span's encoding is kept in (never joined into one bytes).
CHUNK_BYTES = 1024 * 1024


class LargeValue(Exception):
    """Raised by :func:`encode_span` for a span to encode with :func:`encode_span_sliced`."""


class Rope:
    """A long byte string kept as chunks of at most about :data:`CHUNK_BYTES`.

    Joining (or copying) 100 MB is one C call of tens of milliseconds that holds the event loop;
    a rope is only ever copied chunk by chunk: compressed, or streamed to the socket.

    Attributes:
        chunks: the bytes, in order.
        size: their total length.
    """

    __slots__ = ("chunks", "size")

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.size = sum(map(len, chunks))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"<Rope {self.size} bytes in {len(self.chunks)} chunks>"


def _coalesce(pieces: Sequence[bytes | Rope]) -> list[bytes]:
    """Pieces (bytes and ropes) as chunks: small neighbours joined, up to :data:`CHUNK_BYTES`."""
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        parts = piece.chunks if isinstance(piece, Rope) else (piece,)
        for part in parts:
            if len(part) >= CHUNK_BYTES // 4:  # big enough to stand alone: never copied
                if pending:
                    chunks.append(b"".join(pending))
                    pending, size = [], 0
                chunks.append(part)
                continue
            pending.append(part)
            size += len(part)
            if size >= CHUNK_BYTES:
                chunks.append(b"".join(pending))
                pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return chunks


def _varint(value: int) -> bytes:
    """Encode a non-negative int as a protobuf base-128 varint."""
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``; lone surrogates (from ``os.fsdecode`` and friends) become ``?``.

    Protobuf ``string`` fields must be valid UTF-8; a receiver rejects the whole request otherwise.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _string_field(tag: bytes, text: str) -> bytes:
    data = _utf8(text)
    return tag + _varint(len(data)) + data


# ---------------------------------------------------------------------------------------------
# Attributes: KeyValue { string key = 1; AnyValue value = 2; }
# AnyValue { oneof: string_value = 1; bool_value = 2; int_value = 3; double_value = 4;
#            array_value = 5 (ArrayValue { repeated AnyValue values = 1; }) }
# Members of a oneof have presence, so empty strings, False and 0 are written, not omitted.
# ---------------------------------------------------------------------------------------------

_ANY_TRUE = b"\x10\x01"
_ANY_FALSE = b"\x10\x00"

# A span's attributes repeat across spans: the same key with the same short string or int value.
# Their complete encoded fields are kept, keyed by the (key, value) pair that ``items()`` yields.
# Strings and ints have separate caches so that True and 1, which are equal, never share an entry.
# A cache is cleared when it reaches its bound, so invented keys or values cannot grow it.
_CACHE_LIMIT = 4096
_CACHED_FIELD_BYTES = 160
_STR_FIELD_CACHE: dict[tuple[str, str], bytes] = {}
_INT_FIELD_CACHE: dict[tuple[str, int], bytes] = {}


def _any_value(value: object) -> bytes:
    """The body of an ``AnyValue`` message for one attribute value."""
    kind = type(value)
    if kind is str:
        if len(value) > LARGE_CHARS:  # type: ignore[arg-type]
            raise LargeValue
        data = _utf8(value)  # type: ignore[arg-type]
        return b"\x0a" + _varint(len(data)) + data
    if kind is bool:
        return _ANY_TRUE if value else _ANY_FALSE
    if kind is int:
        number: int = value  # type: ignore[assignment]
        if 0 <= number < 0x80:
            return b"\x18" + _SMALL_VARINTS[number]
        if _INT64_MIN <= number <= _INT64_MAX:
            # int64 is written as the 64-bit two's complement varint (10 bytes when negative).
            return b"\x18" + _varint(number % _UINT64)
        return _string_any(str(number))
    if kind is float:
        return b"\x21" + _pack_double(value)
    if kind is tuple or kind is list:
        if len(value) > LARGE_ITEMS:  # type: ignore[arg-type]
            raise LargeValue
        body = b"".join(
            [b"\x0a" + _varint(len(item)) + item for item in map(_any_value, value)]  # type: ignore[call-overload]
        )
        return b"\x2a" + _varint(len(body)) + body
    if kind is bytes:
        # bytes_value = 7
        return b"\x3a" + _varint(len(value)) + value  # type: ignore[arg-type,operator]
    if value is None:
        # An empty AnyValue: what None inside an array or a map is on the wire.
        return b""
    if isinstance(value, Mapping):
        # kvlist_value = 6: KeyValueList { repeated KeyValue values = 1; }
        body = b"".join(_keyvalue_field(b"\x0a", key, item) for key, item in value.items())
        return b"\x32" + _varint(len(body)) + body
    return _any_value_slow(value)


def _string_any(text: str) -> bytes:
    data = _utf8(text)
    return b"\x0a" + _varint(len(data)) + data


def _any_value_slow(value: object) -> bytes:
    """Subclasses of the legal types, and anything else, which becomes its ``repr``.

    Records built by spanlane hold only exact types; this keeps a hand-built record encodable.
    """
    if isinstance(value, bool):
        return _ANY_TRUE if value else _ANY_FALSE
    if isinstance(value, str):
        return _string_any(str.__str__(value))
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, (tuple, list)):
        return _any_value(tuple(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _any_value(bytes(value))
    return _string_any(repr(value))


def _keyvalue_field(tag: bytes, key: str, value: object) -> bytes:
    """One ``KeyValue`` as a field of a repeated ``attributes``: tag, length and message."""
    key_data = _utf8(key)
    any_value = _any_value(value)
    keyvalue = (
        b"\x0a" + _varint(len(key_data)) + key_data + b"\x12" + _varint(len(any_value)) + any_value
    )
    return tag + _varint(len(keyvalue)) + keyvalue


def _attribute_fields(tag: bytes, attributes: Mapping[str, object]) -> list[bytes]:
    """Fields of a repeated ``KeyValue`` (events, links, resources: not cached)."""
    return [_keyvalue_field(tag, key, value) for key, value in attributes.items()]


def _cache_span_field(cache: dict[Any, bytes], item: tuple[str, object]) -> bytes:
    field = _keyvalue_field(b"\x4a", item[0], item[1])
    if len(field) <= _CACHED_FIELD_BYTES:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[item] = field
    return field


def _span_attribute_fields(attributes: Mapping[str, object]) -> list[bytes]:
    """``Span.attributes`` fields (field 9), from the caches where possible."""
    fields: list[bytes] = []
    append = fields.append
    str_cache: dict[Any, bytes] = _STR_FIELD_CACHE
    int_cache: dict[Any, bytes] = _INT_FIELD_CACHE
    for item in attributes.items():
        kind = type(item[1])
        if kind is str:
            if len(item[1]) > LARGE_CHARS:  # type: ignore[arg-type]
                raise LargeValue  # before hashing it for the cache: that alone is O(n)
            append(str_cache.get(item) or _cache_span_field(str_cache, item))
        elif kind is int:
            append(int_cache.get(item) or _cache_span_field(int_cache, item))
        else:
            append(_keyvalue_field(b"\x4a", item[0], item[1]))
    return fields


# ---------------------------------------------------------------------------------------------
# Span (trace.proto): trace_id = 1, span_id = 2, trace_state = 3, parent_span_id = 4, name = 5,
# kind = 6, start_time_unix_nano = 7 (fixed64), end_time_unix_nano = 8 (fixed64),
# attributes = 9, dropped_attributes_count = 10, events = 11, dropped_events_count = 12,
# links = 13, dropped_links_count = 14, status = 15, flags = 16 (fixed32).
# ---------------------------------------------------------------------------------------------


def _event_field(event: Event) -> bytes:
    # Event: time_unix_nano = 1 (fixed64), name = 2, attributes = 3, dropped_attributes_count = 4.
    parts = [b"\x09" + _pack_fixed64(event.time_ns), _string_field(b"\x12", event.name)]
    if event.attributes:
        parts += _attribute_fields(b"\x1a", event.attributes)
    if event.dropped_attributes:
        parts.append(b"\x20" + _varint(event.dropped_attributes))
    body = b"".join(parts)
    return b"\x5a" + _varint(len(body)) + body


def _link_field(link: Link) -> bytes:
    # Link: trace_id = 1, span_id = 2, trace_state = 3, attributes = 4,
    # dropped_attributes_count = 5, flags = 6 (fixed32).
    context = link.context
    flags = clean_flags(context.trace_flags) | _HAS_IS_REMOTE
    if context.is_remote:
        flags |= _IS_REMOTE
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_string_field(b"\x1a", context.trace_state))
    if link.attributes:
        parts += _attribute_fields(b"\x22", link.attributes)
    if link.dropped_attributes:
        parts.append(b"\x28" + _varint(link.dropped_attributes))
    parts.append(b"\x35" + _pack_fixed32(flags))
    body = b"".join(parts)
    return b"\x6a" + _varint(len(body)) + body


def _status_field(status: Status) -> bytes:
    # Status: message = 2, code = 3 (field 1 is reserved).
    body = b""
    if status.description:
        body = _string_field(b"\x12", status.description)
    if status.code:
        body += b"\x18" + _SMALL_VARINTS[int(status.code)]
    return b"\x7a" + _varint(len(body)) + body


def encode_span(record: SpanRecord) -> bytes:
    """Encode one finished span as a ``ScopeSpans.spans`` field (tag, length and ``Span``).

    Args:
        record: an end record (``end_time_ns`` set).

    Returns:
        The bytes of field 2 of ``ScopeSpans``, ready to be joined with other spans.
    """
    name = _utf8(record.name)
    size = len(name)
    parts = [
        b"\x0a\x10" + record.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + record.span_id.to_bytes(8, "big"),
        b"\x2a" + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)) + name,
        _pack_fixed_fields(
            0x30,  # kind = 6 (varint; every SpanKind value fits one byte)
            int(record.kind),
            0x39,  # start_time_unix_nano = 7 (fixed64)
            record.start_time_ns,
            0x41,  # end_time_unix_nano = 8 (fixed64)
            record.end_time_ns or 0,
            0x85,  # flags = 16 (fixed32): a two-byte tag
            0x01,
            (record.trace_flags & 0xFF)
            | (_HAS_IS_REMOTE | _IS_REMOTE if record.parent_is_remote else _HAS_IS_REMOTE),
        ),
    ]
    if record.parent_span_id is not None:
        parts.append(b"\x22\x08" + record.parent_span_id.to_bytes(8, "big"))
    if record.trace_state:
        parts.append(_string_field(b"\x1a", record.trace_state))
    if record.attributes:
        parts += _span_attribute_fields(record.attributes)
    if record.dropped_attributes:
        parts.append(b"\x50" + _varint(record.dropped_attributes))
    if record.events:
        if len(record.events) > LARGE_EVENTS:
            raise LargeValue
        parts += map(_event_field, record.events)
    if record.dropped_events:
        parts.append(b"\x60" + _varint(record.dropped_events))
    if record.links:
        parts += map(_link_field, record.links)
    if record.dropped_links:
        parts.append(b"\x70" + _varint(record.dropped_links))
    status = record.status
    if status.code or status.description:
        parts.append(_status_field(status))
    body = b"".join(parts)
    return b"\x12" + _varint(len(body)) + body


def encode_resource(resource: Resource) -> bytes:
    """Encode a resource as a ``ResourceSpans.resource`` field (field 1).

    ``Resource``: attributes = 1, dropped_attributes_count = 2.
    """
    body = b"".join(_attribute_fields(b"\x0a", resource.attributes))
    return b"\x0a" + _varint(len(body)) + body


def encode_scope(scope: InstrumentationScope) -> bytes:
    """Encode an instrumentation scope as a ``ScopeSpans.scope`` field (field 1), followed by
    ``ScopeSpans.schema_url`` (field 3) when the scope names a schema.

    ``InstrumentationScope``: name = 1, version = 2, attributes = 3. Both are fields of
    ``ScopeSpans``, so the fragment opens that message as it is.
    """
    body = b""
    if scope.name:
        body += _string_field(b"\x0a", scope.name)
    if scope.version:
        body += _string_field(b"\x12", scope.version)
    if scope.attributes:
        body += b"".join(_attribute_fields(b"\x1a", scope.attributes))
    field = b"\x0a" + _varint(len(body)) + body
    if scope.schema_url:
        field += _string_field(b"\x1a", scope.schema_url)
    return field


def group_overhead(resource_field: bytes, scope_field: bytes) -> int:
    """An upper bound on the bytes one resource-and-scope group adds to a request besides spans."""
    # Two nested messages (ResourceSpans, ScopeSpans), each a tag and a length of <= 5 bytes.
    return len(resource_field) + len(scope_field) + 12


def encode_request(
    groups: Sequence[tuple[bytes, Sequence[tuple[bytes, Sequence[bytes | Rope]]]]],
) -> bytes | Rope:
    """Assemble an ``ExportTraceServiceRequest`` from encoded fragments.

    Args:
        groups: per resource, its ``resource`` field and, per scope, the ``scope`` field and the
            span fields from :func:`encode_span`.

    Returns:
        The serialised request.
    """
    pieces: list[bytes | Rope] = []
    for resource_field, scopes in groups:
        scope_pieces: list[bytes | Rope] = []
        for scope_field, spans in scopes:
            length = len(scope_field) + sum(map(len, spans))
            scope_pieces += (b"\x12", _varint(length), scope_field)
            scope_pieces += spans
        length = len(resource_field) + sum(map(len, scope_pieces))
        pieces += (b"\x0a", _varint(length), resource_field)
        pieces += scope_pieces
    if any(isinstance(piece, Rope) for piece in pieces):
        return Rope(_coalesce(pieces))
    return b"".join(pieces)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Large spans, in pieces: the same bytes as encode_span, built chunk by chunk.
# ---------------------------------------------------------------------------------------------

Pause = Callable[[], Awaitable[None]]


def _wrap(tag: bytes, chunks: list[bytes]) -> list[bytes]:
    """A length-delimited field around ``chunks``: its tag and length, then the chunks."""
    return [tag + _varint(sum(map(len, chunks))), *chunks]


async def _any_value_chunks(value: object, pause: Pause) -> list[bytes]:
    """The body of an ``AnyValue``, in chunks, yielding between them."""
    try:
        return [_any_value(value)]
    except LargeValue:
        pass
    if type(value) is str:
        text: str = value
        chunks = []
        for start in range(0, len(text), LARGE_CHARS):
            # Per code point, UTF-8 is the same in slices as whole (a lone surrogate too).
            chunks.append(_utf8(text[start : start + LARGE_CHARS]))
            await pause()
        return _wrap(b"\x0a", chunks)
    items: Sequence[object] = value  # type: ignore[assignment] # a tuple or list
    chunks = []
    for start in range(0, len(items), LARGE_ITEMS):
        small: list[bytes] = []  # the elements of this slice, joined into one chunk
        for item in items[start : start + LARGE_ITEMS]:
            try:
                body = _any_value(item)
            except LargeValue:
                if small:
                    chunks.append(b"".join(small))
                    small = []
                chunks += _wrap(b"\x0a", await _any_value_chunks(item, pause))
            else:
                small.append(b"\x0a" + _varint(len(body)) + body)
        if small:
            chunks.append(b"".join(small))
        await pause()
    return _wrap(b"\x2a", _coalesce(chunks))


async def _keyvalue_chunks(tag: bytes, key: str, value: object, pause: Pause) -> list[bytes]:
    key_data = _utf8(key)
    any_value = await _any_value_chunks(value, pause)
    return _wrap(tag, [b"\x0a" + _varint(len(key_data)) + key_data, *_wrap(b"\x12", any_value)])


async def _attribute_chunks(
    tag: bytes, attributes: Mapping[str, object], pause: Pause
) -> list[bytes]:
    chunks: list[bytes] = []
    for key, value in attributes.items():
        try:
            chunks.append(_keyvalue_field(tag, key, value))
        except LargeValue:
            chunks += await _keyvalue_chunks(tag, key, value, pause)
    return chunks


async def _event_chunks(event: Event, pause: Pause) -> list[bytes]:
    try:
        return [_event_field(event)]
    except LargeValue:
        pass
    parts = [b"\x09" + _pack_fixed64(event.time_ns), _string_field(b"\x12", event.name)]
    parts += await _attribute_chunks(b"\x1a", event.attributes, pause)
    if event.dropped_attributes:
        parts.append(b"\x20" + _varint(event.dropped_attributes))
    return _wrap(b"\x5a", parts)


async def encode_span_sliced(record: SpanRecord, pause: Pause) -> Rope:
    """Encode one span as :func:`encode_span` does, in pieces, awaiting ``pause()`` between
    them; the result is kept in chunks (a :class:`Rope`), never joined."""
    name = _utf8(record.name)
    parts: list[bytes] = [
        b"\x0a\x10" + record.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + record.span_id.to_bytes(8, "big"),
        b"\x2a" + _varint(len(name)) + name,
        _pack_fixed_fields(
            0x30,
            int(record.kind),
            0x39,
            record.start_time_ns,
            0x41,
            record.end_time_ns or 0,
            0x85,
            0x01,
            (record.trace_flags & 0xFF)
            | (_HAS_IS_REMOTE | _IS_REMOTE if record.parent_is_remote else _HAS_IS_REMOTE),
        ),
    ]
    if record.parent_span_id is not None:
        parts.append(b"\x22\x08" + record.parent_span_id.to_bytes(8, "big"))
    if record.trace_state:
        parts.append(_string_field(b"\x1a", record.trace_state))
    parts += await _attribute_chunks(b"\x4a", record.attributes, pause)
    if record.dropped_attributes:
        parts.append(b"\x50" + _varint(record.dropped_attributes))
    for number, event in enumerate(record.events):
        parts += await _event_chunks(event, pause)
        if number % 256 == 255:
            await pause()
    if record.dropped_events:
        parts.append(b"\x60" + _varint(record.dropped_events))
    parts += map(_link_field, record.links)
    if record.dropped_links:
        parts.append(b"\x70" + _varint(record.dropped_links))
    status = record.status
    if status.code or status.description:
        parts.append(_status_field(status))
    await pause()
    return Rope(_coalesce(_wrap(b"\x12", _coalesce(parts))))


# ---------------------------------------------------------------------------------------------
# Decoding the little the exporter reads back: ExportTraceServiceResponse
# { ExportTracePartialSuccess partial_success = 1 { int64 rejected_spans = 1;
# string error_message = 2; } } and google.rpc.Status { int32 code = 1; string message = 2; }.
# ---------------------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Split a message into ``(field number, value)``; varints as int, the rest as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire_type == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise ValueError("truncated field")
        fields.append((number, value))
    return fields


def decode_partial_success(body: bytes) -> tuple[int, str]:
    """Read ``rejected_spans`` and ``error_message`` from an ``ExportTraceServiceResponse``.

    Raises:
        ValueError: the body is not a valid response.
    """
    rejected = 0
    message = ""
    for number, value in _fields(body):
        if number != 1 or not isinstance(value, bytes):
            continue
        for inner_number, inner in _fields(value):
            if inner_number == 1 and isinstance(inner, int):
                rejected = inner - _UINT64 if inner > _INT64_MAX else inner
            elif inner_number == 2 and isinstance(inner, bytes):
                message = inner.decode("utf-8", "replace")
    return rejected, message


def decode_status_message(body: bytes) -> str | None:
    """The ``message`` of a ``google.rpc.Status`` body, or None if it is not one."""
    try:
        for number, value in _fields(body):
            if number == 2 and isinstance(value, bytes):
                return value.decode("utf-8", "replace")
    except ValueError:
        return None
    return None
