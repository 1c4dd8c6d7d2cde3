"""Instructions per span on the hot path, counted by valgrind's callgrind (not a test).

Timing on a shared machine spreads by up to 2x between runs; an instruction count does not.
This runs one program twice under ``valgrind --tool=callgrind``: N spans (``with
tracer.span("x")`` on one lane whose exporter counts and discards, a checkpoint every 50, a
final flush) and zero spans, subtracts the two totals and divides by N, so that start-up,
imports and the tracer's own life cancel out.

Run: ``python benchmarks/instructions.py [--spans 5000] [--backend asyncio] [--against PATH]``
(``--against`` counts another checkout's ``src/`` the same way, for a regression check).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

PROGRAM = """
import sys, anyio, anyio.lowlevel, spanlane
class Counting:
    count = 0
    async def export(self, batch):
        Counting.count += len(batch)
async def main(n):
    async with spanlane.open_tracer(Counting(), buffer_size=8192, max_batch_size=512) as tracer:
        for i in range(n):
            with tracer.span("x"):
                pass
            if i % 50 == 49:
                await anyio.lowlevel.checkpoint()
        await tracer.flush()
    assert Counting.count == n
anyio.run(main, int(sys.argv[1]), backend=sys.argv[2])
"""


def instructions(src: str, spans: int, backend: str) -> int:
    """Total instructions of the program run with ``spans`` spans and spanlane from ``src``."""
    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            PROGRAM,
            str(spans),
            backend,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(result.stderr[-2000:])
    return int(match.group(1))


def per_span(src: str, spans: int, backend: str) -> float:
    return (instructions(src, spans, backend) - instructions(src, 0, backend)) / spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=5000)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--against", metavar="PATH", help="another checkout to compare with")
    args = parser.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    mine = per_span(here, args.spans, args.backend)
    print(f"this tree: {mine:,.0f} instructions per span ({args.backend}, {args.spans} spans)")
    if args.against:
        theirs = per_span(os.path.join(args.against, "src"), args.spans, args.backend)
        print(f"baseline:  {theirs:,.0f} instructions per span")
        print(f"this tree / baseline = {mine / theirs:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
