"""Lane: one bounded queue, one dispatcher and up to N exports in flight per exporter, with exact
accounting.

The hot path (:meth:`Lane.offer_nowait`) is synchronous: a ``deque.append`` behind a count
bound (``buffer_size``) and, when set, a byte bound (``max_buffer_bytes``, by a cheap estimate
computed once per record), plus a few integer updates. The dispatcher (:meth:`Lane.run`) is a
task in the tracer's task group. It wakes once per batch, not once per record: it takes records
from the queue and sleeps until the batch is full (the hot path wakes it), the oldest record has
waited ``flush_interval``, a flush is asked for, or the lane closes. Then it hands the batch to
an export task of its own and goes on with the next one, while fewer than
``max_concurrent_exports`` batches are in flight.

Order: batches are formed from the queue in order and their ``export()`` calls start in that
order (each export task waits for its turn); with one export at a time they also finish in order.
With more, a batch holding the end record of a span whose start record is in a batch still in
flight (exporters with ``wants_starts``) is not started until that batch has been exported or
dropped. A batch that fails transiently is retried whole, as the same tuple, in its own task,
with backoff, until it succeeds or the retry policy gives up; no record is ever in two batches.

Records that wait in the queue beyond :data:`COMPACT_AT` are packed into tuples the garbage
collector does not track (``_packing.py``), so that a long queue does not make collections slow;
a batch is unpacked into ``SpanRecord`` objects, in bounded slices, before it is exported.

Nothing the exporter does reaches the application or stops the lane: an exception of any kind
from ``export()`` (``KeyboardInterrupt``, ``SystemExit``, a cancellation that is not the export
task's own) fails that batch only; ``aclose()`` is bounded by its grace whatever it raises; the
dispatcher checkpoints after every batch, so an exporter that never awaits cannot freeze the
loop. The only cancellation an export obeys is its own (the drain deadline, ``export_timeout``).

Accounting, true at every moment (all counters only grow, except ``queued``/``in_flight``)::

    offered  == accepted + door drops (QUEUE_FULL, CLOSED)
    accepted == taken + queued
    taken    == exported + dropped after taking + in_flight
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from types import MappingProxyType
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._exceptions import RetryableExportError
from ._log import WARNING_INTERVAL, RateLimiter, logger
from ._options import LaneOptions
from ._packing import RECORD_BYTES, PackTable, estimate_size, item_key, pack, unpack
from ._records import SpanRecord
from ._runtime import (
    absorb_loop_cancellation,
    cancel_requested,
    checkpoint,
    is_cancellation,
    ki_protected,
)
from ._safe import exception_type, safe_str
from ._stats import DropReason, LaneStats
from .exporters._base import ExporterInfo, ExportResult

__all__ = ["ACLOSE_GRACE", "COMPACT_AT", "WARNING_INTERVAL", "Lane"]

#: Seconds an exporter's ``aclose()`` may take at shutdown, on top of ``drain_timeout``.
ACLOSE_GRACE = 1.0
#: Queued records at which the dispatcher packs the queue (see the module docstring). Below
#: it records stay as they were offered: a short queue costs a collection little, and packing
#: (about 0.6 us a record) plus unpacking (about 1 us) would be wasted on records that leave
#: within milliseconds.
COMPACT_AT = 2048
#: Seconds at most that freeing what was left queued at shutdown may take in slices.
RELEASE_SECONDS = 0.25
#: Packed records per block (one tuple, which the garbage collector does not look into).
PACK_BLOCK = 256
#: Seconds the dispatcher (packing) or an export task (unpacking) works before it yields.
SLICE_SECONDS = 0.0005
#: Records packed or unpacked between two looks at the clock.
_CLOCK_EVERY = 64


def _retry_after(exc: BaseException) -> float | None:
    """The ``retry_after`` of a retryable error, if it is a usable number of seconds.

    A subclass may have skipped ``__init__`` (no attribute at all) or replaced the value with
    anything; only a finite, non-negative number counts.
    """
    try:
        value = getattr(exc, "retry_after", None)
    except Exception:  # a property that raises
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except (OverflowError, ValueError):  # an int too large for a float, a hostile __float__
        return None
    return value if math.isfinite(value) and value >= 0 else None


class Flight:
    """One batch taken from the queue: formed, then exported (with retries) in a task of its own.

    Attributes:
        seq: its place in the lane's order of batches (0, 1, 2, ...).
        first: the lane's accepted-index of its first record.
        items: the records as they were queued (some of them packed).
        nbytes: their estimated size (0 unless the lane has a byte bound).
        starts: span ids of the start records it holds (tracked for the start-before-end
            barrier only).
        settled: True once its records are counted exported or dropped.
        export: the coroutine of its export task (see :meth:`Lane._dispatch`).
    """

    __slots__ = ("export", "first", "items", "nbytes", "seq", "settled", "starts")

    def __init__(self, seq: int, first: int, items: list[Any], nbytes: int) -> None:
        self.seq = seq
        self.first = first
        self.items = items
        self.nbytes = nbytes
        self.starts: tuple[int, ...] = ()
        self.settled = False
        self.export: Coroutine[Any, Any, None] | None = None

    @property
    def count(self) -> int:
        """Records in the batch."""
        return len(self.items)


class Lane:
    """A bounded queue, a dispatcher and its exports in front of one exporter."""

    def __init__(self, info: ExporterInfo, options: LaneOptions) -> None:
        self.exporter = info.exporter
        self.name = info.name
        self.wants_starts = info.wants_starts
        self.options = options
        self._export_call = info.export
        self._aclose_call = info.aclose
        self._buffer_size = options.buffer_size
        self._max_bytes = options.max_buffer_bytes
        concurrency = options.max_concurrent_exports
        self.max_concurrent_exports = (
            info.max_concurrent_exports if concurrency is None else concurrency
        )
        # The barrier only matters when starts and ends can be in flight at once.
        self._barrier = self.wants_starts and self.max_concurrent_exports > 1
        self._max_batch = options.max_batch_size
        self._flush_interval = float(options.flush_interval)
        self._export_timeout = float(options.export_timeout)
        self._retry = options.retry
        self._rng = random.Random()
        self._compact_at = COMPACT_AT

        # The queue: packed records (the oldest) before fresh ones, as offered. Packed records
        # are kept in blocks (tuples) of PACK_BLOCK: a collection never looks into an untracked
        # tuple, while it would visit every item of one big deque. One size per queued record
        # when the lane has a byte bound, in blocks alongside for packed ones.
        self._queue: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self._packed: deque[tuple[tuple[Any, ...], tuple[int, ...]]] = deque()
        self._packed_count = 0
        self._head: tuple[Any, ...] = ()  # the block being taken from, and its sizes
        self._head_sizes: tuple[int, ...] = ()
        self._head_pos = 0
        self._table = PackTable()
        # The batch being formed, and the batches in flight (by seq, oldest first).
        self._forming: list[Any] = []
        self._forming_bytes = 0
        self._flights: dict[int, Flight] = {}
        self._start_owner: dict[int, int] = {}  # span id of a start in flight -> flight seq
        self._next_seq = 0
        self._next_call = 0  # the seq whose export() may start next
        self._skipped: set[int] = set()  # seqs of export tasks that ended before their turn
        self._flight_group: TaskGroup | None = None
        self._unpacking: anyio.Lock | None = None  # export tasks unpack one at a time
        self._garbage: list[deque[Any]] = []  # queues left at shutdown, to free in slices
        self._fly_call: Callable[[Flight], Coroutine[Any, Any, None]] = self._fly

        self._cancel_scope: anyio.CancelScope
        self._done: anyio.Event
        self._opened = False

        # Counters; see the module docstring for how they relate.
        self._accepted = 0
        self._door_drops = 0
        self._taken = 0
        self._exported = 0
        self._dropped: dict[DropReason, int] = {}
        self._retries = 0
        self._batches = 0
        self._high_water = 0
        self._in_flight = 0
        self._held_bytes = 0
        self._high_water_bytes = 0

        self._closed = True  # no records accepted (until open(), and again after close())
        self._flush_target = 0  # records up to this accepted index must go out without waiting
        self._wake_at: float = math.inf  # queue length at which the hot path wakes the dispatcher
        self._wakeup: anyio.Event | None = None  # the dispatcher sleeps on this
        self._room: anyio.Event | None = None  # async offers wait on this for buffer space
        self._progress: anyio.Event | None = None  # flushes wait on this for settled records
        self._turn: anyio.Event | None = None  # export tasks wait on this for their turn
        self._running = False
        self._warnings = RateLimiter(WARNING_INTERVAL)

    def __repr__(self) -> str:
        return f"<Lane {self.name!r} {'closed' if self._closed else 'open'}>"

    def open(self) -> None:
        """Start accepting records; called once, in the event loop."""
        if self._opened:
            raise RuntimeError(f"lane {self.name!r} was opened already")
        self._opened = True
        # Shielded: cancelling a scope around the dispatcher must not kill it before the
        # tracer's shutdown has drained it (invariant 5); only cancel(), at drain_timeout, does.
        self._cancel_scope = anyio.CancelScope(shield=True)
        self._done = anyio.Event()
        self._closed = False

    # --- the hot path --------------------------------------------------------------------------

    def offer_nowait(self, record: SpanRecord) -> bool:
        """Offer a record without waiting; a full or closed lane drops it and counts it.

        Returns:
            True if the record entered the queue.
        """
        if self._closed:
            self._drop_at_door(DropReason.CLOSED)
            return False
        queued = self._accepted - self._taken
        if queued >= self._buffer_size:
            self._drop_at_door(DropReason.QUEUE_FULL)
            return False
        if self._max_bytes is not None and not self._admit_bytes(record):
            self._drop_at_door(DropReason.QUEUE_FULL)
            return False
        queue = self._queue
        queue.append(record)
        self._accepted += 1
        if queued >= self._high_water:
            self._high_water = queued + 1
        if len(queue) >= self._wake_at and self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        return True

    def _admit_bytes(self, record: SpanRecord) -> bool:
        """Reserve the record's estimated size under the byte bound; False if it does not fit."""
        size = _estimate(record)
        held = self._held_bytes + size
        if held > self._max_bytes:  # type: ignore[operator]
            return False
        self._held_bytes = held
        if held > self._high_water_bytes:
            self._high_water_bytes = held
        self._sizes.append(size)
        return True

    @property
    def full(self) -> bool:
        """True when the lane has no room for another record (and is open)."""
        return not self.has_room()

    def has_room(self, record: SpanRecord | None = None) -> bool:
        """True when the lane would accept ``record`` now (any record, when None), or is
        closed (then it would count it at once, without waiting)."""
        if self._closed:
            return True
        if self._accepted - self._taken >= self._buffer_size:
            return False
        if self._max_bytes is None:
            return True
        size = 0 if record is None else _estimate(record)
        return self._held_bytes + max(size, 1) <= self._max_bytes

    async def wait_for_room(self, deadline: float, record: SpanRecord | None = None) -> None:
        """Wait until the lane has room (for ``record``, under a byte bound), closes, or
        ``deadline`` (anyio clock) passes.

        Returns at once, without a checkpoint, when there is room. The caller offers its record
        right after, without awaiting in between, so the room found is still there.
        """
        if self.has_room(record):
            return
        with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
            while not self.has_room(record):
                if self._room is None:
                    self._room = anyio.Event()
                await self._room.wait()

    def count_at_door(self, reason: DropReason, count: int) -> None:
        """Count ``count`` records offered and dropped at once (never entering the queue).

        For records the tracer cannot even build any more (spans still open when the drain
        deadline has passed) and for records arriving after the lane closed.
        """
        if count > 0:
            self._door_drops += count
            self._count_drop(reason, count)

    # --- accounting --------------------------------------------------------------------------

    def _drop_at_door(self, reason: DropReason) -> None:
        self._door_drops += 1
        self._count_drop(reason, 1)

    def _count_drop(self, reason: DropReason, count: int, detail: str = "") -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count
        if self._warnings.allow(reason):
            logger.warning(
                "spanlane lane %r dropped %d record(s): %s%s (total for this reason: %d; "
                "next warning for it in %.0f s at the earliest)",
                self.name,
                count,
                reason.value,
                f" ({detail})" if detail else "",
                self._dropped[reason],
                WARNING_INTERVAL,
            )

    @property
    def closed(self) -> bool:
        """True once the lane accepts no more records."""
        return self._closed

    @property
    def settled(self) -> int:
        """Records taken from the queue and exported or dropped since."""
        return self._taken - self._in_flight

    @property
    def accepted(self) -> int:
        """Records that entered the queue so far."""
        return self._accepted

    def pending(self, target: int) -> int:
        """How many of the first ``target`` accepted records are not yet exported or dropped.

        With several batches in flight a later batch may settle before an earlier one, so this
        looks at each unsettled batch rather than at a count.
        """
        pending = max(0, target - self._taken)  # still queued
        forming = len(self._forming)
        if forming:
            first = self._taken - forming
            pending += max(0, min(target, first + forming) - first)
        for flight in self._flights.values():
            if flight.first >= target:
                break
            pending += min(target, flight.first + flight.count) - flight.first
        return pending

    def stats(self) -> LaneStats:
        """A snapshot of the lane's counters."""
        return LaneStats(
            exporter=self.name,
            offered=self._accepted + self._door_drops,
            exported=self._exported,
            queued=self._accepted - self._taken,
            in_flight=self._in_flight,
            dropped=MappingProxyType(dict(self._dropped)),
            retries=self._retries,
            batches=self._batches,
            high_water=self._high_water,
            buffered_bytes=self._held_bytes,
            high_water_bytes=self._high_water_bytes,
        )

    def buffer_used(self) -> int:
        """What the queue itself holds (a cross-check for ``queued``)."""
        return len(self._queue) + self._packed_count

    # --- flush and close ---------------------------------------------------------------------

    def request_flush(self) -> int:
        """Ask the dispatcher to send everything accepted so far at once; return that count."""
        target = self._accepted
        if target > self._flush_target:
            self._flush_target = target
        self._wake_worker()
        return target

    async def wait_settled(self, target: int) -> None:
        """Wait until the first ``target`` accepted records are exported or dropped."""
        while self._running and self.pending(target):
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()

    def close(self) -> None:
        """Stop accepting records; the dispatcher drains what is queued, then finishes."""
        if self._closed:
            return
        self._closed = True
        if not self._opened:
            return
        self._wake_worker()
        self._notify_room()

    def cancel(self) -> None:
        """Cancel the dispatcher and its exports (at the drain deadline); what they held is
        counted."""
        if self._opened:
            self._cancel_scope.cancel()

    async def wait_done(self) -> None:
        """Wait until the lane has finished, including the exporter's ``aclose()``."""
        if self._opened:
            await self._done.wait()

    @property
    def done(self) -> bool:
        """True once the lane has finished (or when it never started)."""
        return not self._opened or self._done.is_set()

    def _wake_worker(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _notify_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    def _notify_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    # --- the dispatcher ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The dispatcher: run until the lane is closed and drained, or cancelled."""
        self._running = True
        # Export tasks are KeyboardInterrupt-protected on trio, as the dispatcher is: a real
        # Ctrl-C goes to the application, never into an exporter.
        self._fly_call = ki_protected(self._fly)
        try:
            with self._cancel_scope:
                async with anyio.create_task_group() as flights:
                    self._flight_group = flights
                    task_status.started()
                    while True:
                        try:
                            await self._drain()
                            break
                        except BaseException as exc:
                            # asyncio's teardown cancels every task of the loop; the dispatcher
                            # keeps what it holds and drains on, until its own scope is
                            # cancelled (the tracer's shutdown deadline).
                            if not self._absorbs(exc):
                                raise
        except Exception as exc:
            # Only a bug in spanlane gets here (exporter failures are handled per batch). The
            # caller's code must not pay for it: count what is left, close the exporter, finish.
            logger.error("spanlane lane %r: dispatcher failed", self.name, exc_info=exc)
        finally:
            # Also when the loop itself cancels the task at its end (a tracer never exited):
            # the cancellation propagates once the books are closed.
            self._running = False
            self._flight_group = None
            try:
                self._settle_leftovers()
                await self._release()
            finally:
                try:
                    await self._aclose_exporter()
                finally:
                    self._notify_progress()
                    self._done.set()

    def _absorbs(self, exc: BaseException) -> bool:
        """True when ``exc`` is asyncio's end-of-loop cancellation, undone here so that the
        lane drains on until its own scope is cancelled (the tracer's drain deadline)."""
        return (
            is_cancellation(exc)
            and not self._cancel_scope.cancel_called
            and absorb_loop_cancellation()
        )

    async def _drain(self) -> None:
        since = time.monotonic()  # the oldest waiting record arrived no earlier than this
        while True:
            if len(self._flights) >= self.max_concurrent_exports:
                await self._compact_or_sleep()
                continue
            self._fill()
            forming = self._forming
            if not forming:
                if self._closed:
                    break
                await self._sleep(wake_at=1, seconds=math.inf)
                since = time.monotonic()
                continue
            if len(forming) < self._max_batch and not self._due():
                remaining = since + self._flush_interval - time.monotonic()
                if remaining > 0:
                    await self._sleep(wake_at=self._max_batch - len(forming), seconds=remaining)
                    continue
            if self._barrier and self._blocked():
                await self._compact_or_sleep()
                continue
            # Records arriving from now on will have waited at most since this batch left.
            since = time.monotonic()
            self._dispatch()
            # Always yield between batches: an exporter that never awaits (and records arriving
            # as fast as it exports) must not keep the loop to itself.
            await checkpoint()
        while self._flights:
            await self._sleep(wake_at=math.inf, seconds=math.inf)

    async def _compact_or_sleep(self) -> None:
        """While no batch can go: pack the queue if it is long, else sleep until something
        changes (a batch settles, the queue grows long, a flush or the close)."""
        if len(self._queue) >= self._compact_at:
            await self._compact()
        else:
            await self._sleep(wake_at=self._compact_at, seconds=math.inf)

    async def _sleep(self, wake_at: float, seconds: float) -> None:
        """Sleep until ``wake_at`` records are queued fresh, a wake-up, or ``seconds`` pass."""
        self._wakeup = anyio.Event()
        self._wake_at = wake_at
        try:
            with anyio.move_on_after(seconds):
                await self._wakeup.wait()
        finally:
            self._wakeup = None
            self._wake_at = math.inf

    async def _compact(self) -> None:
        """Pack the fresh part of the queue into blocks, in slices of :data:`SLICE_SECONDS`.

        Only this task takes records from the queue, so what was there when packing began is
        still there at every step; records offered meanwhile wait for the next round.
        """
        queue, sizes, table = self._queue, self._sizes, self._table
        bounded = self._max_bytes is not None
        deadline = time.perf_counter() + SLICE_SECONDS
        count = len(queue)
        while count > 0:
            size = min(count, PACK_BLOCK)
            popleft = queue.popleft
            block = tuple([pack(popleft(), table) for _ in range(size)])
            block_sizes = tuple([sizes.popleft() for _ in range(size)]) if bounded else ()
            self._packed.append((block, block_sizes))
            self._packed_count += size
            count -= size
            if count > 0 and time.perf_counter() >= deadline:
                await checkpoint()
                deadline = time.perf_counter() + SLICE_SECONDS

    def _fill(self) -> None:
        """Move queued records into the batch being formed, oldest first, without waiting."""
        forming = self._forming
        room = self._max_batch - len(forming)
        if room <= 0:
            return
        taken = 0
        nbytes = 0
        bounded = self._max_bytes is not None
        while taken < room and self._packed_count:
            position = self._head_pos
            if position >= len(self._head):
                self._head, self._head_sizes = self._packed.popleft()
                position = 0
            end = min(position + room - taken, len(self._head))
            forming.extend(self._head[position:end])
            if bounded:
                nbytes += sum(self._head_sizes[position:end])
            taken += end - position
            self._packed_count -= end - position
            self._head_pos = end
        if self._head_pos >= len(self._head) and self._head:
            self._head, self._head_sizes, self._head_pos = (), (), 0
        queue = self._queue
        fresh = min(room - taken, len(queue))
        if fresh:
            popleft = queue.popleft
            forming.extend([popleft() for _ in range(fresh)])
            if bounded:
                sizes = self._sizes
                nbytes += sum([sizes.popleft() for _ in range(fresh)])
            taken += fresh
        if taken:
            self._forming_bytes += nbytes
            self._take(taken)

    def _take(self, count: int) -> None:
        self._taken += count
        self._in_flight += count
        self._notify_room()

    def _due(self) -> bool:
        """True when the batch must go now: a flush covers it, or the lane is closing."""
        return self._closed or self._flush_target > self._taken - len(self._forming)

    def _blocked(self) -> bool:
        """True when the batch holds the end of a span whose start is in a batch in flight."""
        owners = self._start_owner
        if not owners:
            return False
        for item in self._forming:
            span_id, is_start = item_key(item)
            if not is_start and span_id in owners:
                return True
        return False

    def _dispatch(self) -> None:
        """Hand the formed batch to an export task of its own."""
        items = self._forming
        flight = Flight(self._next_seq, self._taken - len(items), items, self._forming_bytes)
        self._next_seq += 1
        self._forming = []
        self._forming_bytes = 0
        if self._barrier:
            starts = tuple(span_id for span_id, is_start in map(item_key, items) if is_start)
            flight.starts = starts
            for span_id in starts:
                self._start_owner[span_id] = flight.seq
        self._flights[flight.seq] = flight
        assert self._flight_group is not None
        # The coroutine is kept: a task cancelled before its first step (the lane cancelled
        # while this task was on its way here) never awaits it; the leftovers count its batch
        # and close it (else Python warns that it was never awaited).
        flight.export = self._fly_call(flight)
        self._flight_group.start_soon(_given, flight.export, name=f"spanlane export {self.name}")

    # --- exports -----------------------------------------------------------------------------

    async def _fly(self, flight: Flight) -> None:
        """An export task: build the batch, wait for its turn, export it with retries."""
        try:
            batch: tuple[SpanRecord, ...] | None = None
            while True:
                try:
                    if batch is None:
                        batch = await self._build(flight)
                    while flight.seq > self._next_call:
                        if self._turn is None:
                            self._turn = anyio.Event()
                        await self._turn.wait()
                    # First time here, the turn is this task's to take (and pass on).
                    await self._export(flight, batch, flight.seq == self._next_call)
                    break
                except BaseException as exc:
                    # asyncio's teardown cancels this task too; its batch is exported on until
                    # the lane's own scope is cancelled (the tracer's drain deadline).
                    if not self._absorbs(exc):
                        raise
        except Exception as exc:
            # A bug in spanlane's own bookkeeping around the export: the batch is lost (and
            # counted), the lane is not.
            logger.error("spanlane lane %r: export step failed", self.name, exc_info=exc)
            self._settle(flight, DropReason.EXPORT_FAILED, _describe(exc))
        finally:
            # Cancelled at the drain deadline (or by the loop's end) with the batch unsettled.
            self._settle(flight, DropReason.SHUTDOWN_TIMEOUT, "drain_timeout expired")
            if flight.seq == self._next_call:  # never took its turn: let the next one go
                self._pass_turn(flight.seq)
            elif flight.seq > self._next_call:
                self._skipped.add(flight.seq)

    async def _build(self, flight: Flight) -> tuple[SpanRecord, ...]:
        """The batch as exporters receive it: packed records unpacked, in bounded slices."""
        items = flight.items
        if not any(type(item) is tuple for item in items):
            return tuple(items)
        # One export task at a time, so that several tasks' slices do not fill one turn of the
        # loop between them.
        if self._unpacking is None:
            self._unpacking = anyio.Lock()
        async with self._unpacking:
            return await self._unpack(items)

    async def _unpack(self, items: list[Any]) -> tuple[SpanRecord, ...]:
        shared = self._table.objects
        records: list[SpanRecord] = []
        deadline = time.perf_counter() + SLICE_SECONDS
        for start in range(0, len(items), _CLOCK_EVERY):
            records.extend(unpack(item, shared) for item in items[start : start + _CLOCK_EVERY])
            if time.perf_counter() >= deadline:
                await checkpoint()
                deadline = time.perf_counter() + SLICE_SECONDS
        return tuple(records)

    def _pass_turn(self, seq: int) -> None:
        following = seq + 1
        while following in self._skipped:
            self._skipped.discard(following)
            following += 1
        self._next_call = following
        if self._turn is not None:
            self._turn.set()
            self._turn = None

    async def _export(self, flight: Flight, batch: tuple[SpanRecord, ...], first: bool) -> None:
        """Export one batch, retrying per the policy; settle it either way."""
        policy = self._retry
        failures = 0
        timeouts = 0
        window_end = time.monotonic() + policy.max_elapsed
        while True:
            retry_after: float | None = None
            with anyio.move_on_after(self._export_timeout) as attempt_scope:
                if first:
                    first = False
                    self._pass_turn(flight.seq)
                try:
                    result = await self._export_call(batch)
                except RetryableExportError as exc:
                    retry_after = _retry_after(exc)
                    logger.debug("spanlane lane %r: attempt failed: %s", self.name, _describe(exc))
                except BaseException as exc:
                    if is_cancellation(exc) and self._own_cancellation(attempt_scope):
                        raise
                    # Anything else is the exporter's: KeyboardInterrupt, SystemExit and
                    # GeneratorExit raised by export() included (on trio a real Ctrl-C cannot
                    # land here: export tasks are KeyboardInterrupt-protected), and a
                    # cancellation that is not this task's (an awaited future that something
                    # else cancelled). It fails this batch; the lane lives on.
                    detail = _describe(exc)
                    logger.debug("spanlane lane %r: export failed: %s", self.name, detail)
                    self._settle(flight, DropReason.EXPORT_FAILED, detail)
                    return
                else:
                    self._settle(flight, None, result=result)
                    return
            failures += 1
            if attempt_scope.cancelled_caught:
                timeouts += 1
            reason = (
                DropReason.EXPORT_TIMEOUT if timeouts == failures else DropReason.RETRIES_EXHAUSTED
            )
            if policy.max_attempts is not None and failures >= policy.max_attempts:
                self._settle(flight, reason, f"{failures} failed attempt(s)")
                return
            delay = policy.backoff(failures, retry_after, self._rng)
            if time.monotonic() + delay > window_end:
                self._settle(
                    flight,
                    reason,
                    f"{failures} failed attempt(s) within the retry window of "
                    f"{policy.max_elapsed} s",
                )
                return
            self._retries += 1
            await anyio.sleep(delay)

    def _own_cancellation(self, attempt_scope: anyio.CancelScope) -> bool:
        """True when a cancellation seen in ``export()`` is meant for this export task.

        That is: the drain deadline or ``export_timeout`` fired, or (asyncio) something asked to
        cancel the task itself, such as the event loop shutting down.
        """
        return self._cancel_scope.cancel_called or attempt_scope.cancel_called or cancel_requested()

    def _settle(
        self,
        flight: Flight,
        reason: DropReason | None,
        detail: str = "",
        result: object = None,
    ) -> None:
        """Count a batch exported (``reason`` None) or dropped, once; free its place."""
        if flight.settled:
            return
        flight.settled = True
        count = flight.count
        self._flights.pop(flight.seq, None)
        owners = self._start_owner
        for span_id in flight.starts:
            if owners.get(span_id) == flight.seq:
                del owners[span_id]
        self._in_flight -= count
        self._held_bytes -= flight.nbytes
        if reason is None:
            rejected, unencodable = _undelivered(result, count)
            self._exported += count - rejected - unencodable
            self._batches += 1
            if rejected:
                self._count_drop(DropReason.REJECTED, rejected, "refused by the receiver")
            if unencodable:
                self._count_drop(
                    DropReason.UNENCODABLE, unencodable, "the exporter could not encode"
                )
        else:
            self._count_drop(reason, count, detail)
        self._notify_progress()
        self._notify_room()
        self._wake_worker()

    def abandon(self) -> None:
        """Count what the lane still holds as ``SHUTDOWN_TIMEOUT`` now, with its tasks running.

        For the end of the shutdown: the lane was cancelled, its grace has passed, and an export
        or ``aclose()`` that ignores cancellation still holds it. Those tasks finish in the
        background, or never; the books close without them (a batch settles once, so one that
        finishes later changes nothing).
        """
        if self._opened and not self._done.is_set():
            self._settle_leftovers(tasks_over=False)

    def _settle_leftovers(self, *, tasks_over: bool = True) -> None:
        """Count what the lane still holds, in flight and queued, as lost to shutdown."""
        for flight in list(self._flights.values()):
            if tasks_over and flight.export is not None:
                flight.export.close()  # the export tasks are over: this one never started
            self._settle(flight, DropReason.SHUTDOWN_TIMEOUT, "drain_timeout expired")
        forming = len(self._forming)
        if forming:
            self._forming.clear()
            self._in_flight -= forming
            self._held_bytes -= self._forming_bytes
            self._forming_bytes = 0
            self._count_drop(DropReason.SHUTDOWN_TIMEOUT, forming, "drain_timeout expired")
        self.close()
        leftover = len(self._queue) + self._packed_count
        if leftover:
            if self._max_bytes is not None:
                held = sum(self._sizes) + sum(self._head_sizes[self._head_pos :])
                held += sum(sum(block_sizes) for _, block_sizes in self._packed)
                self._held_bytes -= held
            # Freed later, in slices (see _release): a million records take a while to free.
            self._garbage.append(self._queue)
            self._garbage.append(self._packed)
            self._queue = deque()
            self._packed = deque()
            self._sizes.clear()
            self._packed_count = 0
            self._head, self._head_sizes, self._head_pos = (), (), 0
            self._taken += leftover
            self._count_drop(DropReason.SHUTDOWN_TIMEOUT, leftover, "drain_timeout expired")
        self._notify_progress()

    async def _release(self) -> None:
        """Free what was left queued at shutdown a slice at a time, within
        :data:`RELEASE_SECONDS` (the books are already closed); the rest at once."""
        garbage = self._garbage
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_SECONDS):
            for container in garbage:
                while container:
                    for _ in range(min(len(container), 16)):
                        container.pop()
                    await checkpoint()
        garbage.clear()

    async def _aclose_exporter(self) -> None:
        """Run the exporter's ``aclose()`` within :data:`ACLOSE_GRACE`, whatever it does."""
        with anyio.move_on_after(ACLOSE_GRACE, shield=True) as scope:
            try:
                result = self._aclose_call()
                if hasattr(result, "__await__"):
                    await result
            except BaseException as exc:
                # Ours (the grace expired, or the loop is shutting down): the scope handles it.
                if is_cancellation(exc) and (scope.cancel_called or cancel_requested()):
                    raise
                # Anything else, a cancellation from `task.cancel(); await task` included, is
                # the exporter's own failure.
                if self._warnings.allow("aclose"):
                    logger.warning(
                        "spanlane lane %r: exporter aclose() failed: %s", self.name, _describe(exc)
                    )
        if scope.cancelled_caught:
            logger.warning(
                "spanlane lane %r: exporter aclose() took longer than %.1f s; abandoned",
                self.name,
                ACLOSE_GRACE,
            )


def _estimate(record: SpanRecord) -> int:
    try:
        return estimate_size(record)
    except Exception:  # a hand-built record with odd fields: count the base cost
        return RECORD_BYTES


def _describe(exc: BaseException) -> str:
    """``Type: message`` for a log line; never raises, whatever the exception's ``__str__``."""
    return f"{exception_type(exc)}: {safe_str(exc, 500)}"


def _undelivered(result: object, count: int) -> tuple[int, int]:
    """``(rejected, unencodable)`` from what ``export()`` returned, each within ``0..count``."""
    if type(result) is ExportResult:
        rejected, unencodable = result.rejected, result.unencodable
    elif type(result) is int:
        rejected, unencodable = result, 0
    else:
        return 0, 0
    rejected = min(max(rejected, 0), count) if type(rejected) is int else 0
    unencodable = min(max(unencodable, 0), count - rejected) if type(unencodable) is int else 0
    return rejected, unencodable


def _given(coroutine: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
    """Hand an already created coroutine to ``start_soon`` (which calls what it is given)."""
    return coroutine
