"""The OTLP/HTTP exporter: spans to an OpenTelemetry collector or any OTLP receiver.

Needs the ``otlp`` extra (``pip install "spanlane[otlp]"``), which brings in httpx. Works under
asyncio and trio. See ``docs/otlp.md`` for use and ``docs/design-otlp.md`` for the decisions.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import operator
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timezone
from typing import Final, Literal

import anyio
import anyio.lowlevel

from .._exceptions import ExportError, RetryableExportError
from .._records import SpanRecord
from .._version import __version__
from . import _otlp_proto
from ._base import ExportResult
from ._otlp_config import OTLPConfig, redact_url, resolve_config
from ._otlp_encode import JSON, PROTOBUF, Part, encode_batch
from ._otlp_proto import Rope

# httpx comes with the otlp extra; say so rather than fail with a bare ModuleNotFoundError.
try:
    import httpx
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        'OTLPExporter needs httpx, which the otlp extra installs: pip install "spanlane[otlp]"',
        name=exc.name,
    ) from exc

__all__ = ["OTLPExporter"]

logger = logging.getLogger("spanlane")

#: Statuses after which the OTLP specification says to retry (with ``Retry-After`` if given).
RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})
#: Statuses that concern one request's content, so later parts of a batch are still sent.
_PART_STATUSES: Final = frozenset({400, 413})
#: The default cap on one request body, before compression (the collector's default limit is
#: larger; 4 MiB leaves room for proxies in between).
DEFAULT_MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
#: The most of a response body the exporter reads; OTLP responses are tiny.
_MAX_RESPONSE_BYTES = 64 * 1024
#: The longest body excerpt shown in a log line.
_EXCERPT_CHARS = 200
#: The longest wait a ``Retry-After`` may ask for that is taken at face value (one day).
_MAX_RETRY_AFTER = 86_400.0
#: Batches whose progress the exporter remembers at most (a few lanes' worth in flight).
_MAX_PROGRESS = 64


class _Unset:
    """The type of the "argument not given" marker for ``compression``."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


class _RequestFailed(ExportError):
    """A request failed for good; ``part_only`` when the failure concerns only its content."""

    def __init__(self, message: str, *, part_only: bool) -> None:
        super().__init__(message)
        self.part_only = part_only


class _Progress:
    """How far the export of one batch has got, kept so that a retry resumes where it stopped."""

    __slots__ = (
        "batch",
        "delivered",
        "failed",
        "first_error",
        "next_part",
        "parts",
        "rejected",
        "unencodable",
    )

    def __init__(self, batch: Sequence[SpanRecord], parts: list[Part], unencodable: int) -> None:
        self.batch = batch
        self.parts = parts
        self.unencodable = unencodable  # records left out by the encoder
        self.next_part = 0
        self.delivered = 0  # spans in parts the receiver accepted (rejections included)
        self.rejected = 0  # spans the receiver accepted the request of but rejected (partial)
        self.failed = 0  # spans in parts that failed for good, or were abandoned after that
        self.first_error: _RequestFailed | None = None

    def matches(self, batch: Sequence[SpanRecord]) -> bool:
        """True when ``batch`` holds the same records (by identity) as this one."""
        old = self.batch
        return old is batch or (len(old) == len(batch) and all(map(operator.is_, old, batch)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date.

    Args:
        value: the header value, or None.
        now: the current Unix time in seconds (``time.time()`` by default).

    Returns:
        A delay of at least 0 seconds, or None when the value is missing or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), _MAX_RETRY_AFTER)


class OTLPExporter:
    """Export spans over OTLP/HTTP, as protobuf or JSON, with ``httpx``.

    Every argument left out is taken from the OTLP environment variables, per-signal ones
    (``OTEL_EXPORTER_OTLP_TRACES_*``) before general ones (``OTEL_EXPORTER_OTLP_*``), and then
    from the defaults. The resource and instrumentation scope come from the records themselves
    (``open_tracer(service_name=..., resource_attributes=...)``).

    Failures map onto the lane's retry policy: statuses 429, 502, 503 and 504, connection
    errors and timeouts raise :class:`~spanlane.RetryableExportError` (with the ``Retry-After``
    delay when the receiver sent one); any other failure raises :class:`~spanlane.ExportError`.
    A partial success returns the number of rejected spans.

    Args:
        endpoint: the full URL to POST to. Default: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is,
            else ``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``/v1/traces`` appended, else
            ``http://localhost:4318/v1/traces``.
        headers: extra request headers, such as an API key. Their values never appear in logs,
            reprs or exceptions. Default: ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``.
        encoding: ``"protobuf"`` or ``"json"``. Default: ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``
            (``http/protobuf`` or ``http/json``), else protobuf.
        compression: ``"gzip"``, or None for none. Default:
            ``OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION``, else gzip.
        timeout: seconds one export call may take, all its requests together; on expiry it
            raises ``RetryableExportError``. Default: ``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT``
            (milliseconds), else 10 seconds. The lane's ``export_timeout`` bounds it too.
        client: an ``httpx.AsyncClient`` to send with (for custom TLS, proxies or transports).
            The exporter never closes a client it was given. Without one, the exporter builds
            its own here, which loads the CA bundle: construct the exporter at start-up rather
            than on a busy event loop. Redirects are not followed either way.
        max_request_bytes: the largest request body before compression; a larger batch is sent
            in several requests.

    Raises:
        ValueError: an argument is invalid.
    """

    #: The OTLP exporter wants finished spans only.
    wants_starts: Final = False
    #: Batches a lane may export at once by default: an OTLP receiver takes concurrent requests
    #: (the Collector's own exporters send with ten consumers), and each request waits for its
    #: answer; the exporter keeps each batch's progress on its own.
    max_concurrent_exports: Final = 4

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        encoding: Literal["protobuf", "json"] | None = None,
        compression: Literal["gzip"] | _Unset | None = _UNSET,
        timeout: float | None = None,
        client: httpx.AsyncClient | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        if type(max_request_bytes) is not int or max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be an int >= 1024, got {max_request_bytes!r}")
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"client must be an httpx.AsyncClient, got {type(client).__name__}")
        self._config: OTLPConfig = resolve_config(
            endpoint=endpoint,
            headers=headers,
            encoding=encoding,
            compression=compression,
            timeout=timeout,
            environ=os.environ,
            unset=_UNSET,
        )
        self._max_request_bytes = max_request_bytes
        self._codec = PROTOBUF if self._config.encoding == "protobuf" else JSON
        self._where = redact_url(self._config.endpoint)
        request_headers = httpx.Headers(self._config.headers)
        request_headers["Content-Type"] = self._codec.content_type
        request_headers["User-Agent"] = f"spanlane/{__version__}"
        if self._config.compression == "gzip":
            request_headers["Content-Encoding"] = "gzip"
        self._request_headers = request_headers
        # Values to scrub from response excerpts, should a receiver echo a request back: each
        # header value, and each long word of it ("Bearer <token>" echoed as just the token).
        secrets = set()
        for value in self._config.headers.values():
            secrets.add(value)
            secrets.update(word for word in value.split() if len(word) >= 8)
        # Longest first, so that a whole value is replaced before any word of it.
        self._secrets = tuple(sorted((v for v in secrets if len(v) >= 4), key=len, reverse=True))
        # The client is built here, not at the first export: building one loads the CA bundle
        # (30 to 170 ms). At the first export, that would stall the loop, or, in a worker
        # thread, take up to half a second of GIL hand-offs while spans pile up (see
        # docs/design-otlp.md). Construction happens once, usually at start-up.
        self._owns_client = client is None
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._config.timeout, follow_redirects=False, verify=True
            )
        self._client: httpx.AsyncClient | None = client
        self._closed = False
        # Per batch in flight (the lane exports several at once): how far each has got, so that
        # a retry resumes. Keyed by the batch object's id; `matches` guards against a reused id.
        self._progress: dict[int, _Progress] = {}
        # Encoding is CPU work on the event loop, in 1 ms slices: batches in flight at once
        # encode one at a time, so that their slices do not pile up in one turn of the loop
        # (concurrency pays off while requests wait for answers, not while encoding).
        self._encoding: anyio.Lock | None = None

    # --- read-only settings ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name used in statistics and logs: ``OTLPExporter``."""
        return type(self).__name__

    @property
    def endpoint(self) -> str:
        """The URL spans are POSTed to."""
        return self._config.endpoint

    @property
    def encoding(self) -> Literal["protobuf", "json"]:
        """``"protobuf"`` or ``"json"``."""
        return self._config.encoding

    @property
    def compression(self) -> Literal["gzip"] | None:
        """``"gzip"`` or None."""
        return self._config.compression

    @property
    def timeout(self) -> float:
        """Seconds one export call may take."""
        return self._config.timeout

    @property
    def max_request_bytes(self) -> int:
        """The largest request body before compression."""
        return self._max_request_bytes

    @property
    def header_names(self) -> tuple[str, ...]:
        """The names of the configured extra headers (their values are not exposed)."""
        return tuple(self._config.headers)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self._where!r}, encoding={self.encoding!r}, "
            f"compression={self.compression!r}, timeout={self.timeout!r}, "
            f"headers={list(self.header_names)!r})"
        )

    # --- the exporter protocol ---------------------------------------------------------------

    async def export(self, batch: Sequence[SpanRecord]) -> ExportResult:
        """Send one batch, in one request or, above ``max_request_bytes``, several.

        A retry of the same batch (the same records) after a retryable failure resends only
        the requests that had not succeeded.

        Returns:
            ``rejected``: how many spans the receiver rejected (OTLP partial success), plus the
            spans of requests that failed for good after an earlier request of the batch got
            through; ``unencodable``: spans left out because they could not be encoded.

        Raises:
            RetryableExportError: a transient failure; the lane retries the batch.
            ExportError: the receiver refused the batch for good, or the exporter is closed.
        """
        if self._closed:
            raise ExportError("the OTLP exporter is closed")
        key = id(batch)
        progress = self._progress.pop(key, None)
        if progress is None or not progress.matches(batch):
            # Start notifications carry no end time and are not OTLP spans.
            records = [record for record in batch if record.end_time_ns is not None]
            if not records:
                return ExportResult()
            if self._encoding is None:
                self._encoding = anyio.Lock()
            async with self._encoding:
                encoded = await encode_batch(
                    records,
                    self._codec,
                    self._max_request_bytes,
                    gzip=self._config.compression == "gzip",
                )
            progress = _Progress(batch, encoded.parts, encoded.unencodable)
        # Kept until the batch settles, including through a cancellation by the lane, so that
        # a retry of this batch skips requests that already succeeded. A lane that gives up on
        # a batch never says so: the oldest entries go once there are more than a lane keeps.
        self._progress[key] = progress
        while len(self._progress) > _MAX_PROGRESS:
            del self._progress[next(iter(self._progress))]
        client = self._client
        if client is None:  # aclose() ran while the batch was being encoded
            raise ExportError("the OTLP exporter is closed")
        with anyio.move_on_after(self._config.timeout) as deadline:
            await self._send_parts(client, progress)
        if deadline.cancelled_caught:
            raise RetryableExportError(
                f"OTLP export to {self._where} did not finish within {self._config.timeout} s"
            )
        self._progress.pop(key, None)
        if progress.first_error is not None and not progress.delivered:
            raise progress.first_error
        return ExportResult(
            rejected=progress.rejected + progress.failed, unencodable=progress.unencodable
        )

    async def aclose(self) -> None:
        """Close the HTTP client, unless it was passed in; later exports raise ``ExportError``."""
        self._closed = True
        self._progress.clear()
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()

    # --- sending -----------------------------------------------------------------------------

    async def _send_parts(self, client: httpx.AsyncClient, progress: _Progress) -> None:
        """Send the parts not yet sent, in order; raise on the first retryable failure."""
        while progress.next_part < len(progress.parts):
            part = progress.parts[progress.next_part]
            try:
                rejected = await self._post(client, part)
            except _RequestFailed as exc:
                progress.first_error = progress.first_error or exc
                progress.failed += part.spans
                progress.next_part += 1
                if not exc.part_only:
                    # The failure applies to every request (authentication, a wrong URL):
                    # the rest of the batch is abandoned and counted with the failed part.
                    remaining = progress.parts[progress.next_part :]
                    progress.failed += sum(rest.spans for rest in remaining)
                    progress.next_part = len(progress.parts)
                continue
            progress.delivered += part.spans
            progress.rejected += rejected
            progress.next_part += 1

    async def _post(self, client: httpx.AsyncClient, part: Part) -> int:
        """POST one part; return the spans rejected by a partial success."""
        body = part.body
        headers = self._request_headers
        content: bytes | AsyncIterator[bytes]
        if type(body) is Rope:
            # A huge request is streamed chunk by chunk, with its length given (no chunked
            # transfer encoding), rather than joined into one bytes on the event loop.
            content = _stream(body)
            headers = httpx.Headers(headers)
            headers["Content-Length"] = str(body.size)
        else:
            content = body  # type: ignore[assignment]
        try:
            async with client.stream(
                "POST",
                self._config.endpoint,
                content=content,
                headers=headers,
                follow_redirects=False,
                timeout=self._config.timeout,
            ) as response:
                body = await _read_capped(response, _MAX_RESPONSE_BYTES)
        except httpx.TimeoutException as exc:
            raise RetryableExportError(
                f"OTLP export to {self._where} timed out ({type(exc).__name__})"
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise _RequestFailed(
                f"OTLP export to {self._where} failed: {type(exc).__name__}", part_only=False
            ) from exc
        except httpx.TransportError as exc:
            # Connection refused or reset, DNS failure, a proxy error: try again later.
            raise RetryableExportError(
                f"OTLP export to {self._where} failed: {type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        if 200 <= status < 300:
            return self._read_partial_success(response, body, part.spans)
        reason = f"{status} {response.reason_phrase}".strip()
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            logger.debug(
                "spanlane OTLP: %s answered %s (retry after %s s)", self._where, reason, retry_after
            )
            raise RetryableExportError(
                f"OTLP receiver at {self._where} answered {reason}", retry_after=retry_after
            )
        if 300 <= status < 400:
            # Following a redirect could send the headers (API keys) to another host.
            logger.warning(
                "spanlane OTLP: %s answered a redirect (%s); redirects are not followed, "
                "configure the final URL",
                self._where,
                reason,
            )
        else:
            logger.warning(
                "spanlane OTLP: %s refused %d span(s) with %s: %s",
                self._where,
                part.spans,
                reason,
                self._excerpt(response, body),
            )
        raise _RequestFailed(
            f"OTLP receiver at {self._where} answered {reason}",
            part_only=status in _PART_STATUSES,
        )

    def _read_partial_success(self, response: httpx.Response, body: bytes, spans: int) -> int:
        if not body:
            return 0
        content_type = response.headers.get("Content-Type", "").lower()
        if "json" in content_type or (not content_type and self._codec is JSON):
            decode = JSON.decode_partial_success
        elif "protobuf" in content_type or not content_type:
            decode = PROTOBUF.decode_partial_success
        else:
            return 0  # a plain "OK" from something in between: nothing to read
        try:
            rejected, message = decode(body)
        except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            logger.debug("spanlane OTLP: unreadable success response from %s", self._where)
            return 0
        rejected = min(max(rejected, 0), spans)
        if rejected or message:
            logger.warning(
                "spanlane OTLP: %s accepted the request partially: %d of %d span(s) rejected: %s",
                self._where,
                rejected,
                spans,
                self._clean(message) or "(no message)",
            )
        return rejected

    def _excerpt(self, response: httpx.Response, body: bytes) -> str:
        """A short, printable, secret-free excerpt of an error response for the log."""
        content_type = response.headers.get("Content-Type", "").lower()
        text: str | None = None
        if "protobuf" in content_type:
            text = _otlp_proto.decode_status_message(body)
        if text is None:
            text = body.decode("utf-8", "replace")
        return self._clean(text) or "(empty body)"

    def _clean(self, text: str) -> str:
        """``text`` for a log line: secrets scrubbed, one line, printable, short."""
        # Scrub before cutting, so that no part of a secret survives at the cut.
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        text = re.sub(r"\s+", " ", text).strip()
        return "".join(ch if ch.isprintable() else "?" for ch in text[:_EXCERPT_CHARS])


async def _stream(rope: Rope) -> AsyncIterator[bytes]:
    for chunk in rope.chunks:
        yield chunk
        await anyio.lowlevel.checkpoint()


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read at most about ``limit`` bytes of a streamed response body."""
    chunks: list[bytes] = []
    size = 0
    async with contextlib.aclosing(response.aiter_bytes()) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    return b"".join(chunks)[:limit]
