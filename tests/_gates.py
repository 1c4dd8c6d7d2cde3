"""Exporters for the core tests that let a test see when an export starts and decide when it ends.

Tests synchronise on these (events and streams), never on ``sleep``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import anyio

from spanlane import SpanRecord, Tracer
from spanlane._tracer import lanes_of

#: Seconds a test waits for something that should happen at once: a safety net against a hung
#: test run, never a measurement.
SAFETY_TIMEOUT = 10.0


def names(records: Sequence[SpanRecord]) -> tuple[str, ...]:
    """The names of ``records``, in order."""
    return tuple(record.name for record in records)


def end_spans(tracer: Tracer, *span_names: str) -> None:
    """Start and end one span per name, synchronously (the hot path, which never waits)."""
    for name in span_names:
        tracer.start_span(name).end()


def assert_accounting(tracer: Tracer) -> None:
    """Assert the accounting identity on every lane, and that ``queued`` is the stream's count."""
    for lane, stats in zip(lanes_of(tracer), tracer.stats().lanes, strict=True):
        dropped = sum(stats.dropped.values())
        assert stats.offered == stats.exported + stats.queued + stats.in_flight + dropped, stats
        assert stats.balanced
        assert stats.queued == lane.buffer_used(), stats


class GatedExporter:
    """Reports each export call as it starts, and delivers only once :attr:`gate` is set.

    Args:
        name: the name reported in statistics and logs.
        open: start with the gate already set (every export delivers at once).

    Attributes:
        gate: set it to let export calls (the waiting one and all later ones) deliver.
        records: records delivered, in order.
        batches: the names in each delivered batch, in order.
        closed: True once ``aclose()`` has run.
    """

    def __init__(self, name: str = "Gated", *, open: bool = False) -> None:
        self.name = name
        self.gate = anyio.Event()
        if open:
            self.gate.set()
        self.records: list[SpanRecord] = []
        self.batches: list[tuple[str, ...]] = []
        self.closed = False
        self._started_send, self._started_receive = anyio.create_memory_object_stream[
            tuple[str, ...]
        ](math.inf)

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        self._started_send.send_nowait(names(batch))
        await self.gate.wait()
        self.records.extend(batch)
        self.batches.append(names(batch))

    async def next_export(self) -> tuple[str, ...]:
        """Wait until the next export call has started; return the names in its batch."""
        with anyio.fail_after(SAFETY_TIMEOUT):
            return await self._started_receive.receive()

    def exports_started(self) -> int:
        """Export calls started and not yet taken by :meth:`next_export`."""
        return self._started_receive.statistics().current_buffer_used

    async def aclose(self) -> None:
        self.closed = True
        self._started_send.close()
        self._started_receive.close()
