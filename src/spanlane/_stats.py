"""Accounting snapshots: why records were dropped, and what each lane has done with its records.

For every lane, at any moment::

    offered == exported + queued + in_flight + sum(dropped.values())

and once the tracer has closed, ``queued == in_flight == 0``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs


class DropReason(enum.Enum):
    """Why a record was not exported. Every drop is counted under exactly one reason."""

    #: The lane's buffer was full when the record was offered (``on_full="drop"``, a sync span
    #: under ``on_full="wait"``, or an async span that waited ``wait_timeout`` in vain).
    QUEUE_FULL = "queue_full"
    #: The exporter raised a non-retryable exception for the record's batch.
    EXPORT_FAILED = "export_failed"
    #: Every attempt at exporting the batch ran out of ``export_timeout``, until the retry
    #: policy gave up.
    EXPORT_TIMEOUT = "export_timeout"
    #: The batch kept failing (retryable errors, or attempts that timed out) until the retry
    #: policy gave up: ``max_attempts`` or the retry window ``max_elapsed``.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: The record was still queued or in flight when ``drain_timeout`` expired at shutdown.
    SHUTDOWN_TIMEOUT = "shutdown_timeout"
    #: The record was offered while the tracer was not open: before it was entered, or after
    #: it had closed.
    CLOSED = "closed"
    #: The receiving end accepted the batch but rejected this record (OTLP partial success).
    REJECTED = "rejected"
    #: The exporter could not encode this record even after sanitising it, and skipped it so
    #: that the rest of its batch could be delivered.
    UNENCODABLE = "unencodable"


@attrs.frozen
class LaneStats:
    """A snapshot of one lane's counters.

    Attributes:
        exporter: a name for the lane's exporter (its class name, or its ``name`` attribute).
        offered: records offered to the lane, including those dropped at the door.
        exported: records the exporter accepted.
        queued: records waiting in the lane's queue.
        in_flight: records taken from the queue (into a batch being formed or being exported)
            and not yet exported or dropped.
        dropped: drops by reason; reasons with no drops are absent.
        retries: export attempts that were retries of an earlier failed attempt.
        batches: batches the exporter accepted.
        high_water: the most records the lane's queue has held at once.
        buffered_bytes: the estimated bytes of the records the lane holds (queued and in
            flight); estimated only on lanes with ``max_buffer_bytes``, 0 on others.
        high_water_bytes: the most ``buffered_bytes`` has been.
    """

    exporter: str
    offered: int
    exported: int
    queued: int
    in_flight: int
    dropped: Mapping[DropReason, int]
    retries: int
    batches: int
    high_water: int
    buffered_bytes: int = 0
    high_water_bytes: int = 0

    @property
    def dropped_total(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        """True when the accounting identity holds for this snapshot."""
        return self.offered == self.exported + self.queued + self.in_flight + self.dropped_total

    def __str__(self) -> str:
        drops = ", ".join(f"{reason.value} {count}" for reason, count in self.dropped.items())
        return (
            f"{self.exporter}: offered {self.offered}, exported {self.exported}, "
            f"queued {self.queued}, in flight {self.in_flight}, "
            f"dropped {self.dropped_total}{f' ({drops})' if drops else ''}, "
            f"retries {self.retries}, batches {self.batches}, high water {self.high_water}"
            + (
                f", {self.buffered_bytes} bytes buffered (high water {self.high_water_bytes})"
                if self.high_water_bytes
                else ""
            )
        )


@attrs.frozen
class Stats:
    """A snapshot of a tracer's counters; valid during and after the tracer's lifetime.

    Only *recording* spans are counted as started and ended: a span the sampler did not sample
    is counted in ``spans_sampled_out`` when it starts, and nowhere else. Every recording span
    that has ended is, at every moment, exactly one of: offered to the lanes (and there exported,
    queued, in flight or dropped with a reason), discarded by the tail stage
    (``spans_sampled_out_tail``), held by it (``spans_pending_tail``), lost to a processor that
    raised (``processor_errors``), or waiting in the thread ``inbox``.

    Attributes:
        spans_started: recording spans started.
        spans_ended: recording spans ended, including those ended as unfinished at shutdown
            or when garbage-collected without being ended.
        lanes: one :class:`LaneStats` per exporter, in the order the exporters were given.
        inbox: records ended (or started) in other threads, waiting for the event loop to hand
            them to the lanes.
        ignored_calls: calls whose argument could not be used and was ignored (a status that is
            not a ``StatusCode``, a timestamp that is not an int or is out of range, ...);
            each is also logged, rate-limited.
        processor_errors: records lost because a processor raised.
        spans_sampled_out: spans not exported because of a sampling decision: spans the head
            sampler did not sample (counted when they start; they never become records), plus
            ``spans_sampled_out_tail``.
        spans_sampled_out_tail: records of ended spans that tail sampling discarded because
            their trace was not kept.
        spans_pending_tail: records of ended spans held by tail sampling, waiting for their
            trace's decision.
        sampler_errors: calls to the head sampler that raised (each span counted as not
            sampled); logged, rate-limited.
    """

    spans_started: int
    spans_ended: int
    lanes: tuple[LaneStats, ...]
    inbox: int = 0
    ignored_calls: int = 0
    processor_errors: int = 0
    spans_sampled_out: int = 0
    spans_sampled_out_tail: int = 0
    spans_pending_tail: int = 0
    sampler_errors: int = 0

    @property
    def dropped(self) -> Mapping[DropReason, int]:
        """Drops by reason, summed over all lanes."""
        totals: dict[DropReason, int] = {}
        for lane in self.lanes:
            for reason, count in lane.dropped.items():
                totals[reason] = totals.get(reason, 0) + count
        return MappingProxyType(totals)

    def __str__(self) -> str:
        lines = [
            f"spans started {self.spans_started}, ended {self.spans_ended}"
            + (f", {self.spans_sampled_out} sampled out" if self.spans_sampled_out else "")
            + (f", {self.spans_pending_tail} pending tail" if self.spans_pending_tail else "")
            + (f", {self.inbox} in the thread inbox" if self.inbox else "")
            + (f", {self.ignored_calls} ignored call(s)" if self.ignored_calls else "")
            + (f", {self.processor_errors} processor error(s)" if self.processor_errors else "")
            + (f", {self.sampler_errors} sampler error(s)" if self.sampler_errors else "")
        ]
        lines.extend(f"  {lane}" for lane in self.lanes)
        return "\n".join(lines)


@attrs.frozen
class FlushReport:
    """What :meth:`Tracer.flush` achieved.

    Attributes:
        completed: True when every record offered before the call was exported or dropped.
        pending: per lane, how many of those records were still queued or in flight when the call
            returned (all zero when ``completed``).
        stats: the tracer's counters when the call returned.
    """

    completed: bool
    pending: tuple[int, ...]
    stats: Stats
