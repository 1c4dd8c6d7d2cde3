"""The built-in exporters: memory, JSON lines and console."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from spanlane import (
    DropReason,
    InstrumentationScope,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
    StatusCode,
    __version__,
    open_tracer,
)
from spanlane.exporters import (
    ConsoleExporter,
    Exporter,
    ExportResult,
    JSONLinesExporter,
    MemoryExporter,
    record_to_json,
)

pytestmark = pytest.mark.anyio

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
JSON_KEYS = {
    "name",
    "trace_id",
    "span_id",
    "parent_span_id",
    "kind",
    "trace_flags",
    "trace_state",
    "start_time_ns",
    "end_time_ns",
    "attributes",
    "events",
    "links",
    "status",
    "dropped_attributes",
    "dropped_events",
    "dropped_links",
    "resource",
    "scope",
}


def _record(name: str, span_id: int, parent: int | None = None, trace_id: int = 1) -> SpanRecord:
    return SpanRecord(name, trace_id, span_id, parent, SpanKind.INTERNAL, 0, 1_000)


# --- MemoryExporter ------------------------------------------------------------------------------


async def test_memory_exporter_keeps_records_and_batches_in_order() -> None:
    exporter = MemoryExporter(wants_starts=True, name="mem")
    assert isinstance(exporter, Exporter)
    start = SpanRecord("a", 1, 1, None, SpanKind.INTERNAL, 0, None)
    end_a, end_b = _record("a", 1), _record("b", 2)
    await exporter.export([start])
    await exporter.export([end_a, end_b])
    assert exporter.records == [start, end_a, end_b]
    assert exporter.batches == [1, 2]
    assert exporter.spans == [end_a, end_b]
    assert exporter.starts == [start]
    assert exporter.by_name("b") == [end_b]
    assert "mem" in repr(exporter)
    exporter.clear()
    assert (exporter.records, exporter.batches) == ([], [])
    assert not exporter.closed
    await exporter.aclose()
    assert exporter.closed


async def test_memory_exporter_receives_start_notifications_only_when_asked() -> None:
    with_starts, without = MemoryExporter(wants_starts=True), MemoryExporter()
    async with open_tracer(with_starts, without) as tracer:
        with tracer.span("s"):
            pass
    assert [record.is_start for record in with_starts.records] == [True, False]
    assert [record.is_start for record in without.records] == [False]


# --- JSONLinesExporter ---------------------------------------------------------------------------


async def _write_trace(exporter: JSONLinesExporter) -> None:
    async with open_tracer(exporter, flush_interval=3600) as tracer:
        linked = SpanContext(trace_id=0xAB, span_id=0xCD)
        with tracer.span("root", kind=SpanKind.SERVER) as root:
            root.set_attributes(
                {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "seq": [1, 2]}
            )
            root.add_event("event", {"k": "v"}, time_ns=5)
            with tracer.span("child", links=[linked]) as child:
                child.set_status(StatusCode.ERROR, "broken")
                child.set_attribute("name", "ünïcode")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


async def test_jsonl_writes_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JSONLinesExporter(path)
    await _write_trace(exporter)
    child, root = _read_lines(path)
    for line in (child, root):
        assert set(line) == JSON_KEYS
        assert HEX32.fullmatch(line["trace_id"])
        assert HEX16.fullmatch(line["span_id"])
    assert root["parent_span_id"] is None
    assert child["parent_span_id"] == root["span_id"]
    assert child["trace_id"] == root["trace_id"]
    assert (root["name"], root["kind"], child["kind"]) == ("root", "SERVER", "INTERNAL")
    assert isinstance(root["start_time_ns"], int)
    assert root["end_time_ns"] >= root["start_time_ns"]
    assert root["attributes"] == {
        "nan": "NaN",
        "inf": "Infinity",
        "ninf": "-Infinity",
        "seq": [1, 2],
    }
    assert root["events"] == [{"name": "event", "time_ns": 5, "attributes": {"k": "v"}}]
    assert root["status"] == {"code": "UNSET", "description": None}
    assert child["status"] == {"code": "ERROR", "description": "broken"}
    assert child["links"] == [
        {"trace_id": f"{0xAB:032x}", "span_id": f"{0xCD:016x}", "attributes": {}}
    ]
    assert child["attributes"] == {"name": "ünïcode"}
    assert exporter.lines_written == 2


async def test_jsonl_appends_across_two_tracers(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    await _write_trace(JSONLinesExporter(path))
    first = path.read_text(encoding="utf-8")
    await _write_trace(JSONLinesExporter(path))
    lines = _read_lines(path)
    assert len(lines) == 4
    assert path.read_text(encoding="utf-8").startswith(first)
    assert lines[0]["trace_id"] != lines[2]["trace_id"]


async def test_jsonl_file_is_closed_by_aclose(tmp_path: Path) -> None:
    exporter = JSONLinesExporter(tmp_path / "spans.jsonl")
    async with open_tracer(exporter) as tracer:
        with tracer.span("s"):
            pass
        await tracer.flush()
        file = exporter._file
        assert file is not None
        closed_while_open = file.closed
    assert not closed_while_open
    assert file.closed
    assert exporter._file is None


async def test_jsonl_writes_start_notifications_with_null_end(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    async with open_tracer(JSONLinesExporter(path, wants_starts=True, fsync=True)) as tracer:
        with tracer.span("s"):
            pass
    start, end = _read_lines(path)
    assert start["end_time_ns"] is None
    assert isinstance(end["end_time_ns"], int)


async def test_jsonl_lines_carry_the_resource_and_the_scope(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    async with open_tracer(
        JSONLinesExporter(path),
        service_name="checkout",
        resource_attributes={"deployment.environment": "test", "host.cores": 2},
    ) as tracer:
        with tracer.span("outer"), tracer.span("inner"):
            pass
    for line in _read_lines(path):
        assert line["resource"]["service.name"] == "checkout"
        assert line["resource"]["deployment.environment"] == "test"
        assert line["resource"]["host.cores"] == 2
        assert line["scope"] == {"name": "spanlane", "version": __version__}


async def test_record_to_json_writes_a_custom_resource_and_scope() -> None:
    record = attrs.evolve(
        _record("r", 1),
        resource=Resource({"service.name": "billing", "weights": (0.5, float("nan"))}),
        scope=InstrumentationScope(name="billing.db", version=None),
    )
    line = record_to_json(record)
    assert line["resource"] == {"service.name": "billing", "weights": [0.5, "NaN"]}
    assert line["scope"] == {"name": "billing.db", "version": None}


async def test_jsonl_lone_surrogates_are_replaced_and_the_batch_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JSONLinesExporter(path)
    poisoned = attrs.evolve(
        _record("bad \ud800 name", 2),
        attributes={"key \udfff": "value \ud83d", "fine": "ünïcode"},
    )
    batch = [_record("first", 1), poisoned, _record("last", 3)]
    assert await exporter.export(batch) is None
    await exporter.aclose()
    first, sanitised, last = _read_lines(path)
    assert (first["name"], last["name"]) == ("first", "last")
    assert sanitised["name"] == "bad \ufffd name"
    assert sanitised["attributes"] == {"key \ufffd": "value \ufffd", "fine": "ünïcode"}
    assert exporter.lines_written == 3


async def test_jsonl_record_that_cannot_be_encoded_is_left_out_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JSONLinesExporter(path)
    # Attributes are coerced when a span sets them, so only a hand-built record can hold this.
    unencodable = attrs.evolve(_record("opaque", 2), attributes={"object": object()})  # type: ignore[dict-item]
    batch = [_record("first", 1), unencodable, _record("last", 3)]
    assert await exporter.export(batch) == ExportResult(unencodable=1)
    await exporter.aclose()
    assert [line["name"] for line in _read_lines(path)] == ["first", "last"]
    assert exporter.lines_written == 2
    assert "left out 1 record(s)" in caplog.text
    assert "TypeError" in caplog.text


async def test_lane_counts_a_left_out_record_as_unencodable(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    jsonl = JSONLinesExporter(path)

    class Poisoning:
        """Swaps one record of each batch for an unencodable copy before writing it."""

        name = "poisoning"

        async def export(self, batch: Sequence[SpanRecord]) -> ExportResult | None:
            bad = attrs.evolve(batch[0], attributes={"object": object()})  # type: ignore[dict-item]
            return await jsonl.export([bad, *batch[1:]])

    async with open_tracer(Poisoning(), max_batch_size=3, flush_interval=3600) as tracer:
        for name in ("a", "b", "c"):
            with tracer.span(name):
                pass
    await jsonl.aclose()
    (lane,) = tracer.stats().lanes
    assert (lane.offered, lane.exported) == (3, 2)
    assert lane.dropped.get(DropReason.UNENCODABLE) == 1
    assert [line["name"] for line in _read_lines(path)] == ["b", "c"]


async def test_record_to_json_is_json_serialisable() -> None:
    record = _record("r", 0xFF, parent=0x1, trace_id=0x2)
    line = record_to_json(record)
    assert json.loads(json.dumps(line)) == line
    assert (line["trace_id"], line["span_id"], line["parent_span_id"]) == (
        "0" * 31 + "2",
        "0" * 14 + "ff",
        "0" * 15 + "1",
    )


# --- ConsoleExporter -----------------------------------------------------------------------------


async def test_console_renders_a_tree_with_durations_and_errors() -> None:
    stream = io.StringIO()
    t0 = 1_700_000_000_000_000_000
    async with open_tracer(ConsoleExporter(stream), flush_interval=3600) as tracer:
        root = tracer.start_span("request", kind=SpanKind.SERVER, start_time_ns=t0)
        db = tracer.start_span("db", parent=root, start_time_ns=t0 + 1)
        db.end(end_time_ns=t0 + 1 + 1_500_000)
        fail = tracer.start_span("fail", parent=root, start_time_ns=t0 + 2)
        fail.set_status(StatusCode.ERROR, "ValueError: boom")
        fail.end(end_time_ns=t0 + 2 + 300_000)
        root.end(end_time_ns=t0 + 2_500_000_000)
    assert stream.getvalue() == (
        f"trace {root.context.trace_id:032x}\n"
        "└─ request  2.50 s  server\n"
        "   ├─ db  1.5 ms\n"
        "   └─ fail  300 µs  ERROR: ValueError: boom\n"
    )


async def test_console_marks_cancelled_and_unfinished_spans() -> None:
    stream = io.StringIO()
    async with open_tracer(ConsoleExporter(stream)) as tracer:
        with tracer.span("cancelled") as span:
            span.set_attribute("spanlane.cancelled", True)
        tracer.start_span("never-ended")
    output = stream.getvalue()
    assert re.search(r"cancelled  \S+ \S+  cancelled\n", output)
    assert re.search(r"never-ended  \S+ \S+  unfinished\n", output)


async def test_console_waits_for_the_root_and_prints_orphans_on_aclose() -> None:
    stream = io.StringIO()
    exporter = ConsoleExporter(stream)
    await exporter.export([_record("orphan", 2, parent=1)])
    assert stream.getvalue() == ""
    await exporter.aclose()
    assert stream.getvalue() == f"trace {1:032x}\n└─ orphan  1 µs\n"


async def test_console_prints_at_most_max_traces() -> None:
    stream = io.StringIO()
    exporter = ConsoleExporter(stream, max_traces=1)
    await exporter.export([_record("first", 1, trace_id=1), _record("second", 2, trace_id=2)])
    await exporter.aclose()
    assert "first" in stream.getvalue()
    assert "second" not in stream.getvalue()
    assert exporter.traces_printed == 1
