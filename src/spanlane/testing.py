"""Helpers for testing code that uses spanlane, and for testing spanlane itself.

- :func:`capture_spans` opens a tracer with a :class:`MemoryExporter` for a test body.
- :class:`FaultyExporter` wraps an exporter with scripted failures, delays and hangs.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from ._exceptions import ExportError, RetryableExportError
from ._records import SpanRecord
from ._tracer import Tracer, open_tracer
from .exporters._base import Exporter, ExportResult, exporter_name
from .exporters._memory import MemoryExporter

__all__ = ["CapturedSpans", "Fault", "FaultKind", "FaultyExporter", "Script", "capture_spans"]


@attrs.define
class CapturedSpans:
    """What :func:`capture_spans` yields.

    Attributes:
        tracer: the open tracer (also the current tracer inside the block).
        exporter: the memory exporter behind it.
    """

    tracer: Tracer
    exporter: MemoryExporter

    @property
    def spans(self) -> list[SpanRecord]:
        """End records exported so far; call :meth:`flush` first to include the latest."""
        return self.exporter.spans

    async def flush(self) -> list[SpanRecord]:
        """Export everything ended so far and return all end records."""
        await self.tracer.flush()
        return self.exporter.spans


@asynccontextmanager
async def capture_spans(
    *, wants_starts: bool = False, **tracer_options: Any
) -> AsyncIterator[CapturedSpans]:
    """Open a tracer that exports to memory, for a test body.

    Records are exported as soon as they are offered (``max_batch_size=1``) unless
    ``tracer_options`` say otherwise; after the block, every span is in ``exporter.records``.

    Args:
        wants_starts: also capture start notifications.
        **tracer_options: passed to :func:`spanlane.open_tracer`.
    """
    exporter = MemoryExporter(wants_starts=wants_starts)
    tracer_options.setdefault("max_batch_size", 1)
    async with open_tracer(exporter, **tracer_options) as tracer:
        yield CapturedSpans(tracer, exporter)


class FaultKind(enum.Enum):
    """What a scripted :class:`Fault` does to one export call."""

    OK = "ok"  #: deliver normally
    TRANSIENT = "transient"  #: raise RetryableExportError (nothing delivered)
    PERMANENT = "permanent"  #: raise ExportError (nothing delivered)
    DELAY = "delay"  #: sleep ``seconds``, then deliver
    HANG = "hang"  #: never return (until cancelled)
    DELIVER_THEN_FAIL = "deliver_then_fail"  #: deliver, then raise RetryableExportError
    RAISE = "raise"  #: raise the given exception, whatever it is (nothing delivered)


@attrs.frozen
class Fault:
    """One scripted outcome of an export call; build them with the class methods."""

    kind: FaultKind
    seconds: float = 0.0
    retry_after: float | None = None
    error: BaseException | Callable[[], BaseException] | None = None

    @classmethod
    def ok(cls) -> Fault:
        return cls(FaultKind.OK)

    @classmethod
    def transient(cls, retry_after: float | None = None) -> Fault:
        return cls(FaultKind.TRANSIENT, retry_after=retry_after)

    @classmethod
    def permanent(cls) -> Fault:
        return cls(FaultKind.PERMANENT)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls(FaultKind.DELAY, seconds=seconds)

    @classmethod
    def hang(cls) -> Fault:
        return cls(FaultKind.HANG)

    @classmethod
    def deliver_then_fail(cls, retry_after: float | None = None) -> Fault:
        return cls(FaultKind.DELIVER_THEN_FAIL, retry_after=retry_after)

    @classmethod
    def raising(cls, error: BaseException | Callable[[], BaseException]) -> Fault:
        """Raise ``error`` (an exception, or a function making a fresh one per call), whatever
        its type: ``KeyboardInterrupt``, ``SystemExit``, a foreign cancellation. spanlane must
        count the batch ``EXPORT_FAILED`` and never let it reach the application."""
        return cls(FaultKind.RAISE, error=error)


#: What FaultyExporter(script=...) accepts: faults in call order, or a function choosing them.
Script = Iterable["Fault | None"] | Callable[[int, Sequence[SpanRecord]], "Fault | None"]


class FaultyExporter:
    """Wraps an exporter and applies a scripted fault to each export call.

    Args:
        inner: the exporter that receives what gets delivered (a :class:`MemoryExporter` by
            default).
        script: either faults applied to the 1st, 2nd, ... export call (None or running out
            means "deliver normally"), or a callable ``(call_index, batch) -> Fault | None``.
        fail_on_close: make ``aclose()`` raise (after closing the inner exporter).
        hang_on_close: make ``aclose()`` hang until cancelled.

    Attributes:
        calls: one ``(batch size, fault)`` pair per export call, in order.
    """

    def __init__(
        self,
        inner: Exporter | None = None,
        script: Script = (),
        *,
        fail_on_close: bool = False,
        hang_on_close: bool = False,
    ) -> None:
        self.inner: Exporter = inner if inner is not None else MemoryExporter()
        self.wants_starts = bool(getattr(self.inner, "wants_starts", False))
        self.name = f"Faulty({exporter_name(self.inner)})"
        self.fail_on_close = fail_on_close
        self.hang_on_close = hang_on_close
        self.calls: list[tuple[int, Fault | None]] = []
        self._script: Callable[[int, Sequence[SpanRecord]], Fault | None]
        if callable(script):
            self._script = script
        else:
            faults: Iterator[Fault | None] = iter(list(script))
            self._script = lambda index, batch: next(faults, None)

    def __repr__(self) -> str:
        return f"<FaultyExporter {self.name!r} calls={len(self.calls)}>"

    async def export(self, batch: Sequence[SpanRecord]) -> int | ExportResult | None:
        """Apply the next fault, delivering to the inner exporter when the fault allows."""
        fault = self._script(len(self.calls), batch)
        self.calls.append((len(batch), fault))
        kind = FaultKind.OK if fault is None else fault.kind
        if kind is FaultKind.TRANSIENT:
            raise RetryableExportError(
                "injected transient failure", fault.retry_after if fault else None
            )
        if kind is FaultKind.PERMANENT:
            raise ExportError("injected permanent failure")
        if kind is FaultKind.RAISE and fault is not None and fault.error is not None:
            error = fault.error
            raise error if isinstance(error, BaseException) else error()
        if kind is FaultKind.HANG:
            await anyio.sleep_forever()
        if kind is FaultKind.DELAY and fault is not None:
            await anyio.sleep(fault.seconds)
        result = await self.inner.export(batch)
        if kind is FaultKind.DELIVER_THEN_FAIL:
            raise RetryableExportError(
                "injected failure after delivery", fault.retry_after if fault else None
            )
        return result

    async def aclose(self) -> None:
        """Close the inner exporter, then fail or hang if scripted to."""
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()
        if self.hang_on_close:
            await anyio.sleep_forever()
        if self.fail_on_close:
            raise ExportError("injected failure in aclose()")
