"""The exporter protocol: what a lane needs from the thing at its end.

:class:`Exporter` declares everything a lane uses; :class:`BaseExporter` gives every member but
``export`` a default. An object that only has an ``export`` coroutine method is accepted too: the
lane reads what it needs once, with :func:`describe`, when the tracer is built, and never probes
the exporter again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from .._records import SpanRecord

__all__ = ["BaseExporter", "ExportResult", "Exporter", "ExporterInfo", "describe", "exporter_name"]


@attrs.frozen
class ExportResult:
    """What an export call achieved, when not every record of the batch was delivered.

    ``export()`` may return this, an ``int`` (taken as ``rejected``), or None (all delivered).

    Attributes:
        rejected: records the receiver accepted the request of but refused (OTLP partial
            success); counted as ``DropReason.REJECTED``.
        unencodable: records the exporter could not encode even after sanitising them, skipped
            so that the rest of the batch could go; counted as ``DropReason.UNENCODABLE``.
    """

    rejected: int = 0
    unencodable: int = 0


@runtime_checkable
class Exporter(Protocol):
    """Something a lane hands batches of records to.

    Attributes:
        name: the name used in statistics and logs.
        wants_starts: also deliver start notifications (records with ``end_time_ns=None``) when
            spans start.

    ``export`` raises :class:`spanlane.RetryableExportError` for a transient failure (the batch is
    retried whole per the lane's ``RetryPolicy``); any other exception fails the batch for good
    (``EXPORT_FAILED``). Whatever it raises, the application never sees it and the lane lives.
    It may return an ``int`` or an :class:`ExportResult` for records it did not deliver.

    ``aclose`` is called once when the tracer closes, after the lane has drained (or been
    cancelled at ``drain_timeout``), with a grace period of its own.
    """

    # Read-only in the protocol: a class attribute, a Final or a property all satisfy it.
    @property
    def name(self) -> str:
        """The name used in statistics and logs."""
        ...

    @property
    def wants_starts(self) -> bool:
        """Also deliver start notifications."""
        ...

    async def export(self, batch: Sequence[SpanRecord]) -> int | ExportResult | None:
        """Deliver one batch of records, oldest first."""
        ...

    async def aclose(self) -> None:
        """Release what the exporter holds (files, connections)."""
        ...


class BaseExporter:
    """A base class for exporters: subclasses implement :meth:`export` only.

    Attributes:
        name: the class name unless set.
        wants_starts: False unless set.
    """

    wants_starts: bool = False

    @property
    def name(self) -> str:
        """The name used in statistics and logs (the class name by default)."""
        return type(self).__name__

    async def export(self, batch: Sequence[SpanRecord]) -> int | ExportResult | None:
        """Deliver one batch; subclasses must implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement export()")

    async def aclose(self) -> None:
        """Nothing to release by default."""


async def _no_aclose() -> None:
    return None


@attrs.frozen
class ExporterInfo:
    """What a lane knows about its exporter, read once when the tracer is built.

    Attributes:
        exporter: the exporter itself.
        name: its name in statistics and logs.
        wants_starts: whether it receives start notifications.
        export: its bound ``export`` method.
        aclose: its bound ``aclose`` method (its result is awaited if it is awaitable), or a
            no-op.
    """

    exporter: object
    name: str
    wants_starts: bool
    export: Callable[[Sequence[SpanRecord]], Awaitable[object]]
    aclose: Callable[[], object]


def exporter_name(exporter: object) -> str:
    """The name a lane reports its exporter by: its ``name`` if that is a non-empty str."""
    try:
        name = getattr(exporter, "name", None)
    except Exception:  # a property that raises
        name = None
    return name if type(name) is str and name else type(exporter).__name__


def describe(exporter: object) -> ExporterInfo:
    """Read what a lane needs from ``exporter``; the only place that inspects one.

    Raises:
        TypeError: ``exporter`` is a class rather than an instance, or has no callable
            ``export``.
    """
    if isinstance(exporter, type):
        raise TypeError(
            f"exporters: got the class {exporter.__qualname__}, not an instance; "
            f"pass {exporter.__qualname__}(...)"
        )
    export = getattr(exporter, "export", None)
    if not callable(export):
        raise TypeError(f"exporters: {exporter!r} has no export() method")
    try:
        wants_starts = getattr(exporter, "wants_starts", False) is True
    except Exception:
        wants_starts = False
    aclose = getattr(exporter, "aclose", None)
    if not callable(aclose):
        aclose = _no_aclose
    return ExporterInfo(
        exporter=exporter,
        name=exporter_name(exporter),
        wants_starts=wants_starts,
        export=export,
        aclose=aclose,
    )
