"""Print the traces found in spanlane JSON-lines files, one indented tree per trace.

    python examples/trace_report.py spans/*.jsonl

Every line names the service that wrote it (``resource["service.name"]``), so the files can be
given in any number and any grouping, even concatenated into one. The examples use it to show
that one trace crossed their two processes: a trace with spans from two services crossed a
process boundary.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def service_of(record: dict[str, Any], default: str) -> str:
    """The ``service.name`` of the resource a line carries, or ``default`` if it has none."""
    name = (record.get("resource") or {}).get("service.name")
    return name if isinstance(name, str) and name else default


def load_spans(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every span of every file, each tagged with ``"service"``.

    The service is the line's ``resource["service.name"]``; lines without one (written before
    the lines carried their resource, or by a tracer without a service name) get the file's
    stem instead.
    """
    spans: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("end_time_ns") is not None:
                    record["service"] = service_of(record, default=path.stem)
                    spans.append(record)
    return spans


def by_service(spans: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Spans grouped by the service that wrote them, services in order of first appearance."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        grouped[span["service"]].append(span)
    return dict(grouped)


def traces(spans: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Spans grouped by trace id, each group in start order."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        grouped[span["trace_id"]].append(span)
    for group in grouped.values():
        group.sort(key=lambda span: span["start_time_ns"])
    return dict(grouped)


def render(trace_id: str, spans: Sequence[dict[str, Any]]) -> str:
    """One trace as an indented tree: service, kind, name, duration and status."""
    by_id = {span["span_id"]: span for span in spans}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        parent = span["parent_span_id"]
        children[parent if parent in by_id else None].append(span)
    lines = [f"trace {trace_id}"]

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            duration_ms = (span["end_time_ns"] - span["start_time_ns"]) / 1e6
            status = span["status"]["code"]
            mark = "" if status == "UNSET" else f"  [{status}]"
            lines.append(
                f"  {'  ' * depth}{span['service']:<11} {span['kind']:<8} {span['name']}"
                f"  {duration_ms:.1f} ms{mark}"
            )
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def crosses_processes(spans: Sequence[dict[str, Any]]) -> bool:
    """True when a SERVER span of one service is the child of a CLIENT span of another."""
    by_id = {span["span_id"]: span for span in spans}
    for span in spans:
        parent = by_id.get(span["parent_span_id"])
        if (
            parent is not None
            and span["kind"] == "SERVER"
            and parent["kind"] == "CLIENT"
            and parent["service"] != span["service"]
        ):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    spans = load_spans(paths)
    for trace_id, trace in traces(spans).items():
        print(render(trace_id, trace))
    counts = ", ".join(f"{name}: {len(group)}" for name, group in by_service(spans).items())
    print(f"spans by service: {counts or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
