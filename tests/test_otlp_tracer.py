"""OTLPExporter end to end: spans from open_tracer() to a real receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import pytest

import spanlane
from otlp_receiver import (
    OTLPReceiver,
    Reply,
    attributes_to_python,
    serve_receiver,
    unused_socket,
)
from spanlane import DropReason, RetryableExportError, RetryPolicy, SpanKind, StatusCode
from spanlane.exporters import ExportResult
from spanlane.exporters.otlp import OTLPExporter

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_attempts=50, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL variable from the outer environment changes what these tests configure."""
    for signal in ("", "TRACES_"):
        for name in ("ENDPOINT", "HEADERS", "COMPRESSION", "TIMEOUT", "PROTOCOL"):
            monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{signal}{name}", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


@pytest.fixture
async def receiver(anyio_backend: str) -> AsyncIterator[OTLPReceiver]:
    async with serve_receiver(anyio_backend) as served:
        yield served


class SignallingExporter(OTLPExporter):
    """An OTLPExporter that sets :attr:`failed` when an export fails retryably."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        self.failed = anyio.Event()

    async def export(self, batch: Sequence[spanlane.SpanRecord]) -> ExportResult:
        try:
            return await super().export(batch)
        except RetryableExportError:
            self.failed.set()
            raise


async def test_spans_and_the_tracer_resource_reach_the_receiver(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=core")
    async with spanlane.open_tracer(
        OTLPExporter(receiver.url),
        service_name="checkout",
        resource_attributes={"region": "eu-1"},
    ) as tracer:
        with tracer.span("handler", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.route", "/pay")
            with tracer.span("db", kind=SpanKind.CLIENT, links=[root.context]) as child:
                child.add_event("query", {"rows": 3})
                child.set_status(StatusCode.ERROR, "deadlock")
        report = await tracer.flush(timeout=10.0)
    assert report.completed
    assert tracer.stats().lanes[0].exported == 2
    (request,) = receiver.requests
    (resource_spans,) = request.request.resource_spans
    resource = attributes_to_python(resource_spans.resource.attributes)
    assert resource["service.name"] == "checkout"
    assert resource["deployment.environment"] == "test"
    assert resource["team"] == "core"
    assert resource["region"] == "eu-1"
    assert resource["telemetry.sdk.name"] == "spanlane"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "spanlane"
    db, handler = scope_spans.spans
    assert (db.name, handler.name) == ("db", "handler")
    assert db.parent_span_id == handler.span_id
    assert db.trace_id == handler.trace_id
    assert handler.parent_span_id == b""
    assert db.kind == SpanKind.CLIENT
    assert db.links[0].span_id == handler.span_id
    assert db.events[0].name == "query"
    assert db.status.code == StatusCode.ERROR
    assert db.status.message == "deadlock"
    assert attributes_to_python(handler.attributes) == {"http.route": "/pay"}
    assert handler.start_time_unix_nano <= db.start_time_unix_nano <= db.end_time_unix_nano


async def test_otel_service_name_reaches_the_receiver(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    async with spanlane.open_tracer(OTLPExporter(receiver.url)) as tracer:
        with tracer.span("work"):
            pass
    resource = attributes_to_python(
        receiver.requests[0].request.resource_spans[0].resource.attributes
    )
    assert resource["service.name"] == "from-env"


async def test_retryable_failures_are_retried_until_delivered(receiver: OTLPReceiver) -> None:
    receiver.script(Reply(503), Reply(429, {"Retry-After": "0"}), Reply(502))
    async with spanlane.open_tracer(OTLPExporter(receiver.url), retry=FAST_RETRY) as tracer:
        for i in range(20):
            with tracer.span(f"s{i}"):
                pass
        report = await tracer.flush(timeout=10.0)
    assert report.completed
    lane = tracer.stats().lanes[0]
    assert lane.exported == 20
    assert lane.retries == 3
    assert lane.dropped_total == 0
    # Four attempts of the same batch; the last one was accepted.
    assert len(receiver.requests) == 4
    assert len({request.raw for request in receiver.requests}) == 1


async def test_partial_success_is_counted_as_rejected(receiver: OTLPReceiver) -> None:
    receiver.script(Reply(partial=(2, "too old")))
    async with spanlane.open_tracer(OTLPExporter(receiver.url)) as tracer:
        for i in range(5):
            with tracer.span(f"s{i}"):
                pass
    lane = tracer.stats().lanes[0]
    assert lane.exported == 3
    assert lane.dropped == {DropReason.REJECTED: 2}
    assert lane.balanced


async def test_a_permanent_failure_is_counted_as_export_failed(receiver: OTLPReceiver) -> None:
    receiver.script(Reply(401))
    async with spanlane.open_tracer(OTLPExporter(receiver.url), retry=FAST_RETRY) as tracer:
        for i in range(4):
            with tracer.span(f"s{i}"):
                pass
    lane = tracer.stats().lanes[0]
    assert lane.dropped == {DropReason.EXPORT_FAILED: 4}
    assert lane.retries == 0


async def test_a_split_batch_is_delivered_whole_through_the_lane(receiver: OTLPReceiver) -> None:
    # Fail the second part once: the lane's retry must not resend the first.
    receiver.script(Reply(), Reply(503))
    exporter = OTLPExporter(receiver.url, max_request_bytes=2048)
    async with spanlane.open_tracer(exporter, retry=FAST_RETRY, max_batch_size=200) as tracer:
        for i in range(200):
            with tracer.span("s", attributes={"i": i}):
                pass
    lane = tracer.stats().lanes[0]
    assert lane.exported == 200
    assert lane.retries == 1
    delivered = [span for n, r in enumerate(receiver.requests) if n != 1 for span in r.spans]
    assert sorted(attributes_to_python(span.attributes)["i"] for span in delivered) == list(  # type: ignore[type-var]
        range(200)
    )


async def test_shutdown_while_the_receiver_hangs_counts_shutdown_timeout(
    receiver: OTLPReceiver,
) -> None:
    receiver.script(Reply(hang=True))
    exporter = OTLPExporter(receiver.url, timeout=60.0)
    tracer = spanlane.open_tracer(
        exporter, max_batch_size=10, drain_timeout=0.3, export_timeout=60.0
    )
    with anyio.fail_after(10.0):  # a generous bound; the assertion is on the counts
        async with tracer:
            for i in range(10):  # a full batch goes out at once
                with tracer.span(f"s{i}"):
                    pass
            await receiver.wait_for_requests(1)
            for i in range(5):  # these stay queued behind the hanging export
                with tracer.span(f"late{i}"):
                    pass
    lane = tracer.stats().lanes[0]
    assert lane.exported == 0
    assert lane.dropped == {DropReason.SHUTDOWN_TIMEOUT: 15}
    assert lane.queued == lane.in_flight == 0


async def test_a_receiver_that_comes_up_late_loses_nothing(anyio_backend: str) -> None:
    sock = unused_socket()  # bound but not listening: connections are refused for now
    with sock:
        exporter = SignallingExporter(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces")
        async with spanlane.open_tracer(
            exporter,
            buffer_size=4096,
            max_batch_size=256,
            flush_interval=0.05,
            export_timeout=30.0,
            retry=FAST_RETRY,
        ) as tracer:
            for i in range(1000):
                with tracer.span("s", attributes={"i": i}):
                    pass
            with anyio.fail_after(10.0):
                await exporter.failed.wait()
            async with serve_receiver(anyio_backend, sock) as receiver:
                report = await tracer.flush(timeout=20.0)
                assert report.completed
    lane = tracer.stats().lanes[0]
    assert lane.exported == 1000
    assert lane.dropped_total == 0
    assert lane.retries >= 1
    received = sorted(attributes_to_python(s.attributes)["i"] for s in receiver.spans)  # type: ignore[type-var]
    assert received == list(range(1000))
