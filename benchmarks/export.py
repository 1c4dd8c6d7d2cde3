"""End-to-end export benchmark: spanlane's OTLPExporter against the OpenTelemetry SDK (not a test).

N spans are produced by an async program (a checkpoint every 50 spans) on asyncio and on trio
and exported over OTLP/HTTP (protobuf, gzip) to one loopback receiver running in its own process,
which only counts spans and requests. For each library and backend it reports end-to-end
spans per second (first span started to last span accepted by the receiver), HTTP requests,
drops, and event-loop lag (how late a task sleeping 1 ms wakes: p99 and max) while producing and
while draining. A third row, "baseline", runs the same spanlane program with an exporter that
discards every batch: the lag it shows is the floor (the producer, the lane, the garbage
collector, the machine) on which the OTLP exporter's own share sits. Results go to stdout;
docs/performance-export.md records them.

A fourth row, "no tracing", runs the same producer loop (building the same attribute values)
without any tracing: the loop lag of the program itself, against which the targets are set.
``--receiver-delay-ms`` makes the receiver answer each request after that long, as a remote
collector does (each request in its own thread, so concurrent requests wait concurrently).

Run: ``python benchmarks/export.py [--spans 50000] [--runs 3] [--gc-freeze]
[--receiver-delay-ms 0 50 200]``. Loopback only; every loop is bounded; the receiver process is
stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import attrs
import httpx

CHECKPOINT_EVERY = 50
MAX_BATCH_SIZE = 512
#: Attributes of every span: an HTTP server span, roughly.
ROUTE = "/api/items/{id}"


# --- the receiver (runs in a child process) ----------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _submessages(data: bytes, field: int) -> list[bytes]:
    """The length-delimited occurrences of ``field`` in a protobuf message (others skipped)."""
    found = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if key >> 3 == field:
                found.append(data[pos : pos + length])
            pos += length
        else:
            raise ValueError(f"wire type {wire}")
    return found


def count_spans(body: bytes) -> int:
    """Spans in an ExportTraceServiceRequest, without decoding the spans themselves."""
    return sum(
        len(_submessages(scope_spans, 2))
        for resource_spans in _submessages(body, 1)
        for scope_spans in _submessages(resource_spans, 2)
    )


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans = 0
        self.requests = 0
        self.delay = 0.0  # seconds each request waits before it is answered (a remote collector)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector offers
    counts = _Counts()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/reset":
            settings = json.loads(body or b"{}")
            with self.counts.lock:
                self.counts.spans = self.counts.requests = 0
                self.counts.delay = float(settings.get("delay_ms", 0.0)) / 1000
            self._reply(b"{}", "application/json")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        spans = count_spans(body)
        # Each request is served in its own thread: the delay is a round trip, and concurrent
        # requests wait concurrently, as they do against a collector.
        if self.counts.delay:
            time.sleep(self.counts.delay)
        with self.counts.lock:
            self.counts.spans += spans
            self.counts.requests += 1
        self._reply(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        with self.counts.lock:
            stats = {"spans": self.counts.spans, "requests": self.counts.requests}
        self._reply(json.dumps(stats).encode(), "application/json")


def serve_receiver(port: int = 0) -> None:
    """Child process: serve on a loopback port (a free one by default), print it, stop when
    stdin closes."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # returns when the parent closes our stdin
    server.shutdown()


# --- measuring --------------------------------------------------------------------------------


@attrs.define
class Result:
    library: str
    backend: str
    spans: int
    seconds: float
    requests: int
    received: int
    drops: int
    lag: dict[str, list[float]]

    @property
    def rate(self) -> float:
        return self.spans / self.seconds

    def lag_figures(self, phase: str) -> tuple[float, float]:
        samples = sorted(self.lag[phase]) or [0.0]
        p99 = samples[min(len(samples) - 1, math.ceil(len(samples) * 0.99) - 1)]
        return p99 * 1e3, samples[-1] * 1e3


class LagProbe:
    """A task that sleeps 1 ms in a loop and records how late it wakes, per phase."""

    def __init__(self) -> None:
        self.phase = "producing"
        self.samples: dict[str, list[float]] = {"producing": [], "draining": []}
        self.stopped = False

    async def run(self) -> None:
        for _ in range(10_000_000):  # bounded: ~3 hours of 1 ms sleeps
            if self.stopped:
                return
            phase = self.phase
            start = time.perf_counter()
            await anyio.sleep(0.001)
            self.samples[phase].append(max(time.perf_counter() - start - 0.001, 0.0))


def attributes(i: int) -> dict[str, Any]:
    return {
        "http.request.method": "GET",
        "http.route": ROUTE,
        "url.path": f"/api/items/{i % 1000}",
        "http.response.status_code": 200,
        "user.id": i % 100,
    }


Producer = Callable[[], Awaitable[Callable[[], Awaitable[int]]]]


async def measure(setup: Callable[[], Producer]) -> tuple[float, int, dict[str, list[float]]]:
    """Time one run with a lag probe.

    ``setup()`` builds the library's objects (not timed: exporters and providers are built at
    start-up in real programs) and returns ``produce``; ``produce()`` makes the spans and
    returns ``drain``; ``drain()`` waits until everything is exported and returns the drops.
    """
    produce = setup()
    probe = LagProbe()
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await anyio.sleep(0.01)
        start = time.perf_counter()
        drain = await produce()
        probe.phase = "draining"
        drops = await drain()
        seconds = time.perf_counter() - start
        probe.stopped = True
    return seconds, drops, probe.samples


class DiscardingExporter:
    """The baseline: spanlane with an exporter that accepts every batch and sends nothing."""

    async def export(self, batch: object) -> int:
        return 0


async def run_spanlane(url: str, spans: int) -> tuple[float, int, dict[str, list[float]]]:
    from spanlane.exporters.otlp import OTLPExporter

    return await _run_spanlane(OTLPExporter(url, compression="gzip"), spans)


async def run_baseline(url: str, spans: int) -> tuple[float, int, dict[str, list[float]]]:
    return await _run_spanlane(DiscardingExporter(), spans)


async def _run_spanlane(exporter: Any, spans: int) -> tuple[float, int, dict[str, list[float]]]:
    import spanlane

    def setup() -> Producer:
        tracer = spanlane.open_tracer(
            exporter,
            service_name="bench",
            buffer_size=65_536,
            max_batch_size=MAX_BATCH_SIZE,
            flush_interval=5.0,
            drain_timeout=60.0,
            export_timeout=60.0,
        )

        async def produce() -> Callable[[], Awaitable[int]]:
            await tracer.__aenter__()
            for i in range(spans):
                with tracer.span("GET /api/items/{id}", kind=spanlane.SpanKind.SERVER) as span:
                    for key, value in attributes(i).items():
                        span.set_attribute(key, value)
                if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    await anyio.lowlevel.checkpoint()

            async def drain() -> int:
                await tracer.__aexit__(None, None, None)
                lane = tracer.stats().lanes[0]
                if isinstance(exporter, DiscardingExporter):
                    return -lane.exported  # tells one_run that nothing was meant to arrive
                HIGH_WATER.append(lane.high_water)
                return lane.dropped_total

            return drain

        return produce

    return await measure(setup)


async def run_otel(url: str, spans: int) -> tuple[float, int, dict[str, list[float]]]:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    def setup() -> Producer:
        provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
        processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=url, compression=Compression.Gzip),
            max_queue_size=65_536,
            max_export_batch_size=MAX_BATCH_SIZE,
            schedule_delay_millis=5000,
        )
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("bench")

        async def produce() -> Callable[[], Awaitable[int]]:
            for i in range(spans):
                with tracer.start_as_current_span(
                    "GET /api/items/{id}", kind=SpanKind.SERVER
                ) as span:
                    for key, value in attributes(i).items():
                        span.set_attribute(key, value)
                if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    await anyio.lowlevel.checkpoint()

            async def drain() -> int:
                # force_flush blocks its caller: run it in a thread so the probe keeps ticking.
                await anyio.to_thread.run_sync(provider.force_flush, 120_000)
                await anyio.to_thread.run_sync(provider.shutdown)
                return 0  # the SDK does not count drops; the receiver's count shows them

            return drain

        return produce

    return await measure(setup)


async def run_no_tracing(url: str, spans: int) -> tuple[float, int, dict[str, list[float]]]:
    """The same program without tracing: the loop lag it shows is the machine's floor."""

    def setup() -> Producer:
        async def produce() -> Callable[[], Awaitable[int]]:
            sink: list[dict[str, Any]] = []
            for i in range(spans):
                sink.append(attributes(i))  # the work a span's attributes cost the caller
                if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    await anyio.lowlevel.checkpoint()
                    sink.clear()

            async def drain() -> int:
                return -spans

            return drain

        return produce

    return await measure(setup)


#: The spanlane lane's high-water mark (records queued at most) per run, for the report.
HIGH_WATER: list[int] = []

RUNNERS = {
    "spanlane": run_spanlane,
    "otel-sdk": run_otel,
    "baseline": run_baseline,
    "no tracing": run_no_tracing,
}


def one_run(
    library: str,
    backend: str,
    port: int,
    spans: int,
    control: httpx.Client,
    delay_ms: float = 0.0,
) -> Result:
    control.post("/reset", json={"delay_ms": delay_ms})
    url = f"http://127.0.0.1:{port}/v1/traces"
    seconds, drops, lag = anyio.run(RUNNERS[library], url, spans, backend=backend)
    counts = control.get("/stats").json()
    if drops < 0:  # the baseline: -drops records went through the lane, none to the receiver
        drops, counts = spans + drops, {"spans": 0, "requests": 0}
        return Result(library, backend, spans, seconds, 0, 0, drops, lag)
    missing = spans - counts["spans"]
    return Result(
        library,
        backend,
        spans,
        seconds,
        counts["requests"],
        counts["spans"],
        max(drops, missing),
        lag,
    )


def report(results: list[Result], spans: int, delay_ms: float = 0.0) -> None:
    expected_requests = math.ceil(spans / MAX_BATCH_SIZE)
    print(
        f"\nN = {spans} spans, max_batch_size = {MAX_BATCH_SIZE}, receiver delay {delay_ms:g} ms, "
        f"expected requests = {expected_requests}; medians over runs (lag max: worst run)\n"
    )
    header = (
        f"{'library':10} {'backend':8} {'spans/s':>9} {'requests':>8} {'drops':>6} "
        f"{'prod p99':>8} {'prod max':>8} {'drain p99':>9} {'drain max':>9}"
    )
    print(header)
    print("-" * len(header))
    medians: dict[tuple[str, str], float] = {}
    for backend in ("asyncio", "trio"):
        for library in RUNNERS:
            runs = [r for r in results if r.library == library and r.backend == backend]
            if not runs:
                continue
            rate = statistics.median(r.rate for r in runs)
            medians[library, backend] = rate
            requests = statistics.median(r.requests for r in runs)
            drops = max(r.drops for r in runs)
            prod = [r.lag_figures("producing") for r in runs]
            drain = [r.lag_figures("draining") for r in runs]
            print(
                f"{library:10} {backend:8} {rate:9.0f} {requests:8.0f} {drops:6d} "
                f"{statistics.median(p for p, _ in prod):8.2f} {max(m for _, m in prod):8.2f} "
                f"{statistics.median(p for p, _ in drain):9.2f} {max(m for _, m in drain):9.2f}"
            )
    print()
    for backend in ("asyncio", "trio"):
        if ("spanlane", backend) in medians and ("otel-sdk", backend) in medians:
            ratio = medians["spanlane", backend] / medians["otel-sdk", backend]
            print(f"{backend}: spanlane / OTel SDK spans/s = {ratio:.2f}x")
        if ("spanlane", backend) in medians and ("no tracing", backend) in medians:
            for phase in ("producing", "draining"):
                mine = [
                    r.lag_figures(phase)
                    for r in results
                    if r.library == "spanlane" and r.backend == backend
                ]
                floor = [
                    r.lag_figures(phase)
                    for r in results
                    if r.library == "no tracing" and r.backend == backend
                ]
                if not floor[0][1] and phase == "draining":
                    continue
                print(
                    f"{backend} {phase}: lag p99 {statistics.median(p for p, _ in mine):.2f} ms "
                    f"vs {statistics.median(p for p, _ in floor):.2f} ms without tracing "
                    f"(target: within 2 ms); max {max(m for _, m in mine):.2f} ms vs "
                    f"{max(m for _, m in floor):.2f} ms (target: within 5 ms)"
                )
    print("\nlag in milliseconds; per-run figures:")
    for r in results:
        print(
            f"  {r.library:10} {r.backend:8} {r.rate:9.0f}/s {r.seconds:6.2f} s "
            f"requests={r.requests} received={r.received} drops={r.drops} "
            f"prod p99/max={r.lag_figures('producing')[0]:.2f}/{r.lag_figures('producing')[1]:.2f} "
            f"drain p99/max={r.lag_figures('draining')[0]:.2f}/{r.lag_figures('draining')[1]:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--slice-ms",
        type=float,
        default=None,
        help="override how long spanlane's encoding may hold the loop, for experiments",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after start-up, so full collections skip the start-up heap",
    )
    parser.add_argument(
        "--receiver-delay-ms",
        type=float,
        nargs="+",
        default=[0.0],
        help="how long the receiver takes to answer each request (a remote collector's round "
        "trip); several values run one table each",
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=list(RUNNERS),
        choices=list(RUNNERS),
        help="which programs to run",
    )
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.slice_ms is not None:
        from spanlane.exporters import _otlp_encode

        _otlp_encode.SLICE_SECONDS = args.slice_ms / 1000
    if args.receiver:
        serve_receiver(args.port)
        return
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--receiver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        libraries = [name for name in RUNNERS if name in args.libraries]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as control:
            for backend in ("asyncio", "trio"):
                for library in libraries:  # warm-up: imports, first connections
                    one_run(library, backend, port, 2_000, control)
            if args.gc_freeze:
                gc.collect()
                gc.freeze()
            for delay_ms in args.receiver_delay_ms:
                results = []
                for run in range(args.runs):
                    for backend in ("asyncio", "trio"):
                        for library in libraries:
                            result = one_run(library, backend, port, args.spans, control, delay_ms)
                            extra = (
                                f", lane high water {HIGH_WATER[-1]}"
                                if library == "spanlane"
                                else ""
                            )
                            print(
                                f"delay {delay_ms:g} ms run {run + 1} {library} {backend}: "
                                f"{result.rate:.0f} spans/s{extra}",
                                flush=True,
                            )
                            results.append(result)
                report(results, args.spans, delay_ms)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
