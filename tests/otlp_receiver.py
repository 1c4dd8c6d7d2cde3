"""A real OTLP/HTTP receiver for tests: an ASGI app served by hypercorn on 127.0.0.1.

It decodes every request with the official ``opentelemetry-proto`` definitions (and
``google.protobuf.json_format`` for OTLP/JSON), records it, and answers as scripted: a status,
headers such as ``Retry-After``, a partial success, or a hang until released.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import attrs
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from asgi_servers import serve_hypercorn
from spanlane._records import (
    Event,
    InstrumentationScope,
    Link,
    Resource,
    SpanContext,
    SpanKind,
    SpanRecord,
    Status,
    StatusCode,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Seconds any wait in the receiver may take before the test fails instead of hanging.
WAIT_LIMIT = 10.0
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


@attrs.frozen
class Reply:
    """One scripted answer.

    Attributes:
        status: the HTTP status.
        headers: extra response headers (``Retry-After``, ``Location``).
        body: a raw body; when None, an ``ExportTraceServiceResponse`` in the request's encoding.
        content_type: the body's type; the request's by default.
        partial: ``(rejected_spans, error_message)`` for a partial success.
        hang: wait until :meth:`OTLPReceiver.release` (or shutdown) before answering.
    """

    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes | None = None
    content_type: str | None = None
    partial: tuple[int, str] | None = None
    hang: bool = False


@attrs.frozen
class Received:
    """A request as the receiver saw it.

    Attributes:
        path: the request path.
        headers: request headers, names in lower case.
        raw: the body as sent (compressed or not).
        request: the decoded ``ExportTraceServiceRequest``.
        encoding: ``"protobuf"`` or ``"json"``.
    """

    path: str
    headers: dict[str, str]
    raw: bytes
    request: Any
    encoding: str

    @property
    def spans(self) -> list[Span]:
        """Every span in the request, in wire order."""
        return [
            span
            for resource_spans in self.request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes ids in hex; json_format expects base64 for ``bytes`` fields."""
    if isinstance(node, dict):
        return {
            key: (
                base64.b64encode(bytes.fromhex(value)).decode()
                if key in _ID_FIELDS and isinstance(value, str)
                else _hex_ids_to_base64(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def decode_request(body: bytes, content_type: str) -> tuple[Any, str]:
    """Decode an uncompressed OTLP request body; raise ``ValueError`` if it is not one."""
    if content_type == "application/x-protobuf":
        return ExportTraceServiceRequest.FromString(body), "protobuf"
    if content_type == "application/json":
        document = _hex_ids_to_base64(json.loads(body))
        return json_format.ParseDict(document, ExportTraceServiceRequest()), "json"
    raise ValueError(f"unexpected content type {content_type!r}")


class OTLPReceiver:
    """The ASGI app: records requests and answers per its script (200 OK once it runs out)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.port = 0
        self._script: deque[Reply] = deque()
        self._release = anyio.Event()
        self._arrived = anyio.Event()

    @property
    def url(self) -> str:
        """The OTLP/HTTP traces endpoint of this receiver."""
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def spans(self) -> list[Span]:
        """Every span received, in arrival order."""
        return [span for received in self.requests for span in received.spans]

    def script(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order."""
        self._script.extend(replies)

    def release(self) -> None:
        """Let every hanging request (and any later one scripted to hang) answer."""
        self._release.set()

    async def wait_for_requests(self, count: int) -> None:
        """Wait until ``count`` requests have arrived (they may still be hanging)."""
        with anyio.fail_after(WAIT_LIMIT):
            while len(self.requests) < count:
                await self._arrived.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        content_type = headers.get("content-type", "")
        try:
            body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
            request, encoding = decode_request(body, content_type)
        except Exception as exc:  # an undecodable request is a bug the test must see
            await self._answer(send, 400, {}, f"undecodable: {exc!r}".encode(), "text/plain")
            raise
        self.requests.append(Received(scope["path"], headers, raw, request, encoding))
        self._arrived.set()
        self._arrived = anyio.Event()
        reply = self._script.popleft() if self._script else Reply()
        if reply.hang:
            await self._release.wait()
        body_out = reply.body
        if body_out is None:
            response = ExportTraceServiceResponse()
            if reply.partial is not None:
                rejected, error_message = reply.partial
                response.partial_success.CopyFrom(
                    ExportTracePartialSuccess(rejected_spans=rejected, error_message=error_message)
                )
            if encoding == "json":
                body_out = json_format.MessageToJson(response).encode()
            else:
                body_out = response.SerializeToString()
        await self._answer(
            send, reply.status, reply.headers, body_out, reply.content_type or content_type
        )

    @staticmethod
    async def _answer(
        send: Send, status: int, headers: dict[str, str], body: bytes, content_type: str
    ) -> None:
        header_list = [(b"content-type", content_type.encode())]
        header_list += [(key.encode(), value.encode()) for key, value in headers.items()]
        header_list.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": header_list})
        await send({"type": "http.response.body", "body": body})


def unused_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1, not yet listening.

    Connections to it are refused until it listens, which is how a test stages a receiver that
    is down and then comes up on the same port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_receiver(
    backend: str, sock: socket.socket | None = None
) -> AsyncIterator[OTLPReceiver]:
    """Serve a fresh :class:`OTLPReceiver` with hypercorn on the current backend.

    Args:
        backend: ``"asyncio"`` or ``"trio"`` (the ``anyio_backend`` fixture's value).
        sock: a bound socket to listen on (see :func:`unused_socket`); a new one by default.
            The caller keeps ownership of a socket it passes in.
    """
    listening = unused_socket() if sock is None else sock
    receiver = OTLPReceiver()
    receiver.port = listening.getsockname()[1]
    try:
        # hypercorn's ASGI type names every event type; this app handles the two it needs.
        async with serve_hypercorn(receiver, backend, sock=listening, graceful_timeout=2.0):
            try:
                yield receiver
            finally:
                receiver.release()
    finally:
        if sock is None:
            listening.close()


# --- checking what arrived against what was sent ------------------------------------------------


def any_value_to_python(value: Any) -> object:
    """An ``AnyValue`` as the Python value spanlane records hold (arrays become tuples)."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(any_value_to_python(item) for item in value.array_value.values)
    if which == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values}
    if which is None:
        # An empty AnyValue: None inside an array or a map.
        return None
    return getattr(value, which)


def attributes_to_python(keyvalues: Any) -> dict[str, object]:
    """A repeated ``KeyValue`` as a dict."""
    return {kv.key: any_value_to_python(kv.value) for kv in keyvalues}


def check_span(span: Span, record: SpanRecord) -> None:
    """Assert that a received ``Span`` carries every field of ``record``."""
    assert span.trace_id == record.trace_id.to_bytes(16, "big")
    assert span.span_id == record.span_id.to_bytes(8, "big")
    expected_parent = (
        b"" if record.parent_span_id is None else record.parent_span_id.to_bytes(8, "big")
    )
    assert span.parent_span_id == expected_parent
    assert span.trace_state == record.trace_state
    assert span.name == record.name
    assert span.kind == int(record.kind)
    assert span.start_time_unix_nano == record.start_time_ns
    assert span.end_time_unix_nano == record.end_time_ns
    assert span.flags == (0x301 if record.parent_is_remote else 0x101)
    assert attributes_to_python(span.attributes) == dict(record.attributes)
    assert span.dropped_attributes_count == record.dropped_attributes
    assert len(span.events) == len(record.events)
    for got_event, event in zip(span.events, record.events, strict=True):
        assert got_event.name == event.name
        assert got_event.time_unix_nano == event.time_ns
        assert attributes_to_python(got_event.attributes) == dict(event.attributes)
        assert got_event.dropped_attributes_count == event.dropped_attributes
    assert span.dropped_events_count == record.dropped_events
    assert len(span.links) == len(record.links)
    for got_link, link in zip(span.links, record.links, strict=True):
        context = link.context
        assert got_link.trace_id == context.trace_id.to_bytes(16, "big")
        assert got_link.span_id == context.span_id.to_bytes(8, "big")
        assert got_link.trace_state == context.trace_state
        assert attributes_to_python(got_link.attributes) == dict(link.attributes)
        assert got_link.dropped_attributes_count == link.dropped_attributes
        assert got_link.flags == (context.trace_flags & 0xFF) | 0x100 | (
            0x200 if context.is_remote else 0
        )
    assert span.dropped_links_count == record.dropped_links
    assert span.status.code == int(record.status.code)
    assert span.status.message == (record.status.description or "")


def full_record(**changes: Any) -> SpanRecord:
    """A record that uses every field, every attribute type included."""
    fields: dict[str, Any] = {
        "name": "GET /items/{id} ✓",
        "trace_id": 0x0102030405060708090A0B0C0D0E0F10,
        "span_id": 0x1112131415161718,
        "parent_span_id": 0x2122232425262728,
        "kind": SpanKind.CLIENT,
        "start_time_ns": 1_700_000_000_123_456_789,
        "end_time_ns": 1_700_000_000_987_654_321,
        "attributes": {
            "str": "value ✓",
            "empty": "",
            "true": True,
            "false": False,
            "zero": 0,
            "negative": -(2**63),
            "max": 2**63 - 1,
            "float": -1.25e-7,
            "strs": ("a", "", "ü"),
            "bools": (True, False),
            "ints": (1, -1, 2**40),
            "floats": (0.5, -0.0),
            "none": (),
        },
        "events": (
            Event("retry", 1_700_000_000_200_000_000, {"attempt": 2, "why": "503"}, 1),
            Event("bare", 1_700_000_000_300_000_000),
        ),
        "links": (
            Link(
                SpanContext(0xAA << 100, 0xBB, trace_flags=1, trace_state="k=v", is_remote=True),
                {"link.kind": "follows"},
                3,
            ),
            Link(SpanContext(7, 8, trace_flags=0)),
        ),
        "status": Status(StatusCode.ERROR, "it broke"),
        "dropped_attributes": 4,
        "dropped_events": 5,
        "dropped_links": 6,
        "resource": Resource({"service.name": "checkout", "service.instance.id": "i-1"}),
        "scope": InstrumentationScope("checkout.http", "2.1.0"),
        "trace_state": "vendor=abc,other=1",
        "parent_is_remote": True,
    }
    fields.update(changes)
    return SpanRecord(**fields)
