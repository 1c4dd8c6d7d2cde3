"""How long leaving the tracer takes with a hung exporter and many spans never ended.

Run: ``python benchmarks/exit.py [--drain-timeout S] [--open N ...]`` (or ``tox -e bench``).

For each backend and each count of open spans: an exporter that never returns (its first export
hangs, and so does ``aclose()``), ``drain_timeout`` seconds, and that many spans started and
never ended (held by the program, so they stay open). The figure is the wall time from leaving
the body to leaving ``async with open_tracer(...)``, against the bound ``drain_timeout + 1.5 s``
(core v2: the first version took 4 s with 30k open spans and 10-12 s with 100k, for
``drain_timeout=2``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import anyio

import spanlane
from spanlane.exporters import MemoryExporter
from spanlane.testing import Fault, FaultyExporter


async def leave(open_spans: int, drain_timeout: float) -> tuple[float, spanlane.Stats]:
    hung = FaultyExporter(MemoryExporter(), lambda call, batch: Fault.hang(), hang_on_close=True)
    async with spanlane.open_tracer(hung, drain_timeout=drain_timeout) as tracer:
        with tracer.span("exported first"):
            pass
        held = [tracer.start_span("never ended") for _ in range(open_spans)]
        left_body = time.perf_counter()
    elapsed = time.perf_counter() - left_body
    del held
    return elapsed, tracer.stats()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain-timeout", type=float, default=2.0)
    parser.add_argument("--open", type=int, nargs="+", default=[0, 30_000, 100_000, 1_000_000])
    args = parser.parse_args(argv)
    bound = args.drain_timeout + 1.5
    print(f"drain_timeout={args.drain_timeout} s, bound {bound} s")
    for backend in ("asyncio", "trio"):
        print(f"\n[{backend}]")
        for count in args.open:
            elapsed, stats = anyio.run(leave, count, args.drain_timeout, backend=backend)
            lane = stats.lanes[0]
            verdict = "met" if elapsed <= bound else "MISSED"
            print(
                f"  {count:>9,} open spans: left in {elapsed:5.2f} s ({verdict}); "
                f"ended {stats.spans_ended:,}, balanced {lane.balanced}, "
                f"dropped { ({reason.value: n for reason, n in lane.dropped.items()}) }"
            )


if __name__ == "__main__":
    main()
