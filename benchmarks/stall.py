"""How long exporting one pathological span holds the event loop (not a test), spanlane
against the OpenTelemetry SDK in the same run.

Each case makes one span that is expensive to export: a 100 MB string attribute, a
1,000,000-element list attribute, or 10,000 events. A task that sleeps 1 ms in a loop records
how late it wakes while the span is exported over OTLP/HTTP (protobuf, gzip) to a counting
receiver on 127.0.0.1 (``benchmarks/export.py --receiver``), from the moment the span has
ended until the receiver has it. Making the span (the caller's ``set_attribute`` of a million
elements, say) is the caller's own work and is timed separately. Target: the export never holds
the loop more than 20 ms.

Run: ``python benchmarks/stall.py [--cases string list events] [--backends asyncio trio]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx

EXPORT_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export.py")
CASES = ("string", "list", "events")


def fill(span: Any, case: str) -> None:
    """Make ``span`` pathological (the same calls for both libraries)."""
    if case == "string":
        span.set_attribute("llm.prompt", "p" * 100_000_000)
    elif case == "list":
        span.set_attribute("ids", list(range(1_000_000)))
    else:
        for i in range(10_000):
            span.add_event("retry", {"attempt": i})


class Probe:
    def __init__(self) -> None:
        self.worst = 0.0
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            start = time.perf_counter()
            await anyio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - start - 0.001)


async def measure(
    make: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
    control: httpx.AsyncClient,
    patience: float = 60.0,
) -> tuple[float, float, float]:
    """``(seconds to make the span, worst loop lag while exporting in ms, seconds to export)``."""
    probe = Probe()
    async with anyio.create_task_group() as group:
        start = time.perf_counter()
        finish = await make()
        made = time.perf_counter() - start
        group.start_soon(probe.run)
        await anyio.sleep(0.005)
        probe.worst = 0.0
        start = time.perf_counter()
        await finish()
        with anyio.move_on_after(patience):  # until the receiver has it
            while (await control.get("/stats")).json()["spans"] < 1:
                await anyio.sleep(0.001)
        exported = time.perf_counter() - start
        if (await control.get("/stats")).json()["spans"] < 1:
            exported = float("nan")  # never arrived (the SDK drops a span over 64 MB)
        probe.stopped = True
    return made, probe.worst * 1e3, exported


async def spanlane_case(url: str, case: str, control: httpx.AsyncClient) -> tuple[float, ...]:
    import spanlane
    from spanlane.exporters.otlp import OTLPExporter

    tracer = spanlane.open_tracer(
        OTLPExporter(url, timeout=120.0),
        export_timeout=120.0,
        drain_timeout=120.0,
        limits=spanlane.SpanLimits(max_events=20_000),
    )
    async with tracer:

        async def make() -> Callable[[], Awaitable[None]]:
            with tracer.span("pathological") as span:
                fill(span, case)

            async def finish() -> None:
                await tracer.flush()

            return finish

        return await measure(make, control)


async def otel_case(url: str, case: str, control: httpx.AsyncClient) -> tuple[float, ...]:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(span_limits=SpanLimits(max_events=20_000))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=url, compression=Compression.Gzip, timeout=120)
        )
    )
    tracer = provider.get_tracer("stall")

    async def make() -> Callable[[], Awaitable[None]]:
        with tracer.start_as_current_span("pathological") as span:
            fill(span, case)

        async def finish() -> None:
            # force_flush blocks its caller: a thread, so that the probe keeps running.
            await anyio.to_thread.run_sync(provider.force_flush, 120_000)

        return finish

    try:
        # force_flush returns once the SDK has tried; what it dropped never arrives.
        return await measure(make, control, patience=5.0)
    finally:
        await anyio.to_thread.run_sync(provider.shutdown, abandon_on_cancel=True)


async def one(library: str, port: int, case: str) -> tuple[float, ...]:
    url = f"http://127.0.0.1:{port}/v1/traces"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as control:
        await control.post("/reset", json={})
        runner = spanlane_case if library == "spanlane" else otel_case
        return await runner(url, case, control)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument("--libraries", nargs="+", default=["spanlane", "otel-sdk"])
    args = parser.parse_args()
    child = subprocess.Popen(
        [sys.executable, EXPORT_BENCH, "--receiver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        print(
            f"{'library':9} {'backend':8} {'case':7} {'make s':>7} {'worst lag ms':>12} "
            f"{'export s':>8}"
        )
        for case in args.cases:
            for backend in args.backends:
                for library in args.libraries:
                    made, worst, exported = anyio.run(one, library, port, case, backend=backend)
                    print(
                        f"{library:9} {backend:8} {case:7} {made:7.2f} {worst:12.1f} "
                        f"{exported:8.2f}",
                        flush=True,
                    )
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
