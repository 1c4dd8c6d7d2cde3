"""Lane: one bounded stream and one drain worker per exporter, with exact accounting.

The hot path (:meth:`Lane.offer_nowait`) is synchronous: a ``send_nowait`` into a bounded anyio
memory-object stream plus a few integer updates. The drain worker (:meth:`Lane.run`) is a task in
the tracer's task group. It wakes once per batch, not once per record: it takes records with
``receive_nowait`` and sleeps until the batch is full (the hot path wakes it), the oldest record
has waited ``flush_interval``, a flush is asked for, or the lane closes.

Exports within a lane are sequential: a batch is retried whole before any later batch is sent, so
an exporter sees records in exactly the order they entered the stream.

Nothing the exporter does reaches the application or stops the worker: an exception of any kind
from ``export()`` (``KeyboardInterrupt``, ``SystemExit``, a cancellation that is not the
worker's own) fails that batch only; ``aclose()`` is bounded by its grace whatever it raises; the
worker checkpoints after every batch, so an exporter that never awaits cannot freeze the loop.
The only cancellation the worker obeys is its own (the drain deadline, ``export_timeout``).

Accounting, true at every moment (all counters only grow, except ``queued``/``in_flight``)::

    offered  == accepted + door drops (QUEUE_FULL, CLOSED)
    accepted == taken + queued
    taken    == exported + worker drops + in_flight
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from types import MappingProxyType

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._exceptions import RetryableExportError
from ._log import WARNING_INTERVAL, RateLimiter, logger
from ._options import LaneOptions
from ._records import SpanRecord
from ._runtime import absorb_loop_cancellation, cancel_requested, checkpoint, is_cancellation
from ._safe import exception_type, safe_str
from ._stats import DropReason, LaneStats
from .exporters._base import ExporterInfo, ExportResult

__all__ = ["ACLOSE_GRACE", "WARNING_INTERVAL", "Lane"]

#: Seconds an exporter's ``aclose()`` may take at shutdown, on top of ``drain_timeout``.
ACLOSE_GRACE = 1.0


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


class Lane:
    """A bounded buffer and a drain worker in front of one exporter."""

    def __init__(self, info: ExporterInfo, options: LaneOptions) -> None:
        self.exporter = info.exporter
        self.name = info.name
        self.wants_starts = info.wants_starts
        self.options = options
        self._export_call = info.export
        self._aclose_call = info.aclose
        self._buffer_size = options.buffer_size
        # The stream, events and cancel scope are made by open(), inside the event loop: a lane
        # that is never opened then holds nothing that needs closing, and a Tracer can be built
        # outside a running loop.
        self._send: MemoryObjectSendStream[SpanRecord]
        self._receive: MemoryObjectReceiveStream[SpanRecord]
        self._cancel_scope: anyio.CancelScope
        self._done: anyio.Event
        self._opened = False
        self._max_batch = options.max_batch_size
        self._flush_interval = float(options.flush_interval)
        self._export_timeout = float(options.export_timeout)
        self._retry = options.retry
        self._rng = random.Random()

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

        self._closed = True  # no records accepted (until open(), and again after close())
        self._flush_target = 0  # records up to this accepted index must go out without waiting
        self._wake_at = math.inf  # queued count at which the hot path wakes the worker
        self._wakeup: anyio.Event | None = None  # the worker sleeps on this while batching
        self._room: anyio.Event | None = None  # async offers wait on this for buffer space
        self._progress: anyio.Event | None = None  # flushes wait on this for settled records
        self._running = False
        self._warnings = RateLimiter(WARNING_INTERVAL)

    def __repr__(self) -> str:
        return f"<Lane {self.name!r} {'closed' if self._closed else 'open'}>"

    def open(self) -> None:
        """Create the stream and start accepting records; called once, in the event loop."""
        if self._opened:
            raise RuntimeError(f"lane {self.name!r} was opened already")
        self._opened = True
        self._send, self._receive = anyio.create_memory_object_stream[SpanRecord](self._buffer_size)
        self._send_nowait = self._send.send_nowait
        # Shielded: cancelling a scope around the worker must not kill it before the tracer's
        # shutdown has drained it (invariant 5); only cancel(), at drain_timeout, does.
        self._cancel_scope = anyio.CancelScope(shield=True)
        self._done = anyio.Event()
        self._closed = False

    # --- the hot path --------------------------------------------------------------------------

    def _try_send(self, record: SpanRecord) -> bool:
        """Put a record in the stream if there is room; never counts a drop."""
        if self._closed:
            return False
        try:
            self._send_nowait(record)
        except anyio.WouldBlock:
            return False
        self._accepted += 1
        queued = self._accepted - self._taken
        if queued > self._high_water:
            self._high_water = queued
        if queued >= self._wake_at and self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        return True

    def offer_nowait(self, record: SpanRecord) -> bool:
        """Offer a record without waiting; a full or closed lane drops it and counts it.

        Returns:
            True if the record entered the stream.
        """
        if self._try_send(record):
            return True
        self._drop_at_door(DropReason.CLOSED if self._closed else DropReason.QUEUE_FULL)
        return False

    @property
    def full(self) -> bool:
        """True when the stream has no room for another record (and the lane is open)."""
        return not self._closed and self._accepted - self._taken >= self._buffer_size

    async def wait_for_room(self, deadline: float) -> None:
        """Wait until the stream has room, the lane closes, or ``deadline`` (anyio clock).

        Returns at once, without a checkpoint, when there is room. The caller offers its record
        right after, without awaiting in between, so the room found is still there. (Waiting
        on spanlane's own event rather than the stream's ``send()``: a cancelled ``send()``
        cannot tell whether the record went in, and the count must be exact.)
        """
        if not self.full:
            return
        with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
            while self.full:
                if self._room is None:
                    self._room = anyio.Event()
                await self._room.wait()

    def count_at_door(self, reason: DropReason, count: int) -> None:
        """Count ``count`` records offered and dropped at once (never entering the stream).

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
        """Records that went through the stream and were exported or dropped by the worker."""
        return self._taken - self._in_flight

    @property
    def accepted(self) -> int:
        """Records that entered the stream so far."""
        return self._accepted

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
        )

    def buffer_used(self) -> int:
        """What the stream itself says it holds (a cross-check for ``queued``)."""
        if not self._opened:
            return 0
        return self._receive.statistics().current_buffer_used

    # --- flush and close ---------------------------------------------------------------------

    def request_flush(self) -> int:
        """Ask the worker to send everything accepted so far at once; return that count."""
        target = self._accepted
        if target > self._flush_target:
            self._flush_target = target
        self._wake_worker()
        return target

    async def wait_settled(self, target: int) -> None:
        """Wait until the first ``target`` accepted records are exported or dropped."""
        while self.settled < target and self._running:
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()

    def close(self) -> None:
        """Stop accepting records; the worker drains what is queued, then finishes."""
        if self._closed:
            return
        self._closed = True
        if not self._opened:
            return
        self._send.close()
        self._wake_worker()
        self._notify_room()

    def cancel(self) -> None:
        """Cancel the worker (at the drain deadline); what it still holds is counted."""
        if self._opened:
            self._cancel_scope.cancel()

    async def wait_done(self) -> None:
        """Wait until the worker has finished, including the exporter's ``aclose()``."""
        if self._opened:
            await self._done.wait()

    @property
    def done(self) -> bool:
        """True once the worker has finished (or when it never started)."""
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

    # --- the drain worker --------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The drain worker: run until the lane is closed and drained, or cancelled."""
        self._running = True
        batch: list[SpanRecord] = []
        try:
            with self._cancel_scope:
                task_status.started()
                while True:
                    try:
                        await self._drain(batch)
                        break
                    except BaseException as exc:
                        # asyncio's teardown cancels every task of the loop; the worker keeps
                        # its batch and drains on, until its own scope is cancelled (the
                        # tracer's shutdown deadline). Its own cancellation passes through.
                        if (
                            not is_cancellation(exc)
                            or self._cancel_scope.cancel_called
                            or not absorb_loop_cancellation()
                        ):
                            raise
        except Exception as exc:
            # Only a bug in spanlane gets here (exporter failures are handled per batch). The
            # caller's code must not pay for it: count what is left, close the exporter, finish.
            logger.error("spanlane lane %r: drain worker failed", self.name, exc_info=exc)
        finally:
            # Also when the loop itself cancels the task at its end (a tracer never exited):
            # the cancellation propagates once the books are closed.
            self._running = False
            try:
                self._settle_leftovers(batch)
            finally:
                try:
                    await self._aclose_exporter()
                finally:
                    self._notify_progress()
                    self._done.set()

    async def _drain(self, batch: list[SpanRecord]) -> None:
        # The worker never awaits receive(): an item handed straight to a waiting receiver is
        # lost if that receiver is cancelled before it resumes. It sleeps on its own event
        # instead, which the hot path sets, and takes records with receive_nowait only.
        since = time.monotonic()  # the oldest waiting record arrived no earlier than this
        while True:
            end_of_stream = self._fill(batch)
            if not batch:
                if end_of_stream:
                    return
                await self._sleep(wake_at=1, seconds=math.inf)
                since = time.monotonic()
                continue
            while not end_of_stream and len(batch) < self._max_batch and not self._due(batch):
                remaining = since + self._flush_interval - time.monotonic()
                if remaining <= 0:
                    break
                await self._sleep(wake_at=self._max_batch - len(batch), seconds=remaining)
                end_of_stream = self._fill(batch)
            # Records arriving from now on will have waited at most since the export started.
            since = time.monotonic()
            try:
                await self._export(batch)
            except Exception as exc:
                # A bug in spanlane's own bookkeeping around the export: the batch is lost
                # (and counted), the lane is not.
                logger.error("spanlane lane %r: export step failed", self.name, exc_info=exc)
                if batch:
                    self._settle_dropped(len(batch), DropReason.EXPORT_FAILED, _describe(exc))
                    batch.clear()
            if end_of_stream:
                return
            # Always yield between batches: an exporter that never awaits (and records arriving
            # as fast as it exports) must not keep the loop to itself.
            await checkpoint()

    async def _sleep(self, wake_at: int, seconds: float) -> None:
        """Sleep until ``wake_at`` records are queued, a flush or close, or ``seconds`` pass."""
        self._wakeup = anyio.Event()
        self._wake_at = wake_at
        try:
            with anyio.move_on_after(seconds):
                await self._wakeup.wait()
        finally:
            self._wakeup = None
            self._wake_at = math.inf

    def _take(self, count: int) -> None:
        self._taken += count
        self._in_flight += count
        self._notify_room()

    def _fill(self, batch: list[SpanRecord]) -> bool:
        """Move records from the stream into ``batch`` without waiting; True at end of stream."""
        receive_nowait = self._receive.receive_nowait
        room = self._max_batch - len(batch)
        taken = 0
        try:
            while taken < room:
                batch.append(receive_nowait())
                taken += 1
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            return True
        finally:
            if taken:
                self._take(taken)
        return False

    def _due(self, batch: list[SpanRecord]) -> bool:
        """True when the batch must go now: a flush covers it, or the lane is closing."""
        return self._closed or self._flush_target > self._taken - len(batch)

    async def _export(self, batch: list[SpanRecord]) -> None:
        """Export one batch with retries under ``export_timeout``; settle it either way."""
        frozen = tuple(batch)
        failures = 0
        outcome: DropReason | None = DropReason.EXPORT_TIMEOUT
        detail = f"export_timeout of {self._export_timeout} s expired"
        with anyio.move_on_after(self._export_timeout) as attempt_scope:
            while True:
                try:
                    result = await self._export_call(frozen)
                except RetryableExportError as exc:
                    failures += 1
                    if failures >= self._retry.max_attempts:
                        outcome, detail = DropReason.RETRIES_EXHAUSTED, f"{failures} attempts"
                        logger.debug(
                            "spanlane lane %r: last attempt failed: %s", self.name, _describe(exc)
                        )
                        break
                    self._retries += 1
                    await anyio.sleep(self._retry.backoff(failures, _retry_after(exc), self._rng))
                except BaseException as exc:
                    if is_cancellation(exc) and self._own_cancellation(attempt_scope):
                        raise
                    # Anything else is the exporter's: KeyboardInterrupt, SystemExit and
                    # GeneratorExit raised by export() included (on trio a real Ctrl-C cannot
                    # land here: the worker is KeyboardInterrupt-protected), and a cancellation
                    # that is not this worker's (an awaited future that something else
                    # cancelled). It fails this batch; the lane lives on.
                    outcome, detail = DropReason.EXPORT_FAILED, _describe(exc)
                    logger.debug("spanlane lane %r: export failed: %s", self.name, detail)
                    break
                else:
                    outcome = None
                    # Cleared before settling, so that the worker's safety net never counts a
                    # settled batch twice.
                    batch.clear()
                    self._settle_exported(len(frozen), result)
                    break
        if outcome is DropReason.EXPORT_TIMEOUT and failures:
            outcome = DropReason.RETRIES_EXHAUSTED
            detail = f"{failures} failed attempts, then {detail}"
        if outcome is not None:
            batch.clear()
            self._settle_dropped(len(frozen), outcome, detail)

    def _own_cancellation(self, attempt_scope: anyio.CancelScope) -> bool:
        """True when a cancellation seen in ``export()`` is meant for this worker.

        That is: the drain deadline or ``export_timeout`` fired, or (asyncio) something asked to
        cancel the worker's task itself, such as the event loop shutting down.
        """
        return self._cancel_scope.cancel_called or attempt_scope.cancel_called or cancel_requested()

    def _settle_exported(self, count: int, result: object) -> None:
        rejected, unencodable = _undelivered(result, count)
        self._in_flight -= count
        self._exported += count - rejected - unencodable
        self._batches += 1
        if rejected:
            self._count_drop(DropReason.REJECTED, rejected, "refused by the receiver")
        if unencodable:
            self._count_drop(DropReason.UNENCODABLE, unencodable, "the exporter could not encode")
        self._notify_progress()

    def _settle_dropped(self, count: int, reason: DropReason, detail: str = "") -> None:
        self._in_flight -= count
        self._count_drop(reason, count, detail)
        self._notify_progress()

    def _settle_leftovers(self, batch: Sequence[SpanRecord]) -> None:
        """Count what the worker still holds, and what is still queued, as lost to shutdown."""
        if batch:
            self._settle_dropped(len(batch), DropReason.SHUTDOWN_TIMEOUT, "drain_timeout expired")
            if isinstance(batch, list):
                batch.clear()
        self.close()
        leftover = 0
        while True:
            try:
                self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            leftover += 1
        if leftover:
            self._taken += leftover
            self._count_drop(DropReason.SHUTDOWN_TIMEOUT, leftover, "drain_timeout expired")
        self._receive.close()

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
