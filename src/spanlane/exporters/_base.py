"""The exporter protocol: what a lane needs from the thing at its end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._records import SpanRecord


@runtime_checkable
class Exporter(Protocol):
    """Something a lane hands batches of records to.

    Only :meth:`export` is required. A lane also honours, when present:

    - ``wants_starts`` (bool attribute, default False): also deliver start notifications
      (records with ``end_time_ns=None``) when spans start.
    - ``async def aclose(self) -> None``: called once when the tracer closes, after the lane has
      drained (or been cancelled at ``drain_timeout``); it gets a short grace period of its own.
    - ``name`` (str attribute): the name used in statistics and logs instead of the class name.

    ``export`` raises :class:`spanlane.RetryableExportError` for a transient failure (the batch is
    retried whole per the tracer's ``RetryPolicy``); any other exception fails the batch for good.
    It may return an ``int``: how many records of the batch the receiver rejected (OTLP partial
    success); those are counted as ``DropReason.REJECTED`` and the rest as exported.
    """

    async def export(self, batch: Sequence[SpanRecord]) -> int | None:
        """Deliver one batch of records, oldest first."""
        ...


def exporter_name(exporter: object) -> str:
    """The name a lane reports its exporter by."""
    name = getattr(exporter, "name", None)
    return name if isinstance(name, str) and name else type(exporter).__name__
