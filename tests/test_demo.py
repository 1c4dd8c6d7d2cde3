from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from spanlane import DropReason
from spanlane.__main__ import main
from spanlane._demo import DemoOptions, run_demo


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
