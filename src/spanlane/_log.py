"""spanlane's logger, and warnings that cannot flood it.

Telemetry that fails must say so, but a broken exporter or a misused API hit a million times a
second must not turn into a million log lines: each kind of warning is emitted at most once per
:data:`WARNING_INTERVAL` seconds, and the counters (``Stats``) hold every occurrence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable

__all__ = ["WARNING_INTERVAL", "RateLimiter", "logger"]

logger = logging.getLogger("spanlane")

#: Seconds between two warnings of the same kind.
WARNING_INTERVAL = 10.0


class RateLimiter:
    """Says whether a warning of a given kind may be logged now; safe from any thread."""

    __slots__ = ("_interval", "_last", "_lock")

    def __init__(self, interval: float = WARNING_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def allow(self, kind: Hashable) -> bool:
        """True at most once per interval for each ``kind``."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                return False
            self._last[kind] = now
            return True
