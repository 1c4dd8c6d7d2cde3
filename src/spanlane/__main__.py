"""``python -m spanlane``: the command line (``demo`` runs the simulated service)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spanlane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="trace a simulated service and print what happened",
        description="Run a small simulated service under spanlane: concurrent requests, each a "
        "tree of spans with simulated latency and failures, exported to a JSON-lines file and "
        "(the first trace) to the console; then a table of what each lane did.",
    )
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    demo.add_argument("--requests", type=int, default=200, metavar="N", help="requests to run")
    demo.add_argument(
        "--concurrency", type=int, default=20, metavar="C", help="requests in flight at once"
    )
    demo.add_argument(
        "--fail-rate",
        type=float,
        default=0.1,
        metavar="P",
        help="probability that a request's downstream call fails (0-1)",
    )
    demo.add_argument(
        "--export-fail-rate",
        type=float,
        default=0.05,
        metavar="P",
        help="probability of a simulated transient failure per export of the file lane (0-1)",
    )
    demo.add_argument(
        "--out", default="spanlane-demo.jsonl", metavar="PATH", help="JSON-lines file to append to"
    )
    demo.add_argument(
        "--otlp", default=None, metavar="URL", help="also export to this OTLP/HTTP endpoint"
    )
    demo.add_argument("--seed", type=int, default=None, help="seed for the simulation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m spanlane`` and the ``spanlane`` script."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import DemoOptions, demo_main

        if args.backend == "trio":
            try:
                import trio  # noqa: F401
            except ImportError:
                print("the trio backend needs trio: pip install 'spanlane[trio]'", file=sys.stderr)
                return 2
        try:
            return demo_main(
                DemoOptions(
                    backend=args.backend,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    fail_rate=args.fail_rate,
                    export_fail_rate=args.export_fail_rate,
                    out=args.out,
                    otlp=args.otlp,
                    seed=args.seed,
                )
            )
        except ValueError as exc:
            print(f"python -m spanlane demo: {exc}", file=sys.stderr)
            return 2
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
