"""Per-lane options: LaneOptions, spanlane.lane(), and the checks on what open_tracer accepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import pytest

import spanlane
from _gates import GatedExporter
from spanlane import DropReason, LaneOptions, RetryPolicy, SpanRecord, lane, open_tracer
from spanlane._tracer import lanes_of
from spanlane.exporters import BaseExporter, MemoryExporter

pytestmark = pytest.mark.anyio


async def test_lane_options_defaults_are_the_documented_ones() -> None:
    options = LaneOptions()
    assert (options.buffer_size, options.max_batch_size) == (2048, 512)
    assert (options.flush_interval, options.wait_timeout, options.export_timeout) == (
        1.0,
        1.0,
        10.0,
    )
    assert options.on_full == "drop"
    assert options.retry == RetryPolicy()
    # None: what the exporter declares (else 1), and no byte bound.
    assert (options.max_concurrent_exports, options.max_buffer_bytes) == (None, None)


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"buffer_size": 0}, ValueError, "buffer_size"),
        ({"buffer_size": "8"}, ValueError, "buffer_size"),
        ({"max_batch_size": -1}, ValueError, "max_batch_size"),
        ({"flush_interval": float("nan")}, ValueError, "flush_interval"),
        ({"export_timeout": True}, ValueError, "export_timeout"),
        ({"export_timeout": 10**400}, ValueError, "export_timeout"),  # too large for a float
        ({"on_full": ["drop"]}, ValueError, "on_full"),
        ({"wait_timeout": "1"}, ValueError, "wait_timeout"),
        ({"on_full": "block"}, ValueError, "on_full"),
        ({"max_concurrent_exports": 0}, ValueError, "max_concurrent_exports"),
        ({"max_concurrent_exports": True}, ValueError, "max_concurrent_exports"),
        ({"max_concurrent_exports": 2.0}, ValueError, "max_concurrent_exports"),
        ({"max_buffer_bytes": -1}, ValueError, "max_buffer_bytes"),
        ({"max_buffer_bytes": "1MB"}, ValueError, "max_buffer_bytes"),
        ({"retry": 3}, TypeError, "retry"),
        ({"unknown": 1}, TypeError, "unknown"),
    ],
)
async def test_lane_validates_each_option_when_given(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        lane(MemoryExporter(), **options)


async def test_lane_options_are_frozen() -> None:
    options = LaneOptions()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.buffer_size = 3  # type: ignore[misc]


async def test_a_lane_overrides_only_the_fields_it_sets() -> None:
    fast, slow = MemoryExporter(name="fast"), MemoryExporter(name="slow")
    tracer = open_tracer(
        fast,
        lane(slow, buffer_size=100_000, export_timeout=60),
        buffer_size=4096,
        max_batch_size=256,
        flush_interval=0.5,
    )
    fast_lane, slow_lane = lanes_of(tracer)
    assert fast_lane.options == LaneOptions(
        buffer_size=4096, max_batch_size=256, flush_interval=0.5
    )
    assert slow_lane.options == LaneOptions(
        buffer_size=100_000, max_batch_size=256, flush_interval=0.5, export_timeout=60
    )
    assert tracer.exporters == (fast, slow)


async def test_a_lane_whose_options_conflict_with_the_tracer_defaults_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        open_tracer(MemoryExporter(), lane(MemoryExporter(), buffer_size=10))


async def test_each_lane_applies_its_own_buffer_size() -> None:
    gated, roomy = GatedExporter("gated"), MemoryExporter(name="roomy")
    async with open_tracer(
        lane(gated, buffer_size=2, max_batch_size=1),
        lane(roomy, buffer_size=100, max_batch_size=100),
        flush_interval=3600,
    ) as tracer:
        for _ in range(10):
            tracer.start_span("x").end()
        gated_stats, roomy_stats = tracer.stats().lanes
        assert gated_stats.dropped.get(DropReason.QUEUE_FULL, 0) >= 7
        assert roomy_stats.dropped == {}
        gated.gate.set()


async def test_on_full_wait_applies_per_lane() -> None:
    waiting = GatedExporter("waiting")
    dropping = GatedExporter("dropping")
    async with open_tracer(
        lane(waiting, on_full="wait", wait_timeout=30),
        lane(dropping),
        buffer_size=1,
        max_batch_size=1,
    ) as tracer:
        async with tracer.span("a"):
            pass
        assert await waiting.next_export() == ("a",)
        assert await dropping.next_export() == ("a",)
        async with tracer.span("b"):  # fills both buffers
            pass

        async def release() -> None:
            await anyio.wait_all_tasks_blocked()
            waiting.gate.set()
            dropping.gate.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            async with tracer.span("c"):  # waits for room in "waiting" only
                pass
    waiting_stats = tracer.stats().lanes[0]
    assert waiting_stats.dropped == {}
    assert [record.name for record in waiting.records] == ["a", "b", "c"]


async def test_an_exporter_class_instead_of_an_instance_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="instance"):
        open_tracer(MemoryExporter)
    with pytest.raises(TypeError, match="instance"):
        open_tracer(lane(MemoryExporter))


async def test_one_exporter_given_twice_is_a_value_error() -> None:
    exporter = MemoryExporter()
    with pytest.raises(ValueError, match="twice"):
        open_tracer(exporter, exporter)
    with pytest.raises(ValueError, match="twice"):
        open_tracer(exporter, lane(exporter, buffer_size=4096))


async def test_flush_rejects_a_negative_or_non_numeric_timeout() -> None:
    async with open_tracer(MemoryExporter()) as tracer:
        for bad in (-1, float("nan"), "1", True):
            with pytest.raises(ValueError, match="timeout"):
                await tracer.flush(timeout=bad)  # type: ignore[arg-type]
        assert (await tracer.flush(timeout=0)).completed


class OnlyExport:
    """A duck-typed exporter with nothing but export()."""

    def __init__(self) -> None:
        self.records: list[SpanRecord] = []

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.records.extend(batch)


class Named(BaseExporter):
    wants_starts = True

    def __init__(self) -> None:
        self.records: list[SpanRecord] = []

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self.records.extend(batch)


async def test_exporters_with_only_export_or_from_the_base_class_work() -> None:
    plain, based = OnlyExport(), Named()
    async with open_tracer(plain, based, max_batch_size=1) as tracer:
        with tracer.span("x"):
            pass
    assert [record.name for record in plain.records] == ["x"]
    assert [(record.name, record.is_start) for record in based.records] == [
        ("x", True),
        ("x", False),
    ]
    assert [stats.exporter for stats in tracer.stats().lanes] == ["OnlyExport", "Named"]
    assert isinstance(based, spanlane.exporters.Exporter)


async def test_base_exporter_export_must_be_implemented() -> None:
    async with open_tracer(BaseExporter(), max_batch_size=1) as tracer:
        with tracer.span("x"):
            pass
    assert tracer.stats().lanes[0].dropped == {DropReason.EXPORT_FAILED: 1}


async def test_a_synchronous_aclose_is_called_too() -> None:
    class SyncClose(BaseExporter):
        closed = False

        async def export(self, batch: Sequence[SpanRecord]) -> None:
            pass

        def aclose(self) -> None:  # type: ignore[override]
            self.closed = True

    exporter = SyncClose()
    async with open_tracer(exporter):
        pass
    assert exporter.closed


async def test_an_exporter_whose_name_property_raises_is_named_by_its_class() -> None:
    class BadName(BaseExporter):
        @property
        def name(self) -> str:
            raise RuntimeError("no name")

        async def export(self, batch: Sequence[SpanRecord]) -> None:
            pass

    tracer = open_tracer(BadName())
    assert tracer.stats().lanes[0].exporter == "BadName"


async def test_stats_print_readably() -> None:
    async with open_tracer(MemoryExporter(name="mem"), max_batch_size=1) as tracer:
        with tracer.span("x"):
            pass
        await tracer.flush()
    text = str(tracer.stats())
    assert "mappingproxy" not in text
    assert text.splitlines()[0] == "spans started 1, ended 1"
    assert text.splitlines()[1].strip().startswith("mem: offered 1, exported 1")
