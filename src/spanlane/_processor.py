"""The processor seam: the stages a record passes between the tracer and the lanes.

::

    tracer ──▶ processor 1 ──▶ processor 2 ──▶ … ──▶ lanes (one per exporter)

A stage receives start notifications (if it asks for them) and end records on the event loop
thread, one at a time, and hands on what it keeps to the next stage with :meth:`forward_start`
and :meth:`forward_end`. It may hold records back (tail sampling), transform them (they are frozen:
build new ones with ``attrs.evolve``), or drop them. The lanes are the last stage; they never raise.

A processor that raises loses the record it was given (counted in ``Stats.processor_errors``
and logged, rate-limited): a failing redaction step must not let unredacted data through.

A stage that needs time of its own (tail sampling judges traces whose root never ends) overrides
:meth:`SpanProcessor.run`: the tracer runs it as a task beside the drain workers, in telemetry's
own context, and cancels it before :meth:`SpanProcessor.shutdown`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import anyio

from ._records import SpanRecord
from ._runtime import is_cancellation

__all__ = ["Fanout", "Guarded", "SpanProcessor", "Stage"]


class Stage(Protocol):
    """What a processor hands records on to: the next processor, or the lanes."""

    def on_start(self, record: SpanRecord) -> None:
        """Take a start notification (a record with ``end_time_ns=None``)."""

    def on_end(self, record: SpanRecord) -> None:
        """Take a finished span's record."""

    async def wait_for_room(self, deadline: float) -> None:
        """Wait until the next :meth:`on_end` would not find a lane full, or ``deadline``."""


class SpanProcessor:
    """Base class for a stage between the tracer and its lanes; pass instances as
    ``open_tracer(..., processors=[...])``.

    The default methods forward everything unchanged. Every method is called on the event loop
    thread and must not block; :meth:`shutdown` is awaited once when the tracer closes, before
    the lanes stop accepting records, so a stage that holds records can hand them on.

    Attributes:
        wants_starts: receive start notifications (only then does the tracer build them for
            this stage; the lanes after it get the ones it forwards).
        forwards_starts: False for a stage that never hands start notifications on (tail
            sampling); the tracer then builds none for the stages and lanes after it.
    """

    wants_starts: bool = False
    forwards_starts: bool = True

    def __init__(self) -> None:
        self._next: Stage | None = None

    @property
    def name(self) -> str:
        """The name used in logs (the class name by default)."""
        return type(self).__name__

    def connect(self, downstream: Stage) -> None:
        """Called once by the tracer with the stage after this one."""
        self._next = downstream

    def forward_start(self, record: SpanRecord) -> None:
        """Hand a start notification to the next stage."""
        if self._next is not None:
            self._next.on_start(record)

    def forward_end(self, record: SpanRecord) -> None:
        """Hand an end record to the next stage."""
        if self._next is not None:
            self._next.on_end(record)

    async def forward_end_waiting(self, record: SpanRecord, deadline: float) -> None:
        """Hand an end record on, first waiting until ``deadline`` (anyio clock) for room when
        the next stage is the lanes; for :meth:`shutdown`, which may hand on many at once."""
        if self._next is not None:
            await self._next.wait_for_room(deadline)
            self._next.on_end(record)

    def on_start(self, record: SpanRecord) -> None:
        """A span started (only called when :attr:`wants_starts`); forwards by default."""
        self.forward_start(record)

    def on_end(self, record: SpanRecord) -> None:
        """A span ended; forwards by default."""
        self.forward_end(record)

    async def run(self) -> None:
        """Background work, if the stage needs any; the default has none (and no task).

        Started when the tracer opens, in telemetry's own context (spans started there do not
        record), on the event loop; cancelled before :meth:`shutdown`. An exception it raises
        is logged and counted in ``Stats.processor_errors``; it is not restarted.
        """

    async def shutdown(self, deadline: float) -> None:
        """The tracer is closing: hand on what is held, before ``deadline`` (anyio clock)."""

    def pending(self) -> int:
        """Records this stage holds and has not handed on or discarded (for ``Stats``)."""
        return 0

    def sampled_out(self) -> int:
        """Records this stage discarded by a sampling decision (for ``Stats``)."""
        return 0


class Fanout:
    """The last stage: every record to every lane (start notifications to those that want them).

    Lanes count every record they are offered, and never raise.
    """

    __slots__ = ("_lanes", "_start_lanes")

    def __init__(self, lanes: Sequence[_Lane]) -> None:
        self._lanes = tuple(lanes)
        self._start_lanes = tuple(lane for lane in lanes if lane.wants_starts)

    @property
    def wants_starts(self) -> bool:
        """True when at least one lane wants start notifications."""
        return bool(self._start_lanes)

    def on_start(self, record: SpanRecord) -> None:
        for lane in self._start_lanes:
            lane.offer_nowait(record)

    def on_end(self, record: SpanRecord) -> None:
        for lane in self._lanes:
            lane.offer_nowait(record)

    async def wait_for_room(self, deadline: float) -> None:
        """Wait until every lane has room at the same moment, or ``deadline`` (anyio clock).

        Returns at once, without a checkpoint, when they have.
        """
        while True:
            full = [lane for lane in self._lanes if lane.full]
            if not full or anyio.current_time() >= deadline:
                return
            await full[0].wait_for_room(deadline)


class Guarded:
    """A user's processor as the stage before it sees it: whatever the processor raises stays
    here (the record is lost, ``failed`` counts it); start notifications skip a processor that
    does not want them."""

    __slots__ = ("_failed", "_processor")

    def __init__(
        self,
        processor: SpanProcessor,
        failed: Callable[[SpanProcessor, BaseException], None],
    ) -> None:
        self._processor = processor
        self._failed = failed

    def on_start(self, record: SpanRecord) -> None:
        processor = self._processor
        try:
            if processor.wants_starts:
                processor.on_start(record)
            else:
                processor.forward_start(record)
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            self._failed(processor, exc)

    def on_end(self, record: SpanRecord) -> None:
        try:
            self._processor.on_end(record)
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            self._failed(self._processor, exc)

    async def wait_for_room(self, deadline: float) -> None:
        """Returns at once: a processor may hold or drop what it is given."""


class _Lane(Protocol):
    wants_starts: bool

    @property
    def full(self) -> bool: ...

    def offer_nowait(self, record: SpanRecord) -> bool: ...

    async def wait_for_room(self, deadline: float) -> None: ...
