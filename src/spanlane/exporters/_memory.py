"""MemoryExporter: keeps every record in a list, for tests and tools."""

from __future__ import annotations

from collections.abc import Sequence

from .._records import SpanRecord


class MemoryExporter:
    """Collects exported records in :attr:`records`, oldest first.

    Args:
        wants_starts: also receive start notifications (records with ``end_time_ns=None``).
        name: the name reported in statistics (``"MemoryExporter"`` by default).

    Attributes:
        records: every record received, in order.
        batches: the size of each batch received, in order.
        closed: True once ``aclose()`` has run.
    """

    def __init__(self, *, wants_starts: bool = False, name: str = "MemoryExporter") -> None:
        self.wants_starts = wants_starts
        self.name = name
        self.records: list[SpanRecord] = []
        self.batches: list[int] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<MemoryExporter {self.name!r} records={len(self.records)}>"

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        """Append the batch to :attr:`records`."""
        self.records.extend(batch)
        self.batches.append(len(batch))

    async def aclose(self) -> None:
        """Mark the exporter closed; the records stay readable."""
        self.closed = True

    @property
    def spans(self) -> list[SpanRecord]:
        """The end records only (finished spans), in order."""
        return [record for record in self.records if record.end_time_ns is not None]

    @property
    def starts(self) -> list[SpanRecord]:
        """The start notifications only, in order."""
        return [record for record in self.records if record.end_time_ns is None]

    def by_name(self, name: str) -> list[SpanRecord]:
        """The end records of spans called ``name``."""
        return [record for record in self.spans if record.name == name]

    def clear(self) -> None:
        """Forget every record received so far."""
        self.records.clear()
        self.batches.clear()
