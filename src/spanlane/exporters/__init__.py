"""Exporters: where a lane's batches go.

Every exporter follows the :class:`Exporter` protocol. Built in: :class:`MemoryExporter`,
:class:`JSONLinesExporter`, :class:`ConsoleExporter`, and :class:`OTLPExporter` (which needs the
``otlp`` extra: ``pip install "spanlane[otlp]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exceptions import ExportError as ExportError
from .._exceptions import RetryableExportError as RetryableExportError
from ._base import BaseExporter as BaseExporter
from ._base import Exporter as Exporter
from ._base import ExportResult as ExportResult
from ._console import ConsoleExporter as ConsoleExporter
from ._json import record_to_json as record_to_json
from ._jsonl import JSONLinesExporter as JSONLinesExporter
from ._memory import MemoryExporter as MemoryExporter

if TYPE_CHECKING:
    from .otlp import OTLPExporter as OTLPExporter

__all__ = [
    "BaseExporter",
    "ConsoleExporter",
    "ExportError",
    "ExportResult",
    "Exporter",
    "JSONLinesExporter",
    "MemoryExporter",
    "OTLPExporter",
    "RetryableExportError",
    "record_to_json",
]


def __getattr__(name: str) -> Any:
    # OTLPExporter imports httpx, an optional dependency: load it only when asked for.
    if name == "OTLPExporter":
        from .otlp import OTLPExporter

        return OTLPExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
