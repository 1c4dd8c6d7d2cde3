"""The demo: a small simulated service traced end to end, then a table of what happened."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import anyio
import anyio.lowlevel
import attrs

from ._records import SpanKind, SpanRecord, StatusCode
from ._retry import RetryPolicy
from ._stats import DropReason, Stats
from ._tracer import Tracer, open_tracer
from .exporters import ConsoleExporter, JSONLinesExporter
from .exporters._base import Exporter
from .testing import Fault, FaultyExporter


@attrs.frozen
class DemoOptions:
    """The demo's knobs (see ``python -m spanlane demo --help``)."""

    backend: str = "asyncio"
    requests: int = 200
    concurrency: int = 20
    fail_rate: float = 0.1
    export_fail_rate: float = 0.05
    out: str = "spanlane-demo.jsonl"
    otlp: str | None = None
    seed: int | None = None
    latency_scale: float = 1.0


#: Traces the demo's console lane prints; it takes (and counts as exported) every other span too.
CONSOLE_TRACES = 1
#: Positions of the file lane and the console lane among the demo's lanes (see _exporters).
FILE_LANE, CONSOLE_LANE = 0, 1


class DownstreamError(Exception):
    """A simulated failure of the downstream service."""


class _Progress:
    """Prints a progress line at most once a second, on one line when the stream is a terminal."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()
        self._tty = stream.isatty()

    async def run(self, tracer: Tracer) -> None:
        while True:
            await anyio.sleep(1.0)
            self.show(tracer)

    def show(self, tracer: Tracer, final: bool = False) -> None:
        stats = tracer.stats()
        exported = min(lane.exported for lane in stats.lanes)
        elapsed = time.monotonic() - self.started
        line = (
            f"[demo] {self.done}/{self.total} requests, {stats.spans_ended} spans ended, "
            f"{exported} exported, {elapsed:.1f} s"
        )
        if self._tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


async def _handle(tracer: Tracer, index: int, options: DemoOptions, rng: random.Random) -> None:
    scale = options.latency_scale
    with tracer.span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "GET", "url.path": f"/orders/{index}"},
    ) as handler:
        with tracer.span(
            "SELECT orders", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        ) as query:
            await anyio.sleep(rng.uniform(0.001, 0.005) * scale)
            query.set_attribute("db.response.returned_rows", rng.randint(0, 20))
        try:
            async with tracer.span(
                "POST inventory/reserve",
                kind=SpanKind.CLIENT,
                attributes={"server.address": "inventory.internal"},
            ) as call:
                await anyio.sleep(rng.uniform(0.002, 0.010) * scale)
                if rng.random() < options.fail_rate:
                    call.set_attribute("http.response.status_code", 503)
                    raise DownstreamError("inventory service unavailable")
                call.set_attribute("http.response.status_code", 200)
        except DownstreamError:
            handler.set_attribute("http.response.status_code", 502)
            handler.set_status(StatusCode.ERROR, "downstream failed")
        else:
            with tracer.span("render"):
                await anyio.lowlevel.checkpoint()
            handler.set_attribute("http.response.status_code", 200)


def _exporters(options: DemoOptions, rng: random.Random) -> list[Exporter]:
    jsonl_file = JSONLinesExporter(options.out)
    jsonl: Exporter = jsonl_file
    if options.export_fail_rate > 0:
        # Simulated hiccups of the file lane, to show retries at work; a retried batch is
        # written once, whole and in order.
        rate = options.export_fail_rate

        def hiccup(call: int, batch: Sequence[SpanRecord]) -> Fault | None:
            return Fault.transient() if rng.random() < rate else None

        flaky = FaultyExporter(jsonl, hiccup)
        flaky.name = jsonl_file.name
        jsonl = flaky
    # print_summary finds the lanes by these positions.
    exporters: list[Exporter] = [jsonl, ConsoleExporter(max_traces=CONSOLE_TRACES)]
    if options.otlp:
        from .exporters.otlp import OTLPExporter

        exporters.append(OTLPExporter(options.otlp))
    return exporters


async def measure_hot_path(spans: int = 20_000) -> float:
    """Nanoseconds per ``with tracer.span("x"): pass``, drain included, on a lane of its own."""

    class _Discard:
        name = "discard"

        async def export(self, batch: Sequence[SpanRecord]) -> None:
            return None

    async with open_tracer(_Discard(), buffer_size=4096, max_batch_size=512) as tracer:
        start = time.perf_counter_ns()
        for index in range(spans):
            with tracer.span("x"):
                pass
            if index % 50 == 49:
                await anyio.lowlevel.checkpoint()
        await tracer.flush()
        elapsed = time.perf_counter_ns() - start
    return elapsed / spans


async def run_demo(options: DemoOptions, stream: TextIO | None = None) -> Stats:
    """Run the simulated service and print the summary table; return the tracer's stats."""
    stream = sys.stdout if stream is None else stream
    rng = random.Random(options.seed)
    limiter = anyio.CapacityLimiter(options.concurrency)
    progress = _Progress(options.requests, sys.stderr)
    started = time.monotonic()

    async def one(index: int) -> None:
        async with limiter:
            await _handle(tracer, index, options, rng)
        progress.done += 1

    async with open_tracer(
        *_exporters(options, rng),
        service_name="spanlane-demo",
        # Under a saturated event loop every await of an export costs a full loop iteration
        # (tens of ms with hundreds of busy tasks), so big batches are what keeps a lane up.
        buffer_size=16384,
        max_batch_size=2048,
        flush_interval=0.2,
        drain_timeout=10.0,
        retry=RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.2),
    ) as tracer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(progress.run, tracer)
            async with anyio.create_task_group() as requests:
                for index in range(options.requests):
                    requests.start_soon(one, index)
            tg.cancel_scope.cancel()
        await tracer.flush(timeout=10.0)
    elapsed = time.monotonic() - started
    if elapsed >= 1.0:
        progress.show(tracer, final=True)
    stats = tracer.stats()
    hot_path_ns = await measure_hot_path()
    print_summary(stats, options, elapsed, hot_path_ns, stream)
    return stats


def print_summary(
    stats: Stats, options: DemoOptions, elapsed: float, hot_path_ns: float, stream: TextIO
) -> None:
    """Print the closing table: one row per lane, then the hot-path cost and where spans went."""
    reasons = [
        reason for reason in DropReason if any(lane.dropped.get(reason) for lane in stats.lanes)
    ]
    header = ["lane", "offered", "exported", "batches", "retries"] + [
        f"dropped:{reason.value}" for reason in reasons
    ]
    rows = [
        [
            lane.exporter + (" *" if index == CONSOLE_LANE else ""),
            str(lane.offered),
            str(lane.exported),
            str(lane.batches),
            str(lane.retries),
            *(str(lane.dropped.get(reason, 0)) for reason in reasons),
        ]
        for index, lane in enumerate(stats.lanes)
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    write = stream.write
    write(
        f"\nspanlane demo on {options.backend}: {options.requests} requests, "
        f"concurrency {options.concurrency}, {elapsed:.2f} s\n"
    )
    write(f"spans started {stats.spans_started}, ended {stats.spans_ended}\n\n")
    write(line(header) + "\n")
    write(line(["-" * w for w in widths]) + "\n")
    for row in rows:
        write(line(row) + "\n")
    first = "trace" if CONSOLE_TRACES == 1 else f"{CONSOLE_TRACES} traces"
    write(
        "* the console lane counts every span it is handed as exported, "
        f"but prints only the first {first}\n"
    )
    total_dropped = sum(stats.dropped.values())
    write(f"\ndropped in all: {total_dropped}")
    write(" (every drop is counted by reason above)\n" if total_dropped else "\n")
    write(
        f"hot-path cost: {hot_path_ns / 1000:.2f} µs per span "
        "(`with tracer.span(...)`, drain included)\n"
    )
    file_lane = stats.lanes[FILE_LANE]
    if file_lane.exported == file_lane.offered:
        write(f"spans written to {options.out}\n")
    elif file_lane.exported:
        write(f"{file_lane.exported} of {file_lane.offered} spans written to {options.out}\n")
    else:
        write(f"no span written to {options.out}\n")


def export_failures(stats: Stats) -> list[str]:
    """One sentence per lane that was offered records and exported none of them.

    Args:
        stats: the tracer's statistics after the demo.

    Returns:
        For each such lane: its name, how many records it lost and why, e.g.
        ``"lane JSONLinesExporter(x.jsonl) exported none of its 79 records (79 export_failed)"``.
        Empty when every lane exported something.
    """
    failures = []
    for lane in stats.lanes:
        if lane.offered and not lane.exported:
            reasons = ", ".join(
                f"{count} {reason.value}" for reason, count in lane.dropped.items() if count
            )
            failures.append(
                f"lane {lane.exporter} exported none of its {lane.offered} records"
                + (f" ({reasons})" if reasons else "")
            )
    return failures


def demo_main(options: DemoOptions) -> int:
    """Run the demo on the chosen backend and report any lane that exported nothing.

    Args:
        options: the demo's knobs.

    Returns:
        The process exit status: 0, or 1 when a lane was offered records and exported none of
        them (each such lane is named on standard error with its drops by reason).

    Raises:
        ValueError: for an option out of range.
    """
    if options.requests < 0 or options.concurrency < 1:
        raise ValueError("--requests must be >= 0 and --concurrency >= 1")
    if not (0.0 <= options.fail_rate <= 1.0) or not math.isfinite(options.fail_rate):
        raise ValueError("--fail-rate must be between 0 and 1")
    stats = anyio.run(run_demo, options, backend=options.backend)
    failures = export_failures(stats)
    for failure in failures:
        print(f"spanlane demo: {failure}", file=sys.stderr)
    return 1 if failures else 0
