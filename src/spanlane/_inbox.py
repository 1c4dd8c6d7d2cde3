"""The thread inbox: how records from other threads reach the event loop without waiting for it.

A memory-object stream is not thread-safe, so a thread never touches a lane. It appends its record
to this inbox and, when the inbox was empty, schedules one callback on the loop
(``call_soon_threadsafe`` / ``TrioToken.run_sync_soon``), which never blocks. The loop takes
everything queued in one go: one wake-up per burst, not per record. No thread ever waits for the
loop, so nothing deadlocks when the loop thread is itself blocked on that thread
(``thread.join()``, a ``concurrent.futures`` result).

Once the tracer stops taking records from threads (its last hand-off at shutdown), or when the
loop is found gone, :meth:`put` refuses and the caller counts the record ``CLOSED`` at once,
under :attr:`lock`, which every later update of the counters holds, so the books stay exact
across the loop's teardown.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ._records import SpanRecord
from ._runtime import LoopGone, LoopHandle

__all__ = ["ThreadInbox"]

#: Records handed to the lanes per loop callback, at most; a bigger burst is taken in several
#: turns so that one callback never holds the loop for long.
TAKE_AT_ONCE = 1024

#: An inbox entry: True with a start notification, False with an end record.
Entry = tuple[bool, SpanRecord]


class ThreadInbox:
    """Records from other threads for the loop, and the lock that orders them with shutdown."""

    __slots__ = (
        "_closed",
        "_drain",
        "_items",
        "_loop",
        "_orphaned",
        "_scheduled",
        "lock",
        "started",
    )

    def __init__(self) -> None:
        # Reentrant: a weakref callback (a span collected unended) may run while this thread
        # holds the lock, and must be able to take it again rather than deadlock.
        self.lock = threading.RLock()
        self._items: deque[Entry] = deque()
        self._scheduled = False
        self._closed = True
        self._loop: LoopHandle | None = None
        self._drain: Callable[[], None] | None = None
        self._orphaned: Callable[[list[Entry]], None] | None = None
        #: Recording spans started in other threads (counted here, under the lock).
        self.started = 0

    def __len__(self) -> int:
        return len(self._items)

    def open(
        self,
        loop: LoopHandle,
        drain: Callable[[], None],
        orphaned: Callable[[list[Entry]], None],
    ) -> None:
        """Start accepting.

        Args:
            loop: the loop the records are for.
            drain: scheduled on ``loop`` when records arrive; it calls :meth:`take`.
            orphaned: called (under :attr:`lock`) with every queued entry if the loop turns
                out to be gone, so that they can be counted.
        """
        with self.lock:
            self._loop = loop
            self._drain = drain
            self._orphaned = orphaned
            self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`put` refuses records."""
        return self._closed

    def put(self, is_start: bool, record: SpanRecord) -> bool:
        """Queue a record from another thread; False when the inbox no longer accepts any.

        Never blocks on the event loop. The caller holds no lock.
        """
        with self.lock:
            if self._closed:
                return False
            self._items.append((is_start, record))
            if self._scheduled:
                return True
            self._scheduled = True
            loop, drain = self._loop, self._drain
        assert loop is not None
        assert drain is not None
        try:
            loop.call_soon(drain)
        except LoopGone:
            # The loop ended with the tracer still open: nobody will take these records. Stop
            # accepting, and hand back everything queued (this record included) to be counted.
            with self.lock:
                remaining = self.close()
                if self._orphaned is not None:
                    self._orphaned(remaining)
        return True

    def take(self) -> list[Entry]:
        """On the loop: take up to :data:`TAKE_AT_ONCE` entries; reschedule if more remain."""
        with self.lock:
            items = self._items
            count = min(len(items), TAKE_AT_ONCE)
            taken = [items.popleft() for _ in range(count)]
            more = bool(items) and not self._closed
            self._scheduled = more
            loop, drain = self._loop, self._drain
        if more and loop is not None and drain is not None:
            try:
                loop.call_soon(drain)
            except LoopGone:  # pragma: no cover - we are running on that loop
                pass
        return taken

    def close(self) -> list[Entry]:
        """Stop accepting (the caller holds :attr:`lock`); return what is still queued."""
        self._closed = True
        remaining = list(self._items)
        self._items.clear()
        return remaining
