"""The OpenTelemetry bridge's cost, against spanlane's native span and the SDK, in one run.

Run: ``python benchmarks/otel.py [--spans N] [--repeat R]`` (or ``tox -e bench``).

For each backend, interleaved so that machine noise hits all alike, nanoseconds per span (loop
plus a final flush), median over R repetitions:

- native: ``with tracer.span("x"): pass`` (one memory lane draining in the background);
- bridge: ``with otel_tracer.start_as_current_span("x"): pass`` through ``spanlane.otel``;
- sdk: the same call on the OpenTelemetry SDK with ``BatchSpanProcessor`` and an exporter that
  does nothing, with the SDK's own runtime context (the bridge's is swapped out meanwhile);
- sdk -> spanlane: the SDK with ``spanlane.otel.SpanProcessor`` instead, so its spans go to a
  spanlane lane: the added cost of that direction is this minus "sdk".

Targets (issue 11): bridge / native <= 1.5; sdk / bridge >= 5.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import opentelemetry.context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import spanlane
import spanlane.otel
from spanlane.exporters import MemoryExporter

CHECKPOINT_EVERY = 50


class _Counting(MemoryExporter):
    def __init__(self) -> None:
        super().__init__(name="counting")
        self.count = 0

    async def export(self, batch: Sequence[spanlane.SpanRecord]) -> None:
        self.count += len(batch)


class _Nothing(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _loop(n: int, make: Callable[[], Any], tracer: spanlane.Tracer | None) -> int:
    start = time.perf_counter_ns()
    for index in range(n):
        with make():
            pass
        if index % CHECKPOINT_EVERY == 0:
            await anyio.lowlevel.checkpoint()
    if tracer is not None:
        await tracer.flush()
    return time.perf_counter_ns() - start


async def run(n: int, repeat: int) -> dict[str, list[float]]:
    bridge_context = spanlane.otel.RuntimeContext()
    sdk_context = otel_context._RUNTIME_CONTEXT
    spanlane.otel.install()
    otel_context._RUNTIME_CONTEXT = sdk_context
    sdk = TracerProvider()
    batch = BatchSpanProcessor(_Nothing(), max_queue_size=1 << 20)
    sdk.add_span_processor(batch)
    sdk_tracer = sdk.get_tracer("bench")
    results: dict[str, list[float]] = {
        "native": [],
        "bridge": [],
        "sdk": [],
        "sdk -> spanlane": [],
    }
    exporter = _Counting()
    async with spanlane.open_tracer(exporter, buffer_size=4 * n, max_batch_size=512) as tracer:
        bridged = sdk_bridged = None
        otel_tracer = spanlane.otel.install(tracer).get_tracer("bench")
        sdk_bridged = TracerProvider()
        sdk_bridged.add_span_processor(spanlane.otel.SpanProcessor(tracer))
        bridged = sdk_bridged.get_tracer("bench")
        for _ in range(repeat):
            gc.collect()
            otel_context._RUNTIME_CONTEXT = bridge_context
            results["native"].append(await _loop(n, lambda: tracer.span("x"), tracer) / n)
            results["bridge"].append(
                await _loop(n, lambda: otel_tracer.start_as_current_span("x"), tracer) / n
            )
            otel_context._RUNTIME_CONTEXT = sdk_context
            results["sdk"].append(
                await _loop(n, lambda: sdk_tracer.start_as_current_span("x"), None) / n
            )
            batch.force_flush()
            results["sdk -> spanlane"].append(
                await _loop(n, lambda: bridged.start_as_current_span("x"), tracer) / n
            )
        otel_context._RUNTIME_CONTEXT = bridge_context
        stats = tracer.stats()
    assert stats.lanes[0].dropped == {}, stats
    sdk.shutdown()
    sdk_bridged.shutdown()
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
                f"  {name:16s} {medians[name]:7.0f} ns/span   "
                f"(range {min(values):.0f}-{max(values):.0f})"
            )
        print(
            f"  bridge / native  = {medians['bridge'] / medians['native']:5.2f}x  (target <= 1.5)"
        )
        print(f"  sdk / bridge     = {medians['sdk'] / medians['bridge']:5.2f}x  (target >= 5)")
        added = medians["sdk -> spanlane"] - medians["sdk"]
        print(f"  SpanProcessor direction: {added:+.0f} ns per SDK span against BatchSpanProcessor")


if __name__ == "__main__":
    main()
