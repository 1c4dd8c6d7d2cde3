"""What queued records cost: full garbage collection time and memory per queued record (not a
test), spanlane against the OpenTelemetry SDK in the same run.

Each program opens a tracer whose exporter never finishes its first export (a receiver that is
down), produces N spans on the event loop (a checkpoint every 50, as a service would), waits
until the lane has packed its queue, and then measures:

- the full collection: ``gc.collect()``, the best of 15, in milliseconds, against the same
  program with nothing queued (N = 0);
- memory: the growth of the process's resident set size from before the spans were made, per
  queued record, in bytes.

Two record shapes: "small" (a span with the five attributes of an HTTP server span, as in
``benchmarks/export.py``), and "10 KB" (the same plus a distinct 10 KB ``llm.prompt`` string, the
LLM case). A last run offers 10 KB records to a lane with ``max_buffer_bytes`` and checks that
the resident set grows by the bound plus a small constant.

The OpenTelemetry SDK's ``BatchSpanProcessor`` runs the same programs with an exporter that
blocks its export thread, so that spans stay in its queue.

Every configuration runs in a fresh child process (so that memory freed by one run does not
flatter the next). Run: ``python benchmarks/memory.py [--counts 0 100000 1000000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel

CHECKPOINT_EVERY = 50
PROMPT = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def attributes(i: int, big: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "http.request.method": "GET",
        "http.route": "/api/items/{id}",
        "url.path": f"/api/items/{i % 1000}",
        "http.response.status_code": 200,
        "user.id": i % 100,
    }
    if big:
        values["llm.prompt"] = f"{i:>10}" + "p" * (PROMPT - 10)  # distinct, as prompts are
    return values


def full_gc_ms() -> float:
    best = float("inf")
    for _ in range(15):
        start = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


class Stuck:
    """An exporter whose export never returns until released: everything stays queued."""

    def __init__(self) -> None:
        self.release = anyio.Event()

    async def export(self, batch: object) -> None:
        await self.release.wait()


async def spanlane_program(count: int, big: bool, max_bytes: int | None) -> dict[str, float]:
    import spanlane

    exporter = Stuck()
    tracer = spanlane.open_tracer(
        exporter,
        buffer_size=max(count, 1) + 1024,
        max_batch_size=512,
        max_concurrent_exports=1,
        max_buffer_bytes=max_bytes,
        drain_timeout=0.5,
    )
    async with tracer:
        gc.collect()
        before = rss_bytes()
        empty_gc = full_gc_ms()
        for i in range(count):
            with tracer.span("GET /api/items/{id}", kind=spanlane.SpanKind.SERVER) as span:
                for key, value in attributes(i, big).items():
                    span.set_attribute(key, value)
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await anyio.lowlevel.checkpoint()
        for _ in range(200):  # let the lane finish packing its queue
            await anyio.sleep(0.01)
        lane = tracer.stats().lanes[0]
        gc_ms = full_gc_ms()
        grown = rss_bytes() - before
        exporter.release.set()
    return {
        "empty_gc_ms": empty_gc,
        "gc_ms": gc_ms,
        "rss_growth": grown,
        "queued": lane.queued + lane.in_flight,
        "dropped": lane.dropped_total,
        "buffered_bytes": lane.high_water_bytes,
    }


async def otel_program(count: int, big: bool) -> dict[str, float]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import SpanKind

    release = threading.Event()

    class Blocking(SpanExporter):
        def export(self, spans: Any) -> Any:
            release.wait(600)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = BatchSpanProcessor(
        Blocking(), max_queue_size=max(count, 1) + 1024, max_export_batch_size=512
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    gc.collect()
    before = rss_bytes()
    empty_gc = full_gc_ms()
    for i in range(count):
        with tracer.start_as_current_span("GET /api/items/{id}", kind=SpanKind.SERVER) as span:
            for key, value in attributes(i, big).items():
                span.set_attribute(key, value)
        if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            await anyio.lowlevel.checkpoint()
    await anyio.sleep(1.0)
    gc_ms = full_gc_ms()
    grown = rss_bytes() - before
    release.set()
    return {
        "empty_gc_ms": empty_gc,
        "gc_ms": gc_ms,
        "rss_growth": grown,
        "queued": count,
        "dropped": 0,
        "buffered_bytes": 0,
    }


def child(library: str, count: int, big: bool, max_bytes: int | None) -> None:
    if library == "spanlane":
        result = anyio.run(spanlane_program, count, big, max_bytes)
    else:
        result = anyio.run(otel_program, count, big)
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # the SDK's export thread is still blocked; do not wait for it


def run(library: str, count: int, big: bool, max_bytes: int | None = None) -> dict[str, float]:
    command = [sys.executable, os.path.abspath(__file__), "--child", library, str(count)]
    command += ["--big"] if big else []
    command += ["--max-bytes", str(max_bytes)] if max_bytes else []
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    parser.add_argument(
        "--big-counts",
        type=int,
        nargs="+",
        default=[0, 100_000],
        help="counts for 10 KB records (1M of them would need 10 GB in each library)",
    )
    parser.add_argument("--bound", type=int, default=200 * 1024 * 1024, help="max_buffer_bytes")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--big", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-bytes", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.big, args.max_bytes)
        return
    print(f"python {sys.version.split()[0]}; full gc: best of 15, ms; memory: RSS growth")
    header = (
        f"{'library':9} {'record':6} {'queued':>9} {'full gc ms':>10} {'empty gc ms':>11} "
        f"{'gc - empty':>10} {'bytes/record':>12}"
    )
    print(header)
    print("-" * len(header))
    for big, counts in ((False, args.counts), (True, args.big_counts)):
        for count in counts:
            for library in ("spanlane", "otel-sdk"):
                result = run(library, count, big)
                per = result["rss_growth"] / count if count else 0.0
                print(
                    f"{library:9} {'10 KB' if big else 'small':6} {count:9d} "
                    f"{result['gc_ms']:10.1f} {result['empty_gc_ms']:11.1f} "
                    f"{result['gc_ms'] - result['empty_gc_ms']:10.1f} {per:12.0f}",
                    flush=True,
                )
    count = max(args.big_counts)
    result = run("spanlane", count, True, args.bound)
    print(
        f"\nbyte bound: {count} records of 10 KB offered to a lane with max_buffer_bytes = "
        f"{args.bound / 2**20:.0f} MiB: {result['queued']:.0f} held, {result['dropped']:.0f} "
        f"dropped (QUEUE_FULL), estimated bytes at most {result['buffered_bytes'] / 2**20:.1f} "
        f"MiB, RSS grew by {result['rss_growth'] / 2**20:.1f} MiB "
        f"({(result['rss_growth'] - args.bound) / 2**20:+.1f} MiB over the bound)"
    )


if __name__ == "__main__":
    main()
