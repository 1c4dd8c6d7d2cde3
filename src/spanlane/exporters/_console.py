"""ConsoleExporter: prints each finished trace as an indented tree with durations and errors."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, TextIO

import anyio.to_thread

from .._ids import format_trace_id
from .._records import CANCELLED_ATTRIBUTE, UNFINISHED_ATTRIBUTE, SpanRecord, StatusCode


def _duration(record: SpanRecord) -> str:
    nanoseconds = record.duration_ns or 0
    if nanoseconds >= 1_000_000_000:
        return f"{nanoseconds / 1e9:.2f} s"
    if nanoseconds >= 1_000_000:
        return f"{nanoseconds / 1e6:.1f} ms"
    return f"{nanoseconds / 1e3:.0f} µs"


def _label(record: SpanRecord) -> str:
    parts = [f"{record.name}  {_duration(record)}"]
    if record.kind.name != "INTERNAL":
        parts.append(record.kind.name.lower())
    if record.status.code is StatusCode.ERROR:
        parts.append(f"ERROR: {record.status.description or 'error'}")
    if record.attributes.get(CANCELLED_ATTRIBUTE) is True:
        parts.append("cancelled")
    if record.attributes.get(UNFINISHED_ATTRIBUTE) is True:
        parts.append("unfinished")
    return "  ".join(parts)


def render_trace(records: Sequence[SpanRecord]) -> str:
    """Render the end records of one trace as a tree, children in start order.

    Spans whose parent is not among ``records`` (a remote parent, or one not exported yet) are
    drawn as roots.
    """
    by_id = {record.span_id: record for record in records}
    children: dict[int | None, list[SpanRecord]] = {}
    for record in records:
        parent = record.parent_span_id
        # A span whose parent is missing, or is itself (a record built by hand), is a root.
        if parent not in by_id or parent == record.span_id:
            parent = None
        children.setdefault(parent, []).append(record)
    for group in children.values():
        group.sort(key=lambda record: record.start_time_ns)
    trace_id = format_trace_id(records[0].trace_id) if records else "?"
    lines = [f"trace {trace_id}"]
    # Depth first with an explicit stack, not recursion: a chain of a thousand nested spans is
    # legal, and would overflow Python's stack (it sank whole batches with RecursionError).
    drawn: set[int] = set()
    stack: list[tuple[SpanRecord, str, bool]] = [
        (record, "", index == len(children.get(None, [])) - 1)
        for index, record in enumerate(children.get(None, []))
    ][::-1]
    while stack:
        record, prefix, last = stack.pop()
        if record.span_id in drawn:  # a cycle of parent ids: draw each span once
            continue
        drawn.add(record.span_id)
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_label(record)}")
        below = children.get(record.span_id, [])
        inner = prefix + ("   " if last else "│  ")
        stack.extend(
            (child, inner, index == len(below) - 1)
            for index, child in reversed(list(enumerate(below)))
        )
    # Spans in a cycle of parent ids never hang from a root: draw them at the top level.
    for record in records:
        if record.span_id not in drawn:
            drawn.add(record.span_id)
            lines.append(f"└─ {_label(record)}")
    return "\n".join(lines) + "\n"


class ConsoleExporter:
    """Prints each trace as a tree once its root span has ended.

    Records are held per trace until the trace's root (a span with no parent, or a remote parent)
    arrives; ``aclose()`` prints whatever is still held. Writes happen in a worker thread.

    Args:
        stream: where to write (standard error by default).
        max_traces: print at most this many traces, then ignore the rest (None: no limit).
        max_pending_traces: traces held while waiting for their root; past it, the oldest is
            printed as it is.
    """

    #: The console wants finished spans only.
    wants_starts: Final = False

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        max_traces: int | None = None,
        max_pending_traces: int = 256,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.max_traces = max_traces
        self.max_pending_traces = max_pending_traces
        self.name = "ConsoleExporter"
        self._pending: OrderedDict[int, list[SpanRecord]] = OrderedDict()
        self.traces_printed = 0

    def __repr__(self) -> str:
        return f"<ConsoleExporter stream={getattr(self.stream, 'name', self.stream)!r}>"

    def _full(self) -> bool:
        return self.max_traces is not None and self.traces_printed >= self.max_traces

    def _take(self, trace_id: int, out: list[str]) -> None:
        records = self._pending.pop(trace_id)
        if not self._full():
            out.append(render_trace(records))
            self.traces_printed += 1

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        """Hold the batch's records per trace and print every trace whose root has ended."""
        out: list[str] = []
        for record in batch:
            if record.end_time_ns is None or self._full():
                continue
            self._pending.setdefault(record.trace_id, []).append(record)
            if record.parent_span_id is None or record.parent_is_remote:
                self._take(record.trace_id, out)
            elif len(self._pending) > self.max_pending_traces:
                self._take(next(iter(self._pending)), out)
        if out:
            await anyio.to_thread.run_sync(self._write, "".join(out))

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    async def aclose(self) -> None:
        """Print the traces still waiting for their root."""
        out: list[str] = []
        while self._pending:
            self._take(next(iter(self._pending)), out)
        if out:
            await anyio.to_thread.run_sync(self._write, "".join(out))
