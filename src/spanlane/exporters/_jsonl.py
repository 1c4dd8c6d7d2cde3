"""JSONLinesExporter: appends one JSON object per record to a file, off the event loop."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from typing import IO

import anyio.to_thread

from .._records import SpanRecord
from ._base import ExportResult
from ._json import record_to_json

logger = logging.getLogger("spanlane")

#: Surrogate code points: a ``str`` holds them only unpaired, and UTF-8 cannot encode them.
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def encode_line(record: SpanRecord) -> bytes:
    """One record as one line of compact UTF-8 JSON, ending in ``\\n``.

    A lone surrogate anywhere in the record (a span name, an attribute key or a string value,
    say from a badly decoded file name) is replaced by U+FFFD, so the record is still written.

    Raises:
        Exception: whatever :func:`json.dumps` raises for a value it cannot encode.
    """
    text = json.dumps(record_to_json(record), separators=(",", ":"), ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = _SURROGATES.sub("\ufffd", text).encode("utf-8")
    return data + b"\n"


class JSONLinesExporter:
    """Appends each record as one line of JSON, in UTF-8.

    Each line is the object :func:`record_to_json` returns, written compactly: the span's name,
    ids (lowercase hex), kind, times (nanoseconds since the Unix epoch), attributes, events,
    links, status and drop counts, plus ``"resource"`` (the resource's attributes, so
    ``service.name`` is on every line) and ``"scope"`` (``{"name": ..., "version": ...}``).
    ``docs/guide.md`` describes every key.

    The file is opened on the first export, in append mode, and every batch is encoded, written
    and flushed in a worker thread, so file I/O and JSON encoding never block the event loop.
    Each batch is appended with one write, its records in order. Records are encoded one at a
    time, so one bad record cannot sink its batch: lone surrogates in strings are replaced by
    U+FFFD, and a record that still cannot be encoded is left out, logged, and counted by the
    lane as ``DropReason.UNENCODABLE`` (``export()`` returns how many were left out). ``aclose()``
    closes the file.

    Args:
        path: the file to append to; parent directories must exist.
        wants_starts: also write start notifications (``end_time_ns`` is null on those).
        fsync: call ``os.fsync`` after each batch (durable, slower).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, wants_starts: bool = False, fsync: bool = False
    ) -> None:
        self.path = os.fspath(path)
        self.wants_starts = wants_starts
        self.fsync = fsync
        self.name = f"JSONLinesExporter({os.path.basename(self.path)})"
        self._file: IO[bytes] | None = None
        self.lines_written = 0

    def __repr__(self) -> str:
        return f"<JSONLinesExporter path={self.path!r}>"

    async def export(self, batch: Sequence[SpanRecord]) -> ExportResult | None:
        """Encode and append a batch in a worker thread.

        Returns:
            How many records of the batch could not be encoded and were left out (usually 0).
        """
        skipped = await anyio.to_thread.run_sync(self._write, batch)
        return ExportResult(unencodable=skipped) if skipped else None

    def _write(self, batch: Sequence[SpanRecord]) -> int:
        lines: list[bytes] = []
        first_error: Exception | None = None
        for record in batch:
            try:
                lines.append(encode_line(record))
            except Exception as exc:  # anything json cannot encode costs this record only
                first_error = first_error or exc
        skipped = len(batch) - len(lines)
        if first_error is not None:
            logger.warning(
                "%s: left out %d record(s) that could not be encoded as JSON (first: %s: %s)",
                self.name,
                skipped,
                type(first_error).__name__,
                first_error,
            )
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed by aclose
        self._file.write(b"".join(lines))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.lines_written += len(lines)
        return skipped

    async def aclose(self) -> None:
        """Close the file (in a worker thread)."""
        file, self._file = self._file, None
        if file is not None:
            await anyio.to_thread.run_sync(file.close)
