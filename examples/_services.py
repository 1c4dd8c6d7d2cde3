"""What the two-process examples share: exporters, the child process, the closing report.

Each example runs a front service in the foreground and a back service in a child process that
it starts with ``--service <name>``; the child prints ``listening <port>`` when ready and drains
its tracer and exits when its standard input closes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from spanlane.exporters import Exporter, JSONLinesExporter


def parse_args(
    description: str, front: str, back: str, argv: Sequence[str] | None
) -> argparse.Namespace:
    """The command line both examples take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--demo", action="store_true", help="one request, then print the trace")
    parser.add_argument("--spans-dir", type=Path, default=Path("spans"))
    parser.add_argument("--otlp", metavar="URL", help="also export to this OTLP/HTTP endpoint")
    parser.add_argument("--port", type=int, default=8000, help=f"the {front}'s port")
    parser.add_argument("--service", choices=[back], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_exporters(service: str, spans_dir: Path, otlp: str | None) -> list[Exporter]:
    """JSON lines in ``spans_dir/<service>.jsonl``, plus OTLP when a URL is given."""
    spans_dir.mkdir(parents=True, exist_ok=True)
    exporters: list[Exporter] = [JSONLinesExporter(spans_dir / f"{service}.jsonl")]
    if otlp:
        from spanlane.exporters import OTLPExporter  # needs the "otlp" extra: import on demand

        exporters.append(OTLPExporter(otlp))
    return exporters


def clear_span_files(spans_dir: Path, *services: str) -> None:
    """Start a demo from empty files, so that only this run's trace is printed."""
    for service in services:
        (spans_dir / f"{service}.jsonl").unlink(missing_ok=True)


def start_child(
    script: str, service: str, port: int, args: argparse.Namespace
) -> tuple[subprocess.Popen[str], int]:
    """Start ``script --service <service>`` in a child process; return it and its port."""
    command = [sys.executable, script, "--service", service]
    command += ["--port", str(port), "--spans-dir", str(args.spans_dir)]
    if args.otlp:
        command += ["--otlp", args.otlp]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("listening "):
        child.kill()
        child.wait()
        raise SystemExit(f"the {service} service did not start (got {line!r})")
    return child, int(line.split()[1])


def stop_child(child: subprocess.Popen[str]) -> None:
    """Close the child's stdin (it drains its tracer and exits) and wait for it."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.close()
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    child.stdout.close()


def report(spans_dir: Path, services: Sequence[str], status: int) -> int:
    """Print every trace in the services' files; 0 if the request succeeded and crossed over."""
    from trace_report import crosses_processes, load_spans, render, traces

    paths = [spans_dir / f"{service}.jsonl" for service in services]
    crossed = False
    for trace_id, spans in traces(load_spans(paths)).items():
        print(render(trace_id, spans))
        crossed = crossed or crosses_processes(spans)
    print("one trace crossed both processes" if crossed else "no trace crossed the processes")
    return 0 if status == 200 and crossed else 1
