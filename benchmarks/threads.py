"""The cost of a span started and ended in another thread, against a span on the loop thread.

Run: ``python benchmarks/threads.py [--spans N] [--repeat R]`` (or ``tox -e bench``).

For each backend, in one run, interleaved so that machine noise hits all alike:

- loop: ``with tracer.span("x"): pass`` on the event loop thread (a checkpoint every 50);
- worker thread: the same loop inside ``anyio.to_thread.run_sync``, timed inside the thread;
  the records reach the lanes through the tracer's thread inbox;
- plain thread: the same in a ``threading.Thread`` that the loop thread joins while blocked
  (the case that deadlocked when a thread waited for the loop);
- otel thread: ``start_as_current_span`` with the OpenTelemetry SDK's ``BatchSpanProcessor``
  in a worker thread, for reference (skipped if the SDK is missing).

The figure is nanoseconds per span, median over R repetitions; the target is
``worker thread / loop <= 2``. Each thread figure includes the loop catching up (a final flush),
so records left in the inbox cannot flatter it.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

import spanlane
from spanlane.exporters import MemoryExporter

CHECKPOINT_EVERY = 50


class _Counting(MemoryExporter):
    def __init__(self) -> None:
        super().__init__(name="counting")
        self.count = 0

    async def export(self, batch: Sequence[spanlane.SpanRecord]) -> None:
        self.count += len(batch)


def _spans_in_thread(tracer: spanlane.Tracer, n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        with tracer.span("x"):
            pass
    return time.perf_counter_ns() - start


async def loop_spans(tracer: spanlane.Tracer, n: int) -> int:
    start = time.perf_counter_ns()
    for index in range(n):
        with tracer.span("x"):
            pass
        if index % CHECKPOINT_EVERY == 0:
            await anyio.lowlevel.checkpoint()
    await tracer.flush()
    return time.perf_counter_ns() - start


async def worker_thread_spans(tracer: spanlane.Tracer, n: int) -> int:
    start = time.perf_counter_ns()
    await anyio.to_thread.run_sync(_spans_in_thread, tracer, n)
    await tracer.flush()
    return time.perf_counter_ns() - start


async def plain_thread_spans(tracer: spanlane.Tracer, n: int) -> int:
    start = time.perf_counter_ns()
    thread = threading.Thread(target=_spans_in_thread, args=(tracer, n))
    thread.start()
    thread.join()  # the loop thread blocks here on purpose
    await tracer.flush()
    return time.perf_counter_ns() - start


def _otel_setup() -> Any:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class _Nothing(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = BatchSpanProcessor(_Nothing(), max_queue_size=1 << 20)
    provider.add_span_processor(processor)
    return provider, processor, provider.get_tracer("bench")


def _otel_in_thread(otel_tracer: Any, n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        with otel_tracer.start_as_current_span("x"):
            pass
    return time.perf_counter_ns() - start


async def otel_thread_spans(otel: Any, n: int) -> int:
    _, processor, otel_tracer = otel
    start = time.perf_counter_ns()
    await anyio.to_thread.run_sync(_otel_in_thread, otel_tracer, n)
    await anyio.to_thread.run_sync(processor.force_flush)
    return time.perf_counter_ns() - start


async def run(n: int, repeat: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"loop": [], "worker thread": [], "plain thread": []}
    otel = _otel_setup()
    if otel is not None:
        results["otel thread"] = []
    exporter = _Counting()
    async with spanlane.open_tracer(exporter, buffer_size=4 * n, max_batch_size=512) as tracer:
        for _ in range(repeat):
            results["loop"].append(await loop_spans(tracer, n) / n)
            results["worker thread"].append(await worker_thread_spans(tracer, n) / n)
            results["plain thread"].append(await plain_thread_spans(tracer, n) / n)
            if otel is not None:
                results["otel thread"].append(await otel_thread_spans(otel, n) / n)
        stats = tracer.stats()
    assert stats.lanes[0].dropped == {}, stats
    if otel is not None:
        otel[0].shutdown()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"{args.spans} spans x {args.repeat} repetitions, median ns/span (loop + final flush)")
    for backend in ("asyncio", "trio"):
        results = anyio.run(run, args.spans, args.repeat, backend=backend)
        medians = {name: statistics.median(values) for name, values in results.items()}
        print(f"\n[{backend}]")
        for name, values in results.items():
            print(
                f"  {name:14s} {medians[name]:7.0f} ns/span   "
                f"(range {min(values):.0f}-{max(values):.0f})"
            )
        ratio = medians["worker thread"] / medians["loop"]
        print(f"  worker thread / loop = {ratio:5.2f}x  (target <= 2.0)")
        print(f"  plain thread / loop  = {medians['plain thread'] / medians['loop']:5.2f}x")
        if "otel thread" in medians:
            otel = medians["otel thread"] / medians["worker thread"]
            print(f"  otel thread / worker thread = {otel:5.2f}x")


if __name__ == "__main__":
    main()
