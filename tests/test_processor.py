"""The processor seam: stages between the tracer and the lanes."""

from __future__ import annotations

import attrs
import pytest

from spanlane import SpanProcessor, SpanRecord, open_tracer
from spanlane.exporters import MemoryExporter

pytestmark = pytest.mark.anyio


class Redact(SpanProcessor):
    """Replaces the value of one attribute (records are frozen: it builds a new one)."""

    def on_end(self, record: SpanRecord) -> None:
        if "password" in record.attributes:
            attributes = dict(record.attributes, password="***")
            record = attrs.evolve(record, attributes=attributes)
        self.forward_end(record)


class Holds(SpanProcessor):
    """Holds every record until shutdown, then forwards them in order."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[SpanRecord] = []

    def on_end(self, record: SpanRecord) -> None:
        self.held.append(record)

    def pending(self) -> int:
        return len(self.held)

    async def shutdown(self, deadline: float) -> None:
        held, self.held = self.held, []
        for record in held:
            self.forward_end(record)


class Breaks(SpanProcessor):
    def on_end(self, record: SpanRecord) -> None:
        if record.name == "bad":
            raise KeyboardInterrupt("a processor bug")
        self.forward_end(record)


class SeesStarts(SpanProcessor):
    wants_starts = True

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[str] = []

    def on_start(self, record: SpanRecord) -> None:
        self.starts.append(record.name)
        self.forward_start(record)


async def test_a_processor_transforms_records_before_every_lane() -> None:
    first, second = MemoryExporter(name="a"), MemoryExporter(name="b")
    async with open_tracer(first, second, processors=[Redact()]) as tracer:
        with tracer.span("login", attributes={"user": "u", "password": "hunter2"}):
            pass
    for exporter in (first, second):
        (record,) = exporter.spans
        assert dict(record.attributes) == {"user": "u", "password": "***"}


async def test_processors_run_in_order_and_can_hold_records_until_shutdown() -> None:
    exporter = MemoryExporter()
    holds = Holds()
    async with open_tracer(exporter, processors=[Redact(), holds]) as tracer:
        for name in ("a", "b", "c"):
            with tracer.span(name, attributes={"password": "x"}):
                pass
        await tracer.flush()
        assert exporter.records == []
        assert holds.pending() == 3
    assert [record.name for record in exporter.spans] == ["a", "b", "c"]
    assert all(record.attributes["password"] == "***" for record in exporter.spans)


async def test_a_processor_that_raises_loses_only_that_record_and_is_counted() -> None:
    exporter = MemoryExporter()
    async with open_tracer(exporter, processors=[Breaks()]) as tracer:
        for name in ("good", "bad", "also good"):
            with tracer.span(name):
                pass
    assert [record.name for record in exporter.spans] == ["good", "also good"]
    assert tracer.stats().processor_errors == 1


async def test_start_notifications_pass_processors_that_do_not_want_them() -> None:
    exporter = MemoryExporter(wants_starts=True)
    sees = SeesStarts()
    async with open_tracer(exporter, processors=[Redact(), sees]) as tracer:
        with tracer.span("x"):
            pass
    assert sees.starts == ["x"]
    assert [(record.name, record.is_start) for record in exporter.records] == [
        ("x", True),
        ("x", False),
    ]


async def test_a_processor_that_is_not_a_span_processor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="processors"):
        open_tracer(MemoryExporter(), processors=[object()])  # type: ignore[list-item]
