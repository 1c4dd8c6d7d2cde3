"""Sampling: which spans are recorded, and which recorded traces are kept.

*Head sampling* decides when a span starts. The tracer asks its sampler
(``open_tracer(..., sampler=...)``) once per span; a span it does not sample is a real but
non-recording :class:`~spanlane.NonRecordingSpan`: it has its own context (the "sampled" flag
cleared), becomes the current span, parents its children, and is propagated as
``traceparent ...-00``, but nothing of it reaches a lane. The decisions agree with the
OpenTelemetry SDK's samplers for every trace id, so spanlane and OpenTelemetry services keep the
same traces::

    from spanlane.sampling import ParentBased, TraceIdRatio

    # 1% of new traces; traces that arrive with a decision keep it.
    open_tracer(exporter, sampler=ParentBased(TraceIdRatio(0.01)))

The default is ``ParentBased(ALWAYS_ON)``, or what ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG`` name.

*Tail sampling* decides when a trace has ended: :class:`TailSampling`
(``open_tracer(..., tail=...)``) holds the records of each trace and keeps the trace whole if it
had an error, was slow, or falls in a fraction by trace id. See ``docs/sampling.md`` for recipes.
"""

from __future__ import annotations

from ._sampling import ALWAYS_OFF as ALWAYS_OFF
from ._sampling import ALWAYS_ON as ALWAYS_ON
from ._sampling import ParentBased as ParentBased
from ._sampling import RateLimited as RateLimited
from ._sampling import Sampler as Sampler
from ._sampling import TraceIdRatio as TraceIdRatio
from ._sampling import sampler_from_environment as sampler_from_environment
from ._tail import TailSampling as TailSampling

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "ParentBased",
    "RateLimited",
    "Sampler",
    "TailSampling",
    "TraceIdRatio",
    "sampler_from_environment",
]
