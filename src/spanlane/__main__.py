"""``python -m spanlane`` and the ``spanlane`` script: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._version import __version__

#: The parser's description: plain text, as ``--help`` prints it verbatim.
DESCRIPTION = "spanlane: tracing for async Python with structured concurrency."


def program_name(argv0: str) -> str:
    """How the user started the command line, for ``--help`` and error messages.

    Args:
        argv0: ``sys.argv[0]``: the ``spanlane`` script's path, or this module's path when run
            as ``python -m spanlane``.

    Returns:
        ``"spanlane"`` for the console script (``spanlane.exe`` on Windows), otherwise
        ``"python -m spanlane"``.
    """
    stem, _ = os.path.splitext(os.path.basename(argv0))
    return "spanlane" if stem == "spanlane" else "python -m spanlane"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"spanlane {__version__}")
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


def _missing_extra(args: argparse.Namespace) -> str | None:
    """Why the demo cannot run as asked for want of an optional dependency, or None."""
    if args.backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            return 'the trio backend needs trio: pip install "spanlane[trio]"'
    if args.otlp:
        try:
            from .exporters.otlp import OTLPExporter  # noqa: F401
        except ModuleNotFoundError as exc:
            return f"--otlp: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m spanlane`` and the ``spanlane`` script.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status: 0 on success, 1 when the demo ran but a lane exported none of its
        records, 2 for a usage error or a missing optional dependency.
    """
    prog = program_name(sys.argv[0] if sys.argv and sys.argv[0] else "")
    args = _parser(prog).parse_args(argv)
    if args.command == "demo":
        from ._demo import DemoOptions, demo_main

        missing = _missing_extra(args)
        if missing is not None:
            print(f"{prog} demo: {missing}", file=sys.stderr)
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
            print(f"{prog} demo: {exc}", file=sys.stderr)
            return 2
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
