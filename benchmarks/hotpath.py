"""Hot-path cost of one span, against a floor and the OpenTelemetry SDK, in one run.

Run: ``python benchmarks/hotpath.py [--spans N] [--repeat R]`` (or ``tox -e bench``).

For each backend (asyncio and trio) three producers run the same loop: N iterations, awaiting a
checkpoint every 50 so that the consumer side gets to run, then a final flush. Each is timed
end to end (loop plus flush) and the figure reported is nanoseconds per span, median over R
repetitions, interleaved so that machine noise hits all three alike:

- floor: two ``send_nowait`` of a prebuilt tuple into a bounded memory-object stream, a
  contextvar set/reset and two ``time.time_ns()`` calls; a consumer task drains the stream the
  way a good drain worker does (one await, then ``receive_nowait`` until empty).
- spanlane: ``with tracer.span("x"): pass`` with one memory lane draining in the background.
- otel: ``with tracer.start_as_current_span("x"): pass`` with the OpenTelemetry SDK's
  ``BatchSpanProcessor`` and an exporter that does nothing (skipped if the SDK is missing).

- unsampled: the spanlane loop with ``sampler=ALWAYS_OFF``: each span is a real but
  non-recording span (its own context, current inside the block), and nothing reaches the lane.
- unsampled child: the same loop under the default sampler, inside a span continuing a remote
  parent that was not sampled (``traceparent ...-00``): what a request the caller did not sample
  costs, span by span.
- tail: the spanlane loop with ``tail=TailSampling(keep_ratio=1.0)``: each span is a root, so
  the stage decides at once and forwards it; the difference from "spanlane" is the tail stage's
  own cost.

Ratios are reported against the floor and the SDK measured in the same run, and the sampling
contenders against "spanlane" (the issue's targets: an unsampled span at most 30% of a sampled
one).

``--against PATH`` adds a fourth contender: the same spanlane loop, run with the ``src/`` of
another checkout of spanlane (an earlier commit, say) in a child process, alternating with this
tree's (also in a child process, so that both pay alike); the regression check is the ratio of
the two. ``git worktree add /tmp/base <commit>`` makes such a checkout.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

import spanlane
from spanlane.exporters import MemoryExporter

CHECKPOINT_EVERY = 50
_floor_var: contextvars.ContextVar[object] = contextvars.ContextVar("floor")


class _CountingExporter(MemoryExporter):
    """A memory lane that counts instead of keeping, so repetitions do not grow memory."""

    def __init__(self) -> None:
        super().__init__(name="counting")
        self.count = 0

    async def export(self, batch: Sequence[spanlane.SpanRecord]) -> None:
        self.count += len(batch)


async def floor(n: int) -> int:
    send, receive = anyio.create_memory_object_stream[tuple[Any, ...]](2 * n + 1)
    item = ("x", 1, 2, None, 1, 0, 0)
    received = 0
    done = anyio.Event()

    async def consume() -> None:
        nonlocal received
        async with receive:
            async for _ in receive:
                received += 1
                while True:
                    try:
                        receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    received += 1
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.lowlevel.checkpoint()
        start = time.perf_counter_ns()
        for i in range(n):
            time.time_ns()
            send.send_nowait(item)
            token = _floor_var.set(item)
            _floor_var.reset(token)
            time.time_ns()
            send.send_nowait(item)
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await anyio.lowlevel.checkpoint()
        send.close()
        await done.wait()
        elapsed = time.perf_counter_ns() - start
    assert received == 2 * n, (received, n)
    return elapsed


async def spanlane_hotpath(n: int) -> int:
    exporter = _CountingExporter()
    async with spanlane.open_tracer(
        exporter, buffer_size=8192, max_batch_size=512, flush_interval=1.0
    ) as tracer:
        start = time.perf_counter_ns()
        for i in range(n):
            with tracer.span("x"):
                pass
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await anyio.lowlevel.checkpoint()
        report = await tracer.flush()
        elapsed = time.perf_counter_ns() - start
    assert report.completed, report
    assert exporter.count == n, (exporter.count, n)
    return elapsed


async def unsampled_hotpath(n: int) -> int:
    # Imported here: ``--child`` runs this file against checkouts that predate sampling.
    from spanlane.sampling import ALWAYS_OFF

    exporter = _CountingExporter()
    async with spanlane.open_tracer(exporter, sampler=ALWAYS_OFF) as tracer:
        start = time.perf_counter_ns()
        for i in range(n):
            with tracer.span("x"):
                pass
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await anyio.lowlevel.checkpoint()
        report = await tracer.flush()
        elapsed = time.perf_counter_ns() - start
    assert report.completed, report
    assert exporter.count == 0
    assert tracer.stats().spans_sampled_out == n
    return elapsed


#: A remote parent that was not sampled, as ``traceparent: 00-...-00`` says.
_REMOTE_UNSAMPLED = spanlane.SpanContext(0x1234, 0x5678, trace_flags=0, is_remote=True)


async def unsampled_child_hotpath(n: int) -> int:
    exporter = _CountingExporter()
    async with spanlane.open_tracer(exporter) as tracer:
        start = time.perf_counter_ns()
        with tracer.span("request", parent=_REMOTE_UNSAMPLED):
            for i in range(n):
                with tracer.span("x"):
                    pass
                if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    await anyio.lowlevel.checkpoint()
        report = await tracer.flush()
        elapsed = time.perf_counter_ns() - start
    assert report.completed, report
    assert exporter.count == 0
    assert tracer.stats().spans_sampled_out == n + 1
    return elapsed


async def tail_hotpath(n: int) -> int:
    from spanlane.sampling import TailSampling

    exporter = _CountingExporter()
    async with spanlane.open_tracer(
        exporter,
        buffer_size=8192,
        max_batch_size=512,
        flush_interval=1.0,
        tail=TailSampling(keep_ratio=1.0),
    ) as tracer:
        start = time.perf_counter_ns()
        for i in range(n):
            with tracer.span("x"):
                pass
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await anyio.lowlevel.checkpoint()
        report = await tracer.flush()
        elapsed = time.perf_counter_ns() - start
    assert report.completed, report
    assert exporter.count == n, (exporter.count, n)
    return elapsed


def _otel_tracer() -> tuple[Any, Any] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class NoOpExporter(SpanExporter):
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = BatchSpanProcessor(NoOpExporter(), max_queue_size=65536, max_export_batch_size=512)
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("bench")


async def otel_hotpath(n: int, provider: Any, tracer: Any) -> int:
    start = time.perf_counter_ns()
    for i in range(n):
        with tracer.start_as_current_span("x"):
            pass
        if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            await anyio.lowlevel.checkpoint()
    provider.force_flush()
    return time.perf_counter_ns() - start


def _in_child(src: str, backend: str, n: int) -> int:
    """Run the spanlane loop in a child process whose spanlane comes from ``src``."""
    env = dict(os.environ, PYTHONPATH=src)
    output = subprocess.run(
        [sys.executable, __file__, "--child", backend, str(n)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(output.split()[-1])


def measure(
    backend: str, n: int, repeat: int, against: str | None = None
) -> dict[str, list[float]]:
    otel = _otel_tracer()
    results: dict[str, list[float]] = {}
    contenders: dict[str, Callable[[], int]] = {
        "floor": lambda: anyio.run(floor, n, backend=backend),
        "spanlane": lambda: anyio.run(spanlane_hotpath, n, backend=backend),
        "unsampled": lambda: anyio.run(unsampled_hotpath, n, backend=backend),
        "unsampled child": lambda: anyio.run(unsampled_child_hotpath, n, backend=backend),
        "tail": lambda: anyio.run(tail_hotpath, n, backend=backend),
    }
    if otel is not None:
        provider, tracer = otel
        contenders["otel"] = lambda: anyio.run(otel_hotpath, n, provider, tracer, backend=backend)
    if against is not None:
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
        baseline = os.path.join(against, "src")
        contenders["this tree"] = lambda: _in_child(here, backend, n)
        contenders["baseline"] = lambda: _in_child(baseline, backend, n)
    results = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, run in contenders.items():
            gc.collect()
            results[name].append(run() / n)
    if otel is not None:
        otel[0].shutdown()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000, help="spans per repetition")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions (median is reported)")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument(
        "--against", metavar="PATH", help="a checkout of spanlane to compare this tree with"
    )
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        backend, n = args.child[0], int(args.child[1])
        print(anyio.run(spanlane_hotpath, n, backend=backend))
        return 0
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    print(f"python {sys.version.split()[0]}, spanlane {spanlane.__version__}, ")
    print(f"{args.spans} spans x {args.repeat} repetitions, median ns/span (loop + final flush)")
    for backend in backends:
        results = measure(backend, args.spans, args.repeat, args.against)
        medians = {name: statistics.median(values) for name, values in results.items()}
        print(f"\n[{backend}]")
        for name, value in medians.items():
            spread = f"{min(results[name]):.0f}-{max(results[name]):.0f}"
            print(f"  {name:<15} {value:8.0f} ns/span   (range {spread})")
        ratio_floor = medians["spanlane"] / medians["floor"]
        print(f"  spanlane / floor            = {ratio_floor:5.2f}x  (target <= 2.0)")
        for name in ("unsampled", "unsampled child"):
            share = medians[name] / medians["spanlane"]
            print(f"  {name + ' / spanlane':<27} = {share:5.2f}x  (target <= 0.30)")
        tail = medians["tail"] / medians["spanlane"]
        print(f"  tail / spanlane             = {tail:5.2f}x  (the tail stage's overhead)")
        if "otel" in medians:
            speedup = medians["otel"] / medians["spanlane"]
            print(f"  otel / spanlane             = {speedup:5.2f}x  (target >= 8.0)")
        if "baseline" in medians:
            change = medians["this tree"] / medians["baseline"]
            print(f"  this tree / baseline        = {change:5.2f}x  (target <= 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
