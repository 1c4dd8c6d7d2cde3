"""JSONLinesExporter: appends one JSON object per record to a file, off the event loop."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import IO

import anyio.to_thread

from .._records import SpanRecord
from ._json import record_to_json


class JSONLinesExporter:
    """Appends each record as one line of JSON (see :func:`record_to_json` for the keys).

    The file is opened on the first export, in append mode, and every batch is written and
    flushed in a worker thread, so file I/O and JSON encoding never block the event loop. Batches
    are written whole, in order; ``aclose()`` closes the file.

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
        self._file: IO[str] | None = None
        self.lines_written = 0

    def __repr__(self) -> str:
        return f"<JSONLinesExporter path={self.path!r}>"

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        """Encode and append a batch in a worker thread."""
        await anyio.to_thread.run_sync(self._write, batch)

    def _write(self, batch: Sequence[SpanRecord]) -> None:
        text = "".join(
            json.dumps(record_to_json(record), separators=(",", ":"), ensure_ascii=False) + "\n"
            for record in batch
        )
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by aclose
        self._file.write(text)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.lines_written += len(batch)

    async def aclose(self) -> None:
        """Close the file (in a worker thread)."""
        file, self._file = self._file, None
        if file is not None:
            await anyio.to_thread.run_sync(file.close)
