"""Helpers for the instrumentation tests: the SDK side of each comparison, span shapes, fakes.

- :class:`SDKCapture` is the OpenTelemetry SDK as the instrumentation projects test with it: a
  ``TracerProvider`` with a ``SimpleSpanProcessor`` into an ``InMemorySpanExporter``.
- :class:`Shape` is what a comparison looks at in one span, from a spanlane record or from an SDK
  span alike: name, kind, parent (by name), status, events, scope and semantic-convention
  attributes, with timing dropped and ephemeral ports normalised.
- :func:`fake_openai_app` is a plain ASGI app answering ``POST /v1/chat/completions`` as the
  OpenAI API does; :func:`echo_app` answers with the ``traceparent`` it received.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource as SDKResource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_servers import lifespan_passthrough, read_body, send_json
from spanlane import SpanRecord
from spanlane.asgi import Receive, Scope, Send

#: Stands for a port the kernel picked for one connection (a client's source port): it differs
#: between the SDK's run and the bridge's, so it is not compared.
EPHEMERAL = "<ephemeral port>"
#: The parent of a span whose parent is not in the same run (a remote parent).
REMOTE_PARENT = "<remote>"


@attrs.frozen
class Shape:
    """One span as a comparison sees it (no ids, no times).

    Attributes:
        name: the span name.
        kind: ``"SERVER"``, ``"CLIENT"``, ``"INTERNAL"``, ...
        parent: the parent's name; :data:`REMOTE_PARENT` for a parent outside the run; None for a
            root.
        status: the status code's name and the description.
        events: each event's name and sorted attribute keys.
        scope: the instrumentation scope's name, version and schema URL.
        attributes: the attributes, as sorted items, ephemeral ports replaced by
            :data:`EPHEMERAL`.
    """

    name: str
    kind: str
    parent: str | None
    status: tuple[str, str | None]
    events: tuple[tuple[str, tuple[str, ...]], ...]
    scope: tuple[str, str | None, str | None]
    attributes: tuple[tuple[str, object], ...]

    @property
    def attribute_dict(self) -> dict[str, object]:
        return dict(self.attributes)


def plain(value: object) -> object:
    """An attribute value with arrays as tuples and maps as dicts, however it is stored."""
    if isinstance(value, Mapping):
        return {key: plain(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(plain(inner) for inner in value)
    return value


def normalise(attributes: Mapping[str, object], stable_ports: Iterable[int]) -> dict[str, object]:
    """The attributes with timing-free values: a port not in ``stable_ports`` (the servers the
    test started, which serve both runs on the same socket) is a client's ephemeral port."""
    stable = set(stable_ports)
    normalised: dict[str, object] = {}
    for key, value in attributes.items():
        if key.endswith("port") and isinstance(value, int) and value not in stable:
            normalised[key] = EPHEMERAL
        else:
            normalised[key] = plain(value)
    return normalised


def _shape(
    name: str,
    kind: str,
    parent: str | None,
    status: tuple[str, str | None],
    events: Iterable[tuple[str, Mapping[str, object]]],
    scope: tuple[str, str | None, str | None],
    attributes: Mapping[str, object],
    stable_ports: Iterable[int],
) -> Shape:
    return Shape(
        name,
        kind,
        parent,
        status,
        tuple((event, tuple(sorted(keys))) for event, keys in events),
        scope,
        tuple(sorted(normalise(attributes, stable_ports).items())),
    )


def _parent_name(parent_id: int | None, names: Mapping[int, str]) -> str | None:
    if parent_id is None:
        return None
    return names.get(parent_id, REMOTE_PARENT)


def record_shapes(records: Sequence[SpanRecord], stable_ports: Iterable[int] = ()) -> list[Shape]:
    """The shapes of spanlane records, sorted."""
    names = {record.span_id: record.name for record in records}
    ports = tuple(stable_ports)
    return sorted(
        (
            _shape(
                record.name,
                record.kind.name,
                _parent_name(record.parent_span_id, names),
                (record.status.code.name, record.status.description),
                ((event.name, event.attributes) for event in record.events),
                (record.scope.name, record.scope.version or None, record.scope.schema_url or None),
                record.attributes,
                ports,
            )
            for record in records
        ),
        key=repr,
    )


def sdk_shapes(spans: Sequence[ReadableSpan], stable_ports: Iterable[int] = ()) -> list[Shape]:
    """The shapes of SDK spans, sorted."""
    names = {span.context.span_id: span.name for span in spans if span.context is not None}
    ports = tuple(stable_ports)
    shapes = []
    for span in spans:
        scope = span.instrumentation_scope
        parent = span.parent
        shapes.append(
            _shape(
                span.name,
                span.kind.name,
                _parent_name(None if parent is None else parent.span_id, names),
                (span.status.status_code.name, span.status.description),
                ((event.name, event.attributes or {}) for event in span.events),
                (
                    "" if scope is None else scope.name,
                    # The SDK keeps a missing version or schema URL as "", spanlane as None:
                    # OTLP writes both alike.
                    None if scope is None else scope.version or None,
                    None if scope is None else getattr(scope, "schema_url", None) or None,
                ),
                span.attributes or {},
                ports,
            )
        )
    return sorted(shapes, key=repr)


class SDKCapture:
    """The OpenTelemetry SDK with a ``SimpleSpanProcessor`` into an ``InMemorySpanExporter``.

    Args:
        service_name: ``service.name`` of the SDK provider's resource.
    """

    def __init__(self, service_name: str) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = SDKTracerProvider(
            resource=SDKResource.create({"service.name": service_name})
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def shapes(self, stable_ports: Iterable[int] = ()) -> list[Shape]:
        return sdk_shapes(self.spans, stable_ports)

    def shutdown(self) -> None:
        self.provider.shutdown()


def span_names(shapes: Iterable[Shape]) -> list[str]:
    """The names of the shapes, sorted (for a first, readable assertion)."""
    return sorted(shape.name for shape in shapes)


def by_name(shapes: Iterable[Shape]) -> dict[str, Shape]:
    return {shape.name: shape for shape in shapes}


# --- apps ---------------------------------------------------------------------------------------

ASGIApp = Callable[[Scope, Receive, Send], Any]


def headers_of(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


def echo_app() -> ASGIApp:
    """``GET /echo``: answers ``{"traceparent": <the header it got, or None>}``;
    ``GET /status/{code}``: answers with that status code."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_passthrough(receive, send)
            return
        await read_body(receive)
        path: str = scope["path"]
        if path.startswith("/status/"):
            await send_json(send, int(path.rsplit("/", 1)[1]), {})
            return
        await send_json(send, 200, {"traceparent": headers_of(scope).get("traceparent")})

    return app


#: The body the fake OpenAI server answers a chat completion with.
CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-spanlane-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_spanlane",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the fake.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
}


def fake_openai_app(seen: list[dict[str, Any]] | None = None) -> ASGIApp:
    """``POST /v1/chat/completions`` answers :data:`CHAT_COMPLETION`; anything else 404.

    Args:
        seen: where to append each request's headers (to check what the client propagated).
    """
    import json

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_passthrough(receive, send)
            return
        body = await read_body(receive)
        if seen is not None:
            seen.append(headers_of(scope))
        if scope["method"] == "POST" and scope["path"] == "/v1/chat/completions":
            request = json.loads(body)
            await send_json(send, 200, {**CHAT_COMPLETION, "model": request["model"] + "-2024"})
            return
        await send_json(send, 404, {"error": {"message": "not found", "type": "invalid"}})

    return app


def current_otel_ids() -> tuple[str, str]:
    """The trace and span id of OpenTelemetry's current span, as the logging instrumentation
    formats them."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
