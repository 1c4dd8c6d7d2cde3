"""The outage run: the receiver is stopped for 60 s in the middle of a steady 100 spans/s run
(not a test), spanlane with default settings against the OpenTelemetry SDK in the same run.

Two OTLP/HTTP receivers (``benchmarks/export.py --receiver``, in child processes on 127.0.0.1),
one for each library, count what they are sent. Both programs run in one asyncio event loop and
make 100 spans a second each (a span every 10 ms). After ``--up`` seconds both receivers are
killed (connections are refused from then on, and connections held open are reset), after
``--down`` more seconds they are started again on the same ports, and after ``--after`` more
seconds the programs stop making spans, flush and close. A span is lost if its receiver never
counted it.

spanlane runs with its defaults (``OTLPExporter(url)``, default lane options and retry policy)
except ``buffer_size``, which is set to hold the backlog (the issue's condition: "a buffer that
holds the backlog"); the SDK with its defaults (``BatchSpanProcessor(OTLPSpanExporter(url))``)
and the same ``max_queue_size``.

Run: ``python benchmarks/outage.py [--rate 100] [--up 20] [--down 60] [--after 40]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx

EXPORT_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export.py")


class Receiver:
    """A counting receiver in a child process that can be stopped and started on one port."""

    def __init__(self) -> None:
        self.port = 0
        self.counted = 0  # spans counted by receivers already stopped
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, EXPORT_BENCH, "--receiver", "--port", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def spans(self) -> int:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10.0) as control:
            return int(control.get("/stats").json()["spans"])

    def stop(self) -> None:
        assert self.process is not None
        self.counted += self.spans()
        self.process.kill()
        self.process.wait()
        self.process = None

    def total(self) -> int:
        return self.counted + (self.spans() if self.process is not None else 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import spanlane
    from spanlane.exporters.otlp import OTLPExporter

    mine, theirs = Receiver(), Receiver()
    mine.start()
    theirs.start()
    queue = int(args.rate * (args.down + 30) * 1.5)
    provider = TracerProvider()
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=theirs.url), max_queue_size=queue)
    provider.add_span_processor(processor)
    otel = provider.get_tracer("outage")
    made = 0
    timeline: list[str] = []
    started = time.monotonic()
    async with spanlane.open_tracer(OTLPExporter(mine.url), buffer_size=queue) as tracer:

        async def produce(seconds: float) -> None:
            nonlocal made
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with tracer.span("tick", attributes={"i": made}):
                    pass
                with otel.start_as_current_span("tick") as span:
                    span.set_attribute("i", made)
                made += 1
                await anyio.sleep(1 / args.rate)

        await produce(args.up)
        mine.stop()
        theirs.stop()
        timeline.append(f"{time.monotonic() - started:.0f} s: receivers stopped")
        await produce(args.down)
        lane = tracer.stats().lanes[0]
        timeline.append(
            f"{time.monotonic() - started:.0f} s: receivers started again; spanlane lane: "
            f"queued {lane.queued}, in flight {lane.in_flight}, retries {lane.retries}, "
            f"dropped {dict(lane.dropped)}"
        )
        mine.start()
        theirs.start()
        await produce(args.after)
        report = await tracer.flush(timeout=120)
        timeline.append(
            f"{time.monotonic() - started:.0f} s: spanlane flushed (completed: {report.completed})"
        )
    await anyio.to_thread.run_sync(provider.force_flush, 120_000)
    await anyio.to_thread.run_sync(provider.shutdown)
    timeline.append(f"{time.monotonic() - started:.0f} s: the SDK flushed and shut down")
    result = {
        "made": made,
        "spanlane": mine.total(),
        "otel": theirs.total(),
        "stats": str(tracer.stats().lanes[0]),
        "timeline": timeline,
    }
    mine.stop()
    theirs.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="spans per second")
    parser.add_argument("--up", type=float, default=20.0, help="seconds before the outage")
    parser.add_argument("--down", type=float, default=60.0, help="seconds of outage")
    parser.add_argument("--after", type=float, default=40.0, help="seconds after the outage")
    args = parser.parse_args()
    result = anyio.run(main_async, args, backend="asyncio")
    for line in result["timeline"]:
        print(line)
    made = result["made"]
    print(f"\nspans made by each library: {made}")
    for name in ("spanlane", "otel"):
        lost = made - result[name]
        print(f"{name:8}: receiver counted {result[name]}, lost {lost} ({lost / made:.1%})")
    print(f"spanlane lane: {result['stats']}")


if __name__ == "__main__":
    main()
