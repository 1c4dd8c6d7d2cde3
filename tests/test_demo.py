from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from spanlane import DropReason, LaneStats, Stats
from spanlane.__main__ import main
from spanlane._demo import DemoOptions, export_failures, run_demo


@pytest.mark.anyio
async def test_demo_exports_every_span_and_prints_the_table(
    tmp_path: Path, anyio_backend: str
) -> None:
    out = tmp_path / "demo.jsonl"
    options = DemoOptions(
        backend=anyio_backend,
        requests=30,
        concurrency=5,
        fail_rate=0.5,
        export_fail_rate=0.3,
        out=str(out),
        seed=7,
        latency_scale=0.0,
    )
    stream = io.StringIO()
    stats = await run_demo(options, stream)

    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert stats.spans_started == stats.spans_ended == len(records)
    for lane in stats.lanes:
        assert lane.exported == len(records)
        assert lane.dropped.get(DropReason.QUEUE_FULL, 0) == 0
    # Every request is one trace with a SERVER root and its children.
    roots = [record for record in records if record["parent_span_id"] is None]
    assert len(roots) == 30
    assert {record["kind"] for record in roots} == {"SERVER"}
    errors = [record for record in roots if record["status"]["code"] == "ERROR"]
    assert errors, "with fail_rate=0.5 some requests fail"
    table = stream.getvalue()
    assert "offered" in table
    assert "exported" in table
    assert "hot-path cost" in table
    assert f"spans started {len(records)}" in table


def test_demo_command_line_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--concurrency", "0"]) == 2
    assert "--concurrency" in capsys.readouterr().err


def test_demo_command_line_runs_to_completion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.jsonl"
    assert main(["demo", "--requests", "5", "--out", str(out), "--seed", "1"]) == 0
    assert "spanlane demo on asyncio: 5 requests" in capsys.readouterr().out
    assert out.exists()


def test_demo_table_says_the_console_lane_prints_only_the_first_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anyio_backend: str
) -> None:
    out = tmp_path / "cli.jsonl"
    argv = ["demo", "--backend", anyio_backend, "--requests", "4", "--out", str(out)]
    assert main([*argv, "--seed", "2"]) == 0
    table = capsys.readouterr().out
    (console_row,) = [row for row in table.splitlines() if row.startswith("ConsoleExporter")]
    assert console_row.startswith("ConsoleExporter *")
    assert "* the console lane counts every span it is handed as exported" in table
    assert "prints only the first trace" in table
    assert f"spans written to {out}\n" in table


def test_demo_exits_1_and_names_the_lane_that_exported_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anyio_backend: str
) -> None:
    out = tmp_path / "missing-directory" / "spans.jsonl"
    argv = ["demo", "--backend", anyio_backend, "--requests", "5", "--out", str(out)]
    assert main([*argv, "--seed", "3", "--export-fail-rate", "0"]) == 1
    captured = capsys.readouterr()
    assert "spans written to" not in captured.out
    assert f"no span written to {out}" in captured.out
    (failure,) = [line for line in captured.err.splitlines() if line.startswith("spanlane demo:")]
    offered = int(failure.split("none of its ")[1].split()[0])
    assert offered > 0
    assert failure == (
        "spanlane demo: lane JSONLinesExporter(spans.jsonl) exported none of its "
        f"{offered} records ({offered} export_failed)"
    )


def test_export_failures_ignore_lanes_that_exported_something() -> None:
    def lane(name: str, offered: int, exported: int, **dropped: int) -> LaneStats:
        return LaneStats(
            exporter=name,
            offered=offered,
            exported=exported,
            queued=0,
            in_flight=0,
            dropped={DropReason[reason.upper()]: count for reason, count in dropped.items()},
            retries=0,
            batches=1,
            high_water=0,
        )

    stats = Stats(
        spans_started=10,
        spans_ended=10,
        lanes=(
            lane("file", 10, 0, export_failed=4, retries_exhausted=6),
            lane("partly", 10, 3, queue_full=7),
            lane("idle", 0, 0),
        ),
    )
    assert export_failures(stats) == [
        "lane file exported none of its 10 records (4 export_failed, 6 retries_exhausted)"
    ]
