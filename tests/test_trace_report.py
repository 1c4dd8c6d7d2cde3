"""examples/trace_report.py reads what JSONLinesExporter writes, telling services apart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from spanlane import SpanKind, open_tracer
from spanlane.exporters import JSONLinesExporter

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def trace_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trace_report", EXAMPLES / "trace_report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _two_services_in_one_file(path: Path) -> None:
    """A storefront's CLIENT call continued by an inventory SERVER span, both in ``path``."""
    async with open_tracer(JSONLinesExporter(path), service_name="storefront") as front:
        with (
            front.span("checkout", kind=SpanKind.SERVER),
            front.span("GET", kind=SpanKind.CLIENT) as call,
        ):
            caller = call.context
    async with open_tracer(JSONLinesExporter(path), service_name="inventory") as back:
        with back.span("GET /stock", kind=SpanKind.SERVER, parent=caller):
            pass


async def test_report_names_each_span_by_the_service_in_its_resource(
    trace_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "merged.jsonl"
    await _two_services_in_one_file(path)
    spans = trace_report.load_spans([path])
    assert {span["name"]: span["service"] for span in spans} == {
        "checkout": "storefront",
        "GET": "storefront",
        "GET /stock": "inventory",
    }
    grouped = trace_report.by_service(spans)
    assert sorted(grouped) == ["inventory", "storefront"]
    assert [span["name"] for span in grouped["inventory"]] == ["GET /stock"]
    ((trace_id, trace),) = trace_report.traces(spans).items()
    # The two services share one file, yet the trace is seen to cross from one to the other.
    assert trace_report.crosses_processes(trace)
    assert trace_report.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert f"trace {trace_id}" in out
    assert "inventory   SERVER   GET /stock" in out
    assert "spans by service: storefront: 2, inventory: 1" in out


async def test_report_falls_back_to_the_file_name_for_lines_without_a_service(
    trace_report: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "legacy.jsonl"
    async with open_tracer(JSONLinesExporter(path)) as tracer:
        with tracer.span("old"):
            pass
    strip_resources(path)
    (span,) = trace_report.load_spans([path])
    assert span["service"] == "legacy"


def strip_resources(path: Path) -> None:
    """Rewrite a JSON-lines file as older versions wrote it, without ``"resource"``."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        del line["resource"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
