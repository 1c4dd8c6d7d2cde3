"""OTLPExporter over real HTTP, against a hypercorn receiver on 127.0.0.1 (opentelemetry-proto)."""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence

import anyio
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otlp_receiver import (
    OTLPReceiver,
    Reply,
    check_span,
    full_record,
    serve_receiver,
    unused_socket,
)
from spanlane._exceptions import ExportError, RetryableExportError
from spanlane._records import SpanKind, SpanRecord
from spanlane.exporters import ExportResult, _otlp_proto
from spanlane.exporters.otlp import OTLPExporter

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-API-key-value"
BEARER = "Bearer tok-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTLP variable from the outer environment changes what these tests configure."""
    for signal in ("", "TRACES_"):
        for name in ("ENDPOINT", "HEADERS", "COMPRESSION", "TIMEOUT", "PROTOCOL"):
            monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{signal}{name}", raising=False)


@pytest.fixture
async def receiver(anyio_backend: str) -> AsyncIterator[OTLPReceiver]:
    async with serve_receiver(anyio_backend) as served:
        yield served


def records(count: int, *, start: int = 1) -> list[SpanRecord]:
    """Small distinct records with span ids ``start``, ``start + 1``, ..."""
    return [
        full_record(span_id=start + i, attributes={"i": i}, events=(), links=())
        for i in range(count)
    ]


def span_ids(received: Sequence[Span]) -> list[int]:
    return [int.from_bytes(span.span_id, "big") for span in received]


async def test_export_delivers_every_field_as_gzipped_protobuf(receiver: OTLPReceiver) -> None:
    batch = [full_record(), full_record(span_id=99, parent_span_id=None, parent_is_remote=False)]
    async with contextlib.aclosing(
        OTLPExporter(receiver.url, headers={"x-api-key": SECRET})
    ) as exporter:
        assert await exporter.export(batch) == ExportResult()
    (request,) = receiver.requests
    assert request.path == "/v1/traces"
    assert request.encoding == "protobuf"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["user-agent"].startswith("spanlane/")
    assert request.headers["x-api-key"] == SECRET
    assert request.raw[:2] == b"\x1f\x8b"  # the gzip magic number
    (resource_spans,) = request.request.resource_spans
    assert resource_spans.resource.attributes[0].value.string_value == "checkout"
    assert resource_spans.scope_spans[0].scope.name == "checkout.http"
    for span, record in zip(request.spans, batch, strict=True):
        check_span(span, record)


async def test_json_without_compression_delivers_every_field(receiver: OTLPReceiver) -> None:
    batch = [full_record()]
    exporter = OTLPExporter(receiver.url, encoding="json", compression=None)
    async with contextlib.aclosing(exporter):
        assert await exporter.export(batch) == ExportResult()
    (request,) = receiver.requests
    assert request.encoding == "json"
    assert "content-encoding" not in request.headers
    assert json.loads(request.raw)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] == 3
    check_span(request.spans[0], batch[0])


async def test_start_notifications_are_ignored(receiver: OTLPReceiver) -> None:
    start = full_record(span_id=5, end_time_ns=None)
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        assert await exporter.export([start]) == ExportResult()
        assert receiver.requests == []
        assert await exporter.export([start, full_record(span_id=6)]) == ExportResult()
    assert span_ids(receiver.spans) == [6]


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_raise_retryable_export_error(
    receiver: OTLPReceiver, status: int
) -> None:
    receiver.script(Reply(status))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with pytest.raises(RetryableExportError, match=str(status)) as caught:
            await exporter.export(records(1))
    assert caught.value.retry_after is None


async def test_retry_after_in_seconds_is_passed_on(receiver: OTLPReceiver) -> None:
    receiver.script(Reply(429, {"Retry-After": "7"}))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with pytest.raises(RetryableExportError) as caught:
            await exporter.export(records(1))
    assert caught.value.retry_after == 7.0


async def test_retry_after_as_an_http_date_is_passed_on(receiver: OTLPReceiver) -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    receiver.script(Reply(503, {"Retry-After": later}))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with pytest.raises(RetryableExportError) as caught:
            await exporter.export(records(1))
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 120


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 500, 501])
async def test_other_statuses_fail_for_good_and_log_status_and_body(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    receiver.script(Reply(status, body=b"field 'spans' is\nnot valid", content_type="text/plain"))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with (
            caplog.at_level(logging.WARNING, logger="spanlane"),
            pytest.raises(ExportError, match=str(status)) as caught,
        ):
            await exporter.export(records(2))
    assert not isinstance(caught.value, RetryableExportError)
    assert f"{status}" in caplog.text
    assert "field 'spans' is not valid" in caplog.text
    assert "2 span(s)" in caplog.text


async def test_a_google_rpc_status_body_is_shown_by_its_message(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    # google.rpc.Status { code: 3, message: "bad trace id" }
    body = b"\x08\x03\x12\x0cbad trace id"
    receiver.script(Reply(400, body=body, content_type="application/x-protobuf"))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with caplog.at_level(logging.WARNING, logger="spanlane"), pytest.raises(ExportError):
            await exporter.export(records(1))
    assert "bad trace id" in caplog.text


async def test_redirects_are_not_followed(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script(Reply(307, {"Location": receiver.url + "?moved=1"}))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with (
            caplog.at_level(logging.WARNING, logger="spanlane"),
            pytest.raises(ExportError, match="307") as caught,
        ):
            await exporter.export(records(1))
    assert not isinstance(caught.value, RetryableExportError)
    assert len(receiver.requests) == 1
    assert "redirect" in caplog.text


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_partial_success_returns_the_rejected_count_and_logs_the_message(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    receiver.script(Reply(partial=(2, "spans too old")))
    exporter = OTLPExporter(receiver.url, encoding=encoding)  # type: ignore[arg-type]
    async with contextlib.aclosing(exporter):
        with caplog.at_level(logging.WARNING, logger="spanlane"):
            assert await exporter.export(records(5)) == ExportResult(rejected=2)
    assert "spans too old" in caplog.text
    assert "2 of 5" in caplog.text


async def test_partial_success_with_only_a_message_is_a_warning(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script(Reply(partial=(0, "attribute values truncated")))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        with caplog.at_level(logging.WARNING, logger="spanlane"):
            assert await exporter.export(records(3)) == ExportResult()
    assert "attribute values truncated" in caplog.text


async def test_an_unreadable_success_body_counts_as_full_success(receiver: OTLPReceiver) -> None:
    receiver.script(
        Reply(body=b"\xff\xff", content_type="application/x-protobuf"),
        Reply(body=b"OK", content_type="text/plain"),
        # Too deep for the JSON decoder: a RecursionError, not an export failure.
        Reply(
            body=b'{"partialSuccess":{"rejectedSpans":' + b"[" * 5_000,
            content_type="application/json",
        ),
    )
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        assert await exporter.export(records(1)) == ExportResult()
        assert await exporter.export(records(1)) == ExportResult()
        assert await exporter.export(records(1)) == ExportResult()


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_a_batch_over_the_size_cap_is_split_and_sent_whole(
    receiver: OTLPReceiver, encoding: str
) -> None:
    batch = records(120)
    exporter = OTLPExporter(receiver.url, encoding=encoding, max_request_bytes=4096)  # type: ignore[arg-type]
    async with contextlib.aclosing(exporter):
        assert await exporter.export(batch) == ExportResult()
    assert len(receiver.requests) > 1
    assert all(len(gzip.decompress(request.raw)) <= 4096 for request in receiver.requests)
    assert span_ids(receiver.spans) == [record.span_id for record in batch]


async def test_a_retry_resumes_after_the_parts_already_delivered(receiver: OTLPReceiver) -> None:
    batch = tuple(records(120))
    receiver.script(Reply(), Reply(503))
    async with contextlib.aclosing(OTLPExporter(receiver.url, max_request_bytes=4096)) as exporter:
        with pytest.raises(RetryableExportError):
            await exporter.export(batch)
        assert len(receiver.requests) == 2
        assert await exporter.export(batch) == ExportResult()
    first, refused, resent, *rest = receiver.requests
    assert resent.raw == refused.raw
    delivered = [first, resent, *rest]
    assert span_ids([span for request in delivered for span in request.spans]) == [
        record.span_id for record in batch
    ]


async def test_a_different_batch_starts_afresh_after_a_failed_one(
    receiver: OTLPReceiver,
) -> None:
    receiver.script(Reply(), Reply(503))
    async with contextlib.aclosing(OTLPExporter(receiver.url, max_request_bytes=4096)) as exporter:
        with pytest.raises(RetryableExportError):
            await exporter.export(records(120))
        receiver.requests.clear()
        fresh = records(120, start=1000)
        assert await exporter.export(fresh) == ExportResult()
    assert span_ids(receiver.spans) == [record.span_id for record in fresh]


async def test_a_content_failure_of_one_part_rejects_only_that_part(
    receiver: OTLPReceiver,
) -> None:
    receiver.script(Reply(), Reply(400))
    batch = records(120)
    async with contextlib.aclosing(OTLPExporter(receiver.url, max_request_bytes=4096)) as exporter:
        rejected = (await exporter.export(batch)).rejected
    assert rejected == len(receiver.requests[1].spans)
    assert len(receiver.requests) > 2


async def test_an_auth_failure_after_a_delivered_part_abandons_the_rest(
    receiver: OTLPReceiver,
) -> None:
    receiver.script(Reply(), Reply(401))
    batch = records(120)
    async with contextlib.aclosing(OTLPExporter(receiver.url, max_request_bytes=4096)) as exporter:
        rejected = (await exporter.export(batch)).rejected
    assert len(receiver.requests) == 2
    assert rejected == len(batch) - len(receiver.requests[0].spans)


async def test_a_batch_whose_every_part_fails_raises(receiver: OTLPReceiver) -> None:
    receiver.script(*[Reply(400)] * 50)
    async with contextlib.aclosing(OTLPExporter(receiver.url, max_request_bytes=4096)) as exporter:
        with pytest.raises(ExportError, match="400"):
            await exporter.export(records(120))


async def test_a_hanging_receiver_times_out_as_retryable(receiver: OTLPReceiver) -> None:
    receiver.script(Reply(hang=True))
    async with contextlib.aclosing(OTLPExporter(receiver.url, timeout=0.2)) as exporter:
        with pytest.raises(RetryableExportError):
            await exporter.export(records(1))


async def test_a_refused_connection_is_retryable(anyio_backend: str) -> None:
    sock = unused_socket()  # bound, never listening: connections are refused
    with sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
        async with contextlib.aclosing(OTLPExporter(url)) as exporter:
            with pytest.raises(RetryableExportError, match="ConnectError"):
                await exporter.export(records(1))


async def test_cancellation_aborts_the_request_and_propagates(receiver: OTLPReceiver) -> None:
    receiver.script(Reply(hang=True))
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        async with anyio.create_task_group() as tg:

            async def export_then_fail() -> None:
                await exporter.export(records(1))
                pytest.fail("the export should have been cancelled")

            tg.start_soon(export_then_fail)
            await receiver.wait_for_requests(1)
            tg.cancel_scope.cancel()
        # The exporter is still usable afterwards.
        assert await exporter.export(records(1, start=50)) == ExportResult()
    assert span_ids(receiver.requests[-1].spans) == [50]


async def test_aclose_closes_its_own_client_and_refuses_later_exports(
    receiver: OTLPReceiver,
) -> None:
    exporter = OTLPExporter(receiver.url)
    await exporter.export(records(1))
    await exporter.aclose()
    await exporter.aclose()  # idempotent
    with pytest.raises(ExportError, match="closed"):
        await exporter.export(records(1))


async def test_a_client_passed_in_is_used_and_left_open(receiver: OTLPReceiver) -> None:
    async with httpx.AsyncClient(headers={"x-from-client": "yes"}) as client:
        exporter = OTLPExporter(receiver.url, client=client)
        assert await exporter.export(records(1)) == ExportResult()
        await exporter.aclose()
        assert not client.is_closed
    assert receiver.requests[0].headers["x-from-client"] == "yes"


def exception_texts(error: BaseException) -> str:
    """str and repr of an exception and everything chained to it."""
    texts = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


async def test_header_values_never_reach_logs_reprs_or_exceptions(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"x-api-key": SECRET, "Authorization": BEARER}
    # A receiver that echoes the secret back must not get it into the log either.
    receiver.script(
        Reply(400, body=f"bad key {SECRET} / {BEARER}".encode(), content_type="text/plain"),
        Reply(503, {"Retry-After": "1"}),
        Reply(302, {"Location": "http://127.0.0.1:1/elsewhere"}),
        Reply(partial=(1, f"rejected for {SECRET}")),
    )
    texts: list[str] = []
    exporter = OTLPExporter(receiver.url, headers=headers)
    texts.append(repr(exporter))
    with caplog.at_level(logging.DEBUG):
        async with contextlib.aclosing(exporter):
            for _ in range(3):
                with pytest.raises(ExportError) as caught:
                    await exporter.export(records(1))
                texts.append(exception_texts(caught.value))
                logging.getLogger("spanlane").debug("failed", exc_info=caught.value)
            assert await exporter.export(records(1)) == ExportResult(rejected=1)
        sock = unused_socket()
        with sock:
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
            async with contextlib.aclosing(OTLPExporter(url, headers=headers)) as refused:
                with pytest.raises(RetryableExportError) as caught:
                    await refused.export(records(1))
                texts.append(exception_texts(caught.value))
                logging.getLogger("spanlane").debug("failed", exc_info=caught.value)
    texts.append(caplog.text)
    assert "[redacted]" in caplog.text
    everything = "\n".join(texts)
    assert SECRET not in everything
    assert BEARER.split()[1] not in everything
    # The secret did travel where it belongs.
    assert receiver.requests[0].headers["x-api-key"] == SECRET


async def test_records_of_every_kind_are_accepted(receiver: OTLPReceiver) -> None:
    batch = [full_record(span_id=i + 1, kind=kind) for i, kind in enumerate(SpanKind)]
    async with contextlib.aclosing(OTLPExporter(receiver.url)) as exporter:
        assert await exporter.export(batch) == ExportResult()
    assert [span.kind for span in receiver.spans] == [int(kind) for kind in SpanKind]


# --- without the otlp extra ---------------------------------------------------------------------


@pytest.mark.usefixtures("without_httpx")
async def test_import_without_httpx_names_the_extra_to_install() -> None:
    with pytest.raises(ModuleNotFoundError) as caught:
        from spanlane.exporters import OTLPExporter  # noqa: F401
    assert 'pip install "spanlane[otlp]"' in str(caught.value)
    assert caught.value.name == "httpx"
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert caught.value.__cause__.name == "httpx"


async def test_concurrent_batches_each_resume_their_own_parts(receiver: OTLPReceiver) -> None:
    first, second = tuple(records(120)), tuple(records(120, start=1000))
    receiver.script(Reply(), Reply(503), Reply(), Reply(503))
    async with contextlib.aclosing(OTLPExporter(receiver.url, max_request_bytes=4096)) as exporter:
        assert exporter.max_concurrent_exports == 4
        for batch in (first, second):
            with pytest.raises(RetryableExportError):
                await exporter.export(batch)
        # Each batch's progress is its own: the second batch did not discard the first's.
        assert await exporter.export(first) == ExportResult()
        assert await exporter.export(second) == ExportResult()
    sent = [
        span
        for number, request in enumerate(receiver.requests)
        if number not in (1, 3)
        for span in request.spans
    ]
    assert sorted(span_ids(sent)) == sorted(r.span_id for r in first + second)
    assert len(span_ids(sent)) == len(first) + len(second)


@pytest.mark.parametrize("compression", ["gzip", None])
async def test_a_huge_span_is_streamed_in_chunks_and_arrives_whole(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, compression: str | None
) -> None:
    # Scaled down: "huge" from 1000 characters on, kept in chunks of 4 KiB.
    monkeypatch.setattr(_otlp_proto, "LARGE_CHARS", 1000)
    monkeypatch.setattr(_otlp_proto, "CHUNK_BYTES", 4096)
    batch = [full_record(span_id=1), full_record(span_id=2, attributes={"prompt": "p✓" * 40_000})]
    exporter = OTLPExporter(receiver.url, compression=compression)  # type: ignore[arg-type]
    async with contextlib.aclosing(exporter):
        assert await exporter.export(batch) == ExportResult()
    (request,) = receiver.requests
    assert "transfer-encoding" not in request.headers
    assert int(request.headers["content-length"]) == len(request.raw)
    for span, record in zip(request.spans, batch, strict=True):
        check_span(span, record)
