"""spanlane: tracing for async Python with structured concurrency.

Spans end synchronously into bounded per-exporter lanes; drain workers owned by a task group
batch and export them; leaving ``open_tracer()`` drains within a deadline, then cancels. Every
record is exported or dropped with a counted reason. Runs on asyncio and trio (through anyio).
"""

from __future__ import annotations

from ._attributes import SpanLimits as SpanLimits
from ._context import current_tracer as current_tracer
from ._decorators import traced as traced
from ._exceptions import ExportError as ExportError
from ._exceptions import RetryableExportError as RetryableExportError
from ._exceptions import SpanlaneError as SpanlaneError
from ._options import LaneOptions as LaneOptions
from ._options import LaneSpec as LaneSpec
from ._options import lane as lane
from ._processor import SpanProcessor as SpanProcessor
from ._records import Event as Event
from ._records import InstrumentationScope as InstrumentationScope
from ._records import Link as Link
from ._records import Resource as Resource
from ._records import SpanContext as SpanContext
from ._records import SpanKind as SpanKind
from ._records import SpanRecord as SpanRecord
from ._records import Status as Status
from ._records import StatusCode as StatusCode
from ._retry import RetryPolicy as RetryPolicy
from ._span import NonRecordingSpan as NonRecordingSpan
from ._span import Span as Span
from ._span import current_span as current_span
from ._stats import DropReason as DropReason
from ._stats import FlushReport as FlushReport
from ._stats import LaneStats as LaneStats
from ._stats import Stats as Stats
from ._tracer import Tracer as Tracer
from ._tracer import open_tracer as open_tracer
from ._tracer import span as span
from ._version import __version__ as __version__

__all__ = [
    "DropReason",
    "Event",
    "ExportError",
    "FlushReport",
    "InstrumentationScope",
    "LaneOptions",
    "LaneSpec",
    "LaneStats",
    "Link",
    "NonRecordingSpan",
    "Resource",
    "RetryPolicy",
    "RetryableExportError",
    "Span",
    "SpanContext",
    "SpanKind",
    "SpanLimits",
    "SpanProcessor",
    "SpanRecord",
    "SpanlaneError",
    "Stats",
    "Status",
    "StatusCode",
    "Tracer",
    "__version__",
    "current_span",
    "current_tracer",
    "lane",
    "open_tracer",
    "span",
    "traced",
]
