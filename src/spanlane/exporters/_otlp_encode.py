"""From a batch of records to request bodies: encode, group, split by size, compress.

Encoding runs on the event loop in slices of at most about :data:`SLICE_SECONDS`, with a
checkpoint between slices; compression of a large body runs in a worker thread, where zlib
releases the GIL. A span with a huge value (protobuf only) is encoded in pieces between
checkpoints and kept as a :class:`~._otlp_proto.Rope` of chunks that is never joined, compressed
chunk by chunk in a thread and streamed. The measurements behind these choices are in
``docs/design-otlp.md`` and ``docs/design.md``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel
import attrs

from .._log import logger
from .._records import InstrumentationScope, Resource, SpanRecord
from .._safe import safe_str
from . import _otlp_json, _otlp_proto
from ._otlp_proto import LargeValue, Rope

#: How long encoding may hold the event loop before it yields, in seconds. Slices are timed
#: rather than counted because spans differ in cost by orders of magnitude (six attributes or a
#: hundred events). Half a millisecond leaves most of the lag budget to the parts of an export
#: that cannot be sliced (the lane's bookkeeping, sending the request); measured against 1 and
#: 0.25 ms in docs/design-otlp.md. A yield costs a few microseconds.
SLICE_SECONDS = 0.0005
#: Spans encoded between two looks at the clock (each span costs a few microseconds).
CLOCK_EVERY = 32
#: Bodies at least this long are gzipped in a worker thread (about 1 ms of zlib at level 1).
THREAD_COMPRESS_BYTES = 512 * 1024
#: zlib level 1 compresses OTLP spans within 1 % of level 6 in a fifth of the time.
GZIP_LEVEL = 1

_Groups = Sequence[tuple[bytes, Sequence[tuple[bytes, Sequence[bytes | Rope]]]]]


@attrs.frozen
class Codec:
    """One wire encoding: how to encode a span, a resource, a scope and assemble a request.

    Attributes:
        content_type: the ``Content-Type`` of request bodies.
        encode_span: one span, as a self-contained fragment.
        encode_resource: one resource, as a fragment.
        encode_scope: one instrumentation scope, as a fragment.
        encode_request: fragments grouped by resource and scope, into a request body.
        group_overhead: an upper bound on the bytes a group adds besides its spans.
        per_span: bytes a span adds besides its fragment (a comma in JSON).
        envelope: an upper bound on the bytes of an empty request.
        decode_partial_success: ``(rejected, message)`` from a response body.
        encode_span_sliced: for a span whose ``encode_span`` raised ``LargeValue``: the same
            encoding in pieces, awaiting a pause between them (None: the codec never raises it).
    """

    content_type: str
    encode_span: Callable[[SpanRecord], bytes]
    encode_resource: Callable[[Resource], bytes]
    encode_scope: Callable[[InstrumentationScope], bytes]
    encode_request: Callable[[_Groups], bytes | Rope]
    group_overhead: Callable[[bytes, bytes], int]
    per_span: int
    envelope: int
    decode_partial_success: Callable[[bytes], tuple[int, str]]
    encode_span_sliced: (
        Callable[[SpanRecord, Callable[[], Awaitable[None]]], Awaitable[Rope]] | None
    ) = None


PROTOBUF = Codec(
    content_type=_otlp_proto.CONTENT_TYPE,
    encode_span=_otlp_proto.encode_span,
    encode_resource=_otlp_proto.encode_resource,
    encode_scope=_otlp_proto.encode_scope,
    encode_request=_otlp_proto.encode_request,
    group_overhead=_otlp_proto.group_overhead,
    per_span=0,
    envelope=0,
    decode_partial_success=_otlp_proto.decode_partial_success,
    encode_span_sliced=_otlp_proto.encode_span_sliced,
)

JSON = Codec(
    content_type=_otlp_json.CONTENT_TYPE,
    encode_span=_otlp_json.encode_span,
    encode_resource=_otlp_json.encode_resource,
    encode_scope=_otlp_json.encode_scope,
    encode_request=_otlp_json.encode_request,  # type: ignore[arg-type] # never given a Rope
    group_overhead=_otlp_json.group_overhead,
    per_span=1,
    envelope=32,
    decode_partial_success=_otlp_json.decode_partial_success,
)


@attrs.frozen
class Part:
    """One request's worth of a batch.

    Attributes:
        body: the request body, compressed if the exporter compresses: bytes, or for a request
            holding a huge span a :class:`~._otlp_proto.Rope` of chunks (sent as a stream).
        spans: how many spans it carries.
        encoded_size: the body's length before compression.
    """

    body: bytes | Rope
    spans: int
    encoded_size: int


class _Interner:
    """Canonical resources or scopes of one batch, with their encoded fragments.

    Records of one tracer share one ``Resource`` object, so the identity lookup nearly always
    hits; equal objects that are not identical still share a group.
    """

    def __init__(self, encode: Callable[[object], bytes]) -> None:
        self._encode = encode
        self._by_id: dict[int, int] = {}
        self.values: list[object] = []
        self.fragments: list[bytes] = []

    def index(self, value: object) -> int:
        found = self._by_id.get(id(value))
        if found is not None:
            return found
        try:
            position = self.values.index(value)  # equal but not identical: rare, and few
        except ValueError:
            position = len(self.values)
            self.values.append(value)
            self.fragments.append(self._encode(value))
        # The batch keeps every record (and so this value) alive: its id cannot be reused.
        self._by_id[id(value)] = position
        return position


class Packer:
    """Packs encoded spans into request bodies of at most ``max_bytes``, grouped by resource
    and scope.

    Spans keep their batch order within a group, and groups keep the order of their first span.
    A span larger than ``max_bytes`` on its own is sent alone rather than dropped.
    """

    def __init__(self, codec: Codec, max_bytes: int) -> None:
        self._codec = codec
        self._max_bytes = max_bytes
        self._resources = _Interner(codec.encode_resource)  # type: ignore[arg-type]
        self._scopes = _Interner(codec.encode_scope)  # type: ignore[arg-type]
        self._current: dict[int, dict[int, list[bytes | Rope]]] = {}
        self._size = codec.envelope
        self._count = 0
        #: ``(body, span count)`` per finished request, in order.
        self.bodies: list[tuple[bytes | Rope, int]] = []

    def add(self, record: SpanRecord, fragment: bytes | Rope) -> None:
        """Add one span, finishing the current request first if the span would overflow it."""
        codec = self._codec
        resource = self._resources.index(record.resource)
        scope = self._scopes.index(record.scope)
        spans = self._current.get(resource, {}).get(scope)
        added = len(fragment) + codec.per_span
        if spans is None:
            added += codec.group_overhead(
                self._resources.fragments[resource], self._scopes.fragments[scope]
            )
        if self._count and self._size + added > self._max_bytes:
            self.finish()
            spans = None
            added = len(fragment) + codec.per_span
            added += codec.group_overhead(
                self._resources.fragments[resource], self._scopes.fragments[scope]
            )
        if spans is None:
            spans = self._current.setdefault(resource, {}).setdefault(scope, [])
        spans.append(fragment)
        self._size += added
        self._count += 1

    def finish(self) -> None:
        """Assemble the current request, if it has any span."""
        if not self._count:
            return
        groups = [
            (
                self._resources.fragments[resource],
                [(self._scopes.fragments[scope], spans) for scope, spans in by_scope.items()],
            )
            for resource, by_scope in self._current.items()
        ]
        self.bodies.append((self._codec.encode_request(groups), self._count))
        self._current = {}
        self._size = self._codec.envelope
        self._count = 0


def split(
    records: Sequence[SpanRecord], fragments: Sequence[bytes], codec: Codec, max_bytes: int
) -> list[tuple[bytes | Rope, int]]:
    """Pack already encoded spans into request bodies in one go (see :class:`Packer`).

    Returns:
        ``(body, span count)`` per request, in order.
    """
    packer = Packer(codec, max_bytes)
    for record, fragment in zip(records, fragments, strict=True):
        packer.add(record, fragment)
    packer.finish()
    return packer.bodies


def gzip_bytes(data: bytes) -> bytes:
    """Compress ``data`` into the gzip format (``Content-Encoding: gzip``)."""
    # compressobj with wbits=31 writes a gzip header and trailer; zlib.compress only gained the
    # wbits argument in Python 3.11.
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def gzip_rope(rope: Rope) -> Rope:
    """Compress a rope chunk by chunk into a rope (for a worker thread: zlib releases the GIL
    for each chunk, and nothing is ever joined)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    chunks = [compressor.compress(chunk) for chunk in rope.chunks]
    chunks.append(compressor.flush())
    return Rope([chunk for chunk in chunks if chunk])


class _Slicer:
    """Yields to the event loop once the current slice of work has run its time."""

    def __init__(self) -> None:
        self._deadline = time.perf_counter() + SLICE_SECONDS

    async def pause(self) -> None:
        if time.perf_counter() >= self._deadline:
            await anyio.lowlevel.checkpoint()
            self._deadline = time.perf_counter() + SLICE_SECONDS


@attrs.frozen
class Encoded:
    """A batch as request parts.

    Attributes:
        parts: the request parts, in order; empty when no record could be encoded.
        unencodable: records left out because encoding them failed (only a record built by
            hand can carry what the encoder cannot write; one such record never sinks the rest).
    """

    parts: list[Part]
    unencodable: int = 0


def _left_out(exc: Exception) -> None:
    logger.warning(
        "spanlane OTLP: left out a span that could not be encoded (%s: %s)",
        type(exc).__name__,
        safe_str(exc, 200),
    )


async def _encode_one(codec: Codec, record: SpanRecord, slicer: _Slicer) -> bytes | Rope | None:
    try:
        return codec.encode_span(record)
    except LargeValue:
        pass
    except Exception as exc:
        _left_out(exc)
        return None
    assert codec.encode_span_sliced is not None
    try:
        return await codec.encode_span_sliced(record, slicer.pause)
    except Exception as exc:
        _left_out(exc)
        return None


async def encode_batch(
    records: Sequence[SpanRecord], codec: Codec, max_bytes: int, gzip: bool
) -> Encoded:
    """Encode finished records into request parts, yielding to the event loop between slices.

    Args:
        records: end records, in lane order.
        codec: the wire encoding.
        max_bytes: the most bytes one request body may hold before compression.
        gzip: whether to gzip the bodies.

    Returns:
        The parts, in order, and how many records could not be encoded.
    """
    # The caller's step may already have run a while (the lane settling the previous batch and
    # gathering this one): start the first slice on a fresh turn.
    await anyio.lowlevel.checkpoint()
    slicer = _Slicer()
    encode_span = codec.encode_span
    packer = Packer(codec, max_bytes)
    unencodable = 0
    for start in range(0, len(records), CLOCK_EVERY):
        for record in records[start : start + CLOCK_EVERY]:
            fragment: bytes | Rope | None
            try:
                fragment = encode_span(record)
            except Exception:  # a huge span (LargeValue), or one that cannot be encoded
                fragment = await _encode_one(codec, record, slicer)
            if fragment is None:
                unencodable += 1
            else:
                packer.add(record, fragment)
        await slicer.pause()
    packer.finish()
    parts = []
    for body, count in packer.bodies:
        await slicer.pause()
        encoded_size = len(body)
        if gzip:
            if isinstance(body, Rope):
                body = await anyio.to_thread.run_sync(gzip_rope, body)
            elif encoded_size >= THREAD_COMPRESS_BYTES:
                body = await anyio.to_thread.run_sync(gzip_bytes, body)
            else:
                body = gzip_bytes(body)
        parts.append(Part(body, count, encoded_size))
    await slicer.pause()  # sending a request is itself a stretch of work; do not add it here
    return Encoded(parts, unencodable)
