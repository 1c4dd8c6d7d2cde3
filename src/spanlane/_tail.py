"""Tail sampling: hold a trace's records until it can be judged whole, then keep it or not.

:class:`TailSampling` is a processor (the last stage before the lanes when given as
``open_tracer(..., tail=...)``). Ended spans of a trace are held until the trace's *local root*
ends: a recorded span without a parent, or whose parent is in another process. Then the whole
local trace is kept or discarded at once, so a kept trace reaches the lanes whole; its spans
that end later (stragglers) follow the remembered decision. A trace whose local root does not
end within ``decision_wait`` seconds of its first ended span is judged by its spans so far.

Memory is bounded: at most ``max_pending_spans`` records are held (when full, the oldest
pending trace is judged at once), and the last ``max(max_pending_spans, 10_000)`` decisions are
remembered. Every record the stage is given is, at every moment, handed on, discarded (counted:
``sampled_out()``), or held (``pending()``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

import anyio

from ._processor import SpanProcessor, Stage
from ._records import SpanRecord, StatusCode
from ._sampling import ratio_bound, validate_ratio
from ._validate import as_float

__all__ = ["TailSampling"]

_LOW_64: Final = (1 << 64) - 1
#: Decisions remembered at least, for stragglers (an int and a bool each, about 100 bytes).
_MIN_REMEMBERED: Final = 10_000


class _Trace:
    """The records of one pending trace and what has been learnt from them so far."""

    __slots__ = ("deadline", "error", "longest_ns", "records", "root_ns")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.records: list[SpanRecord] = []
        self.error = False
        self.root_ns: int | None = None  # the local root's duration, once it has ended
        self.longest_ns = 0  # the longest span so far: a lower bound of the root's duration


def _duration(record: SpanRecord) -> int:
    end = record.end_time_ns
    return 0 if end is None else end - record.start_time_ns


#: The shortest ``decision_wait``: the timer wakes at least that often, so a shorter one would
#: keep it spinning.
MIN_DECISION_WAIT = 0.001

#: The longest ``keep_slower_than``: what a span's duration in nanoseconds can be (OTLP times are
#: unsigned 64-bit).
MAX_SLOWER_THAN = 2**64 / 1e9


def _seconds(what: str, value: object, *, minimum: float, maximum: float = math.inf) -> float:
    seconds = as_float(what, value, error=TypeError)
    if not (math.isfinite(seconds) and minimum <= seconds <= maximum):
        bound = f"<= {maximum:g}" if math.isfinite(maximum) else "finite"
        raise ValueError(f"{what} must be >= {minimum:g} and {bound} (seconds), got {value!r}")
    return seconds


class TailSampling(SpanProcessor):
    """Keeps the interesting traces whole: errors, slow ones, and a fraction of the rest.

    Pass it as ``open_tracer(..., tail=TailSampling(...))``. Ended spans are held per trace
    until the trace's local root ends (a recorded span without a parent, or whose parent is in
    another process), or until ``decision_wait`` seconds after the trace's first span ended.
    Then the local trace is kept whole if any rule says so, otherwise discarded and counted in
    ``Stats.spans_sampled_out``:

    - ``keep_errors``: a span of the trace has status ``ERROR``;
    - ``keep_slower_than``: the local root lasted at least that many seconds (for a trace judged
      before its root ended: its longest span so far did, a lower bound of the root's duration);
    - ``keep_ratio``: the trace id falls in that fraction, by the rule of
      :class:`~spanlane.sampling.TraceIdRatio` (so the kept fraction agrees with services that
      sample by ratio).

    Spans of a decided trace that end later follow the decision. When ``max_pending_spans``
    records are held, the oldest pending trace is judged at once by its spans so far. At exit
    every pending trace is judged and the kept ones are handed on, within the drain deadline.
    :meth:`spanlane.Tracer.flush` does not force decisions: a trace still waiting for its root
    stays pending.

    Lanes whose exporter wants start notifications get none while tail sampling is on: when a
    span starts, nobody knows yet whether its trace will be kept.

    The stage runs on the event loop thread only; one instance serves one tracer.

    Args:
        keep_errors: keep every trace with a span whose status is ``ERROR``.
        keep_slower_than: keep every trace whose local root lasted at least this many seconds;
            None turns the rule off.
        keep_ratio: keep this fraction of the remaining traces, by trace id (0 to 1).
        max_pending_spans: the most records held at once.
        decision_wait: seconds after a trace's first span ended after which the trace is
            judged even though its local root has not ended.
        clock: a monotonic clock in seconds (``time.monotonic`` by default), for tests;
            ``decision_wait`` is measured with it.

    Attributes:
        keep_errors: as given.
        keep_slower_than: as given (seconds, or None).
        keep_ratio: as given, as a float.
        max_pending_spans: as given.
        decision_wait: as given, as a float (seconds).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a number is out of range (``keep_ratio`` outside ``[0, 1]``, a negative
            ``keep_slower_than`` or one over 2**64 ns (about 584 years), ``max_pending_spans <
            1``, ``decision_wait`` under 1 ms, NaN or infinity).
    """

    wants_starts = False
    forwards_starts = False

    def __init__(
        self,
        *,
        keep_errors: bool = True,
        keep_slower_than: float | None = None,
        keep_ratio: float = 0.0,
        max_pending_spans: int = 10_000,
        decision_wait: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if type(keep_errors) is not bool:
            raise TypeError(f"keep_errors must be a bool, got {keep_errors!r}")
        if keep_slower_than is None:
            self._slow_ns: int | None = None
        else:
            seconds = _seconds(
                "keep_slower_than", keep_slower_than, minimum=0.0, maximum=MAX_SLOWER_THAN
            )
            self._slow_ns = round(seconds * 1e9)
        if isinstance(max_pending_spans, bool) or not isinstance(max_pending_spans, int):
            raise TypeError(f"max_pending_spans must be an int, got {max_pending_spans!r}")
        if max_pending_spans < 1:
            raise ValueError(f"max_pending_spans must be at least 1, got {max_pending_spans!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self.keep_errors = keep_errors
        self.keep_slower_than = None if keep_slower_than is None else float(keep_slower_than)
        self.keep_ratio = validate_ratio("keep_ratio", keep_ratio)
        self.max_pending_spans = max_pending_spans
        self.decision_wait = _seconds("decision_wait", decision_wait, minimum=MIN_DECISION_WAIT)
        self._bound = ratio_bound(self.keep_ratio)
        self._clock = clock
        self._remember = max(max_pending_spans, _MIN_REMEMBERED)
        #: Pending traces by trace id, oldest first: also earliest deadline first.
        self._pending: OrderedDict[int, _Trace] = OrderedDict()
        #: Decisions by trace id, oldest first, for stragglers; at most _remember of them.
        self._decided: OrderedDict[int, bool] = OrderedDict()
        #: Kept records not yet handed on at shutdown (which waits for room in the lanes).
        self._outbox: deque[SpanRecord] = deque()
        self._held = 0
        self._sampled_out = 0
        self._closing = False
        self._connected = False
        #: When the oldest pending trace is due (clock seconds); inf when none is pending.
        self._next_due = math.inf
        self._forward: Callable[[SpanRecord], None] = self.forward_end

    def __repr__(self) -> str:
        return (
            f"TailSampling(keep_errors={self.keep_errors!r}, "
            f"keep_slower_than={self.keep_slower_than!r}, keep_ratio={self.keep_ratio!r}, "
            f"max_pending_spans={self.max_pending_spans!r}, "
            f"decision_wait={self.decision_wait!r})"
        )

    def connect(self, downstream: Stage) -> None:
        """Called once by the tracer with the stage after this one.

        Raises:
            ValueError: this instance already serves a tracer.
        """
        if self._connected:
            raise ValueError("tail: this TailSampling already serves another tracer")
        self._connected = True
        super().connect(downstream)
        self._forward = downstream.on_end  # one call less per record than forward_end

    # --- counters ------------------------------------------------------------------------------

    def pending(self) -> int:
        """Records held: waiting for their trace's decision, or (at exit) for room in a lane."""
        return self._held + len(self._outbox)

    def sampled_out(self) -> int:
        """Records discarded because their trace was not kept."""
        return self._sampled_out

    # --- records -------------------------------------------------------------------------------

    def forward_start(self, record: SpanRecord) -> None:
        """Start notifications stop here: the trace's fate is not known when a span starts."""

    def on_end(self, record: SpanRecord) -> None:
        """Hold the record with its trace, or follow its trace's decision; judge what is due."""
        trace_id = record.trace_id
        decision = self._decided.get(trace_id)
        if decision is not None:  # a straggler
            if decision:
                self._forward(record)
            else:
                self._sampled_out += 1
            return
        pending = self._pending
        trace = pending.get(trace_id)
        is_root = record.parent_span_id is None or record.parent_is_remote is True
        if trace is None:
            if is_root:  # a trace of one span, so far: judged at once, nothing held
                self._judge_alone(trace_id, record)
                return
            now = self._clock()
            if now >= self._next_due:
                self._expire(now)
            trace = pending[trace_id] = _Trace(now + self.decision_wait)
            if len(pending) == 1:
                self._next_due = trace.deadline
        trace.records.append(record)
        self._held += 1
        if record.status.code is StatusCode.ERROR:
            trace.error = True
        duration = _duration(record)
        if is_root:
            trace.root_ns = duration
            self._decide(trace_id)
        elif self._closing:
            self._decide(trace_id)
        elif duration > trace.longest_ns:
            trace.longest_ns = duration
        while self._held > self.max_pending_spans:
            self._decide(next(iter(pending)))

    def _keep(self, trace_id: int, error: bool, root_ns: int) -> bool:
        """The rules: an error, a slow root (or longest span), or the trace id's ratio."""
        if error and self.keep_errors:
            return True
        slow_ns = self._slow_ns
        if slow_ns is not None and root_ns >= slow_ns:
            return True
        return trace_id & _LOW_64 < self._bound

    def _remember_decision(self, trace_id: int, keep: bool) -> None:
        decided = self._decided
        decided[trace_id] = keep
        if len(decided) > self._remember:
            decided.popitem(last=False)

    def _judge_alone(self, trace_id: int, record: SpanRecord) -> None:
        keep = self._keep(trace_id, record.status.code is StatusCode.ERROR, _duration(record))
        self._remember_decision(trace_id, keep)
        if keep:
            self._forward(record)
        else:
            self._sampled_out += 1

    def _decide(self, trace_id: int, *, outbox: bool = False) -> None:
        """Judge a pending trace, remember the decision, and hand on or discard its records."""
        trace = self._pending.pop(trace_id)
        keep = self._keep(
            trace_id, trace.error, trace.longest_ns if trace.root_ns is None else trace.root_ns
        )
        self._remember_decision(trace_id, keep)
        records = trace.records
        self._held -= len(records)
        if not keep:
            self._sampled_out += len(records)
        elif outbox:
            self._outbox.extend(records)
        else:
            forward = self._forward
            for record in records:
                forward(record)

    def _expire(self, now: float) -> None:
        """Judge every trace whose ``decision_wait`` has passed (the oldest come first)."""
        pending = self._pending
        while pending:
            trace_id, trace = next(iter(pending.items()))
            if trace.deadline > now:
                self._next_due = trace.deadline
                return
            self._decide(trace_id)
        self._next_due = math.inf

    # --- the timer and the exit ----------------------------------------------------------------

    async def run(self) -> None:
        """Judge traces whose ``decision_wait`` has passed while no record arrives.

        The timer sleeps until the oldest pending trace is due, and never longer than
        ``decision_wait``: a trace that arrives while it sleeps is due later than it wakes, so
        nothing needs to wake it, and the hot path never touches it.
        """
        while True:
            now = self._clock()
            self._expire(now)
            delay = self._next_due - now if self._pending else self.decision_wait
            await anyio.sleep(min(max(delay, 0.0), self.decision_wait))

    async def shutdown(self, deadline: float) -> None:
        """Judge every pending trace and hand the kept records on, waiting (until ``deadline``,
        anyio clock) for room in the lanes; what is still held then is handed on without
        waiting, so a full lane drops and counts it rather than the stage losing it."""
        self._closing = True
        while self._pending:
            self._decide(next(iter(self._pending)), outbox=True)
        outbox = self._outbox
        try:
            while outbox:
                record = outbox[0]
                await self.forward_end_waiting(record, deadline)
                outbox.popleft()
        finally:
            while outbox:
                self.forward_end(outbox.popleft())
