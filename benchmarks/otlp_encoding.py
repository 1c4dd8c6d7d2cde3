"""Micro-benchmark behind the encoder decisions in docs/design-otlp.md (not a test).

Measures, per span, what encoding a batch costs with spanlane's hand-written protobuf encoder,
with ``opentelemetry-proto`` message objects (the protobuf runtime), and with the OTLP/JSON
encoder; then how long encoding one batch holds the event loop, on the loop, in chunks on the
loop, and in a worker thread. Run: ``python benchmarks/otlp_encoding.py``.
"""

from __future__ import annotations

import gc
import gzip
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from spanlane._records import (
    Event,
    InstrumentationScope,
    Resource,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
)
from spanlane.exporters import _otlp_encode, _otlp_json, _otlp_proto

RESOURCE = Resource({"service.name": "bench", "telemetry.sdk.name": "spanlane", "host.name": "h"})
SCOPE = InstrumentationScope("bench", "1.0")


def make_records(count: int, *, events: bool = False) -> list[SpanRecord]:
    """Spans shaped like an HTTP client call: six attributes, a parent, status unset."""
    base = 1_700_000_000_000_000_000
    records = []
    for i in range(count):
        records.append(
            SpanRecord(
                name="GET /api/items/{id}",
                trace_id=0x0123456789ABCDEF0123456789ABCDEF + i,
                span_id=0x0123456789ABCDEF + i,
                parent_span_id=0x1111111111111111 + i,
                kind=SpanKind.CLIENT,
                start_time_ns=base + i * 1000,
                end_time_ns=base + i * 1000 + 250_000,
                attributes={
                    "http.request.method": "GET",
                    "url.path": f"/api/items/{i}",
                    "http.response.status_code": 200,
                    "server.address": "example.internal",
                    "retry": False,
                    "sample.ratio": 0.25,
                },
                events=(Event("sent", base + i * 1000 + 10, {"bytes": 512}),) if events else (),
                status=Status(StatusCode.ERROR, "boom") if events else Status(),
                resource=RESOURCE,
                scope=SCOPE,
            )
        )
    return records


def encode_hand(records: Sequence[SpanRecord]) -> bytes:
    spans = [_otlp_proto.encode_span(r) for r in records]
    resource = _otlp_proto.encode_resource(RESOURCE)
    scope = _otlp_proto.encode_scope(SCOPE)
    return _otlp_proto.encode_request([(resource, [(scope, spans)])])


def encode_hand_cold(records: Sequence[SpanRecord]) -> bytes:
    """The hand-written encoder with its attribute caches emptied first."""
    _otlp_proto._STR_FIELD_CACHE.clear()
    _otlp_proto._INT_FIELD_CACHE.clear()
    return encode_hand(records)


def encode_json(records: Sequence[SpanRecord]) -> bytes:
    spans = [_otlp_json.encode_span(r) for r in records]
    resource = _otlp_json.encode_resource(RESOURCE)
    scope = _otlp_json.encode_scope(SCOPE)
    return _otlp_json.encode_request([(resource, [(scope, spans)])])


def _pb_value(value: object) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, tuple):
        return common_pb2.AnyValue(
            array_value=common_pb2.ArrayValue(values=[_pb_value(v) for v in value])
        )
    return common_pb2.AnyValue(string_value=str(value))


def _pb_attributes(attributes: object) -> list[common_pb2.KeyValue]:
    return [
        common_pb2.KeyValue(key=k, value=_pb_value(v))
        for k, v in attributes.items()  # type: ignore[attr-defined]
    ]


def _pb_status(record: SpanRecord) -> trace_pb2.Status | None:
    if not record.status.code:
        return None
    code: Any = int(record.status.code)
    return trace_pb2.Status(code=code, message=record.status.description or "")


def encode_pb2(records: Sequence[SpanRecord]) -> bytes:
    """The same request built from opentelemetry-proto message objects (upb runtime)."""
    spans = []
    for r in records:
        spans.append(
            trace_pb2.Span(
                trace_id=r.trace_id.to_bytes(16, "big"),
                span_id=r.span_id.to_bytes(8, "big"),
                parent_span_id=r.parent_span_id.to_bytes(8, "big") if r.parent_span_id else b"",
                name=r.name,
                kind=int(r.kind),  # type: ignore[arg-type]
                start_time_unix_nano=r.start_time_ns,
                end_time_unix_nano=r.end_time_ns or 0,
                attributes=_pb_attributes(r.attributes),
                events=[
                    trace_pb2.Span.Event(
                        time_unix_nano=e.time_ns,
                        name=e.name,
                        attributes=_pb_attributes(e.attributes),
                    )
                    for e in r.events
                ],
                status=_pb_status(r),
                flags=0x101,
            )
        )
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=_pb_attributes(RESOURCE.attributes)),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name="bench", version="1.0"),
                        spans=spans,
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()  # type: ignore[no-any-return]


def per_span_us(
    encode: Callable[[Sequence[SpanRecord]], bytes], records: list[SpanRecord]
) -> float:
    """Best of 7 runs, microseconds per span (garbage collection paused while timing)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(7):
            start = time.perf_counter()
            encode(records)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best / len(records) * 1e6


def compression_table(records: list[SpanRecord]) -> None:
    body = encode_hand(records)
    print(f"\n{len(records)} spans, protobuf body {len(body)} bytes:")
    for level in (1, 6):
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
            out = compressor.compress(body) + compressor.flush()
            best = min(best, time.perf_counter() - start)
        print(f"  gzip level {level}: {best * 1e3:.2f} ms, {len(out)} bytes")
    assert gzip.decompress(out) == body


async def loop_lag(batch: list[SpanRecord], mode: str) -> tuple[float, float]:
    """Encode ``batch`` while a ticker sleeps 1 ms in a loop; return (p99, max) lateness in ms."""
    lags: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await anyio.sleep(0.001)
            lags.append((time.perf_counter() - start - 0.001) * 1e3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.02)
        for _ in range(10):
            if mode == "loop":
                _otlp_encode.gzip_bytes(encode_hand(batch))
            elif mode.startswith("sliced"):  # what the exporter does (gzip included)
                await _otlp_encode.encode_batch(batch, _otlp_encode.PROTOBUF, 1 << 24, gzip=True)
            else:
                await anyio.to_thread.run_sync(lambda: _otlp_encode.gzip_bytes(encode_hand(batch)))
            await anyio.sleep(0.005)
        done.set()
    lags.sort()
    return lags[int(len(lags) * 0.99)], lags[-1]


def main() -> None:
    for events in (False, True):
        records = make_records(512, events=events)
        shape = "with an event and error status" if events else "plain (6 attributes)"
        assert trace_service_pb2.ExportTraceServiceRequest.FromString(
            encode_hand(records)
        ) == trace_service_pb2.ExportTraceServiceRequest.FromString(encode_pb2(records))
        print(f"\nspans {shape}, batch of 512, microseconds per span (best of 7):")
        for label, encode in (
            ("hand-written protobuf", encode_hand),
            ("hand-written, caches cold", encode_hand_cold),
            ("opentelemetry-proto (upb)", encode_pb2),
            ("OTLP/JSON", encode_json),
        ):
            print(f"  {label:30} {per_span_us(encode, records):6.2f}")
    compression_table(make_records(512))
    for size in (512, 4096):
        batch = make_records(size)
        print(f"\nevent-loop lag while encoding batches of {size} (ms, p99 / max):")
        for mode in ("loop", "sliced 1 ms", "sliced 2 ms", "sliced 4 ms", "thread"):
            if mode.startswith("sliced"):
                _otlp_encode.SLICE_SECONDS = float(mode.split()[1]) / 1000
            p99, worst = anyio.run(loop_lag, batch, mode)
            print(f"  {mode:12} p99 {p99:6.2f}  max {worst:6.2f}")


if __name__ == "__main__":
    main()
