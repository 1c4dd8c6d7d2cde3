"""TracingTransport: CLIENT spans and traceparent injection against a real server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

import spanlane
from asgi_servers import downstream_app, read_body, send_json, serve_hypercorn
from spanlane import SpanKind, StatusCode, open_tracer
from spanlane.asgi import Receive, Scope, Send
from spanlane.exporters import MemoryExporter
from spanlane.httpx import TracingTransport, url_full
from spanlane.sampling import ALWAYS_OFF
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[str]:
    """The downstream app, served before any tracer opens (so it records nothing itself)."""
    async with serve_hypercorn(downstream_app(), anyio_backend) as url:
        yield url


def traced_client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=TracingTransport(), **kwargs)  # type: ignore[arg-type]


async def test_request_is_a_client_span_child_of_the_current_span(server: str) -> None:
    port = httpx.URL(server).port
    async with capture_spans() as captured, traced_client() as client:
        with spanlane.span("handler") as handler:
            response = await client.get(f"{server}/stock/apple", params={"sig": "s3cr3t", "n": 1})
    assert response.status_code == 200
    (record,) = [span for span in await captured.flush() if span.kind is SpanKind.CLIENT]
    assert record.name == "GET"
    assert record.parent_span_id == handler.context.span_id
    assert record.trace_id == handler.context.trace_id
    assert record.status.code is StatusCode.UNSET
    assert dict(record.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.full": f"{server}/stock/apple?sig=REDACTED&n=1",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }


async def test_injected_traceparent_names_the_client_span(server: str) -> None:
    async with capture_spans() as captured, traced_client() as client:
        seen = (await client.get(f"{server}/stock/pear")).json()
    (record,) = await captured.flush()
    assert seen["traceparent_seen"]
    assert seen["trace_id"] == f"{record.trace_id:032x}"
    assert seen["parent_span_id"] == f"{record.span_id:016x}"


async def test_trace_state_travels_with_the_request(server: str) -> None:
    parent = spanlane.SpanContext(0xABC, 0xDEF, 1, "vendor=opaque", is_remote=True)
    async with capture_spans() as captured, traced_client() as client:
        with captured.tracer.span("handler", parent=parent):
            request = client.build_request("GET", f"{server}/stock/plum")
            await client.send(request)
    assert request.headers["tracestate"] == "vendor=opaque"
    assert request.headers["traceparent"].startswith(f"00-{0xABC:032x}-")


async def test_an_unsampled_request_carries_its_decision_downstream(server: str) -> None:
    async with capture_spans(sampler=ALWAYS_OFF) as captured, traced_client() as client:
        with captured.tracer.span("handler") as handler:
            request = client.build_request("GET", f"{server}/stock/fig")
            seen = (await client.send(request)).json()
        assert await captured.flush() == []
        stats = captured.tracer.stats()
    # The CLIENT span is real but not sampled: it has its own id, and the header says "-00".
    traceparent = request.headers["traceparent"]
    assert traceparent.startswith(f"00-{handler.context.trace_id:032x}-")
    assert traceparent.endswith("-00")
    assert seen["trace_id"] == f"{handler.context.trace_id:032x}"
    assert seen["parent_span_id"] != f"{handler.context.span_id:016x}"
    assert seen["sampled"] is False
    assert stats.spans_sampled_out == 2
    assert stats.lanes[0].offered == 0


@pytest.mark.parametrize(("status", "error"), [(503, True), (404, True), (302, False)])
async def test_4xx_and_5xx_responses_are_errors(server: str, status: int, error: bool) -> None:
    async with capture_spans() as captured, traced_client() as client:
        response = await client.get(f"{server}/status/{status}")
    assert response.status_code == status
    (record,) = await captured.flush()
    assert record.attributes["http.response.status_code"] == status
    if error:
        assert record.status.code is StatusCode.ERROR
        assert record.status.description is None  # the status code says it all
        assert record.attributes["error.type"] == str(status)
    else:
        assert record.status.code is StatusCode.UNSET
        assert "error.type" not in record.attributes


async def test_transport_error_is_an_error_and_propagates() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        port = sock.getsockname()[1]
        async with capture_spans() as captured, traced_client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
    (record,) = await captured.flush()
    assert record.status.code is StatusCode.ERROR
    assert record.attributes["error.type"] == "httpx.ConnectError"
    assert "http.response.status_code" not in record.attributes
    assert [event.name for event in record.events] == ["exception"]


async def test_redirect_hops_are_separate_spans(anyio_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await read_body(receive)
        if scope["path"] == "/old":
            await send(
                {"type": "http.response.start", "status": 307, "headers": [(b"location", b"/new")]}
            )
            await send({"type": "http.response.body"})
        else:
            headers = dict(scope["headers"])
            await send_json(send, 200, {"traceparent": headers[b"traceparent"].decode()})

    async with (
        serve_hypercorn(app, anyio_backend) as url,
        capture_spans() as captured,
        traced_client(follow_redirects=True) as client,
    ):
        response = await client.get(f"{url}/old")
    first, second = await captured.flush()
    assert [first.attributes["url.full"], second.attributes["url.full"]] == [
        f"{url}/old",
        f"{url}/new",
    ]
    assert first.status.code is second.status.code is StatusCode.UNSET
    # The final hop carried its own span's context, not the first hop's.
    assert response.json()["traceparent"].split("-")[2] == f"{second.span_id:016x}"


async def test_cancelled_request_is_marked_cancelled_not_failed(anyio_backend: str) -> None:
    arrived = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await read_body(receive)
        arrived.set()
        # Never answer; return once the client has gone (the next message is a disconnect).
        await receive()

    async with (
        serve_hypercorn(app, anyio_backend) as url,
        capture_spans() as captured,
        traced_client() as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.get, f"{url}/slow")
        await arrived.wait()
        tg.cancel_scope.cancel()
    (record,) = await captured.flush()
    assert record.status.code is StatusCode.UNSET
    assert record.attributes["spanlane.cancelled"] is True


async def test_without_a_tracer_requests_go_out_untouched(server: str) -> None:
    async with traced_client() as client:
        seen = (await client.get(f"{server}/stock/apple")).json()
    assert not seen["traceparent_seen"]


async def test_explicit_tracer_wins_over_the_current_one(server: str) -> None:
    chosen, other = MemoryExporter(), MemoryExporter()
    async with open_tracer(chosen, max_batch_size=1) as tracer, open_tracer(other) as current:
        assert spanlane.current_tracer() is current
        transport = TracingTransport(tracer=tracer)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(f"{server}/stock/apple")
    assert [record.kind for record in chosen.spans] == [SpanKind.CLIENT]
    assert other.spans == []


async def test_closing_the_client_closes_the_inner_transport() -> None:
    class Inner(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.entered = self.closed = False

        async def __aenter__(self) -> Inner:
            self.entered = True
            return self

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise NotImplementedError

        async def aclose(self) -> None:
            self.closed = True

    inner = Inner()
    async with httpx.AsyncClient(transport=TracingTransport(inner)):
        assert inner.entered
    assert inner.closed


def test_url_full_redacts_credentials_and_signatures_only() -> None:
    url = httpx.URL("https://alice:pw@example.com:8443/a/b?X-Goog-Signature=abc&page=2#top")
    assert url_full(url) == (
        "https://REDACTED:REDACTED@example.com:8443/a/b?X-Goog-Signature=REDACTED&page=2#top"
    )
    assert url_full(httpx.URL("http://example.com/?q=signature")) == (
        "http://example.com/?q=signature"
    )
