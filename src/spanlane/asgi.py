"""ASGI integration: a SERVER span per HTTP request, and a lifespan that owns the tracer.

:class:`TracingMiddleware` is plain ASGI and works with any framework (Starlette, FastAPI,
Quart, Litestar, a bare ASGI callable) on any server and either backend. It records the stable
OpenTelemetry HTTP server attributes, continues a W3C ``traceparent``/``tracestate`` sent by
the client, and makes the request span the current span (and the request's tracer the current
tracer) for the application, so spans and traced httpx calls made while handling the request
become its children.

:func:`lifespan` opens the tracer when the server starts and drains it when the server stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from time import time_ns
from typing import Any

from ._asgi_lifespan import STATE_KEY as STATE_KEY
from ._asgi_lifespan import ASGIApp as ASGIApp
from ._asgi_lifespan import Message as Message
from ._asgi_lifespan import Receive as Receive
from ._asgi_lifespan import Scope as Scope
from ._asgi_lifespan import Send as Send
from ._asgi_lifespan import TracingLifespan as TracingLifespan
from ._asgi_lifespan import lifespan as lifespan
from ._context import get_tracer, reset_tracer, use_tracer
from ._records import SpanKind, StatusCode
from ._runtime import is_cancellation
from ._safe import exception_type
from ._semconv import (
    CLIENT_ADDRESS,
    CLIENT_PORT,
    DEFAULT_PORTS,
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    NETWORK_PROTOCOL_VERSION,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_PATH,
    URL_QUERY,
    URL_SCHEME,
    USER_AGENT_ORIGINAL,
    known_methods,
    method_attributes,
    redact_query,
    server_status_is_error,
)
from ._span import Span, note_exception
from ._tracer import Tracer
from .propagation import context_from_values

# Plain sorted order, as tests/test_all.py checks (ruff's isort style puts STATE_KEY first).
__all__ = [  # noqa: RUF022
    "ASGIApp",
    "Message",
    "Receive",
    "STATE_KEY",
    "Scope",
    "Send",
    "TracingLifespan",
    "TracingMiddleware",
    "lifespan",
]


class TracingMiddleware:
    """Wrap an ASGI app so that every HTTP request is recorded as a SERVER span.

    The span is named ``"{method} {http.route}"`` when the framework publishes the matched route
    in ``scope["route"]`` (Starlette and FastAPI do), else ``"{method}"``. It ends when the last
    chunk of the response body has been sent, so a streaming response is timed to its end; it is
    delivered when the app returns, so an exception raised after the response (by a background
    task, or re-raised by an error handler) is still recorded on it. A 5xx status or an
    exception marks it as an error. WebSocket and lifespan scopes pass through untouched.

    Args:
        app: the ASGI app to wrap.
        tracer: where spans go. A :class:`~spanlane.Tracer`, or a :class:`TracingLifespan`
            (its tracer while the app runs). By default: the tracer the lifespan published in
            ``scope["state"]``, else :func:`spanlane.current_tracer`. Without any tracer,
            requests pass through untraced.
    """

    def __init__(self, app: ASGIApp, *, tracer: Tracer | TracingLifespan | None = None) -> None:
        if tracer is not None and not isinstance(tracer, (Tracer, TracingLifespan)):
            raise TypeError(f"tracer must be a Tracer or a TracingLifespan, got {tracer!r}")
        self.app = app
        self.tracer = tracer
        self._known_methods = known_methods()

    def __repr__(self) -> str:
        return f"<TracingMiddleware app={self.app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        tracer = self._find_tracer(scope)
        if tracer is None:
            await self.app(scope, receive, send)
            return
        await _Request(self, tracer, scope).run(receive, send)

    def _find_tracer(self, scope: Scope) -> Tracer | None:
        explicit = self.tracer
        if isinstance(explicit, Tracer):
            return explicit
        if explicit is not None and explicit.tracer is not None:
            return explicit.tracer
        state = scope.get("state")
        if isinstance(state, Mapping):
            published = state.get(STATE_KEY)
            if isinstance(published, Tracer):
                return published
        return get_tracer()


class _Request:
    """The span of one HTTP request and what the response has told us so far."""

    __slots__ = (
        "end_ns",
        "method_name",
        "middleware",
        "scope",
        "span",
        "status",
        "tracer",
        "trailers",
    )

    def __init__(self, middleware: TracingMiddleware, tracer: Tracer, scope: Scope) -> None:
        self.middleware = middleware
        self.tracer = tracer
        self.scope = scope
        self.status: int | None = None
        self.trailers = False
        self.end_ns: int | None = None
        attributes, parent, self.method_name = _request_attributes(scope, middleware._known_methods)
        self.span: Span = tracer.start_span(
            self.method_name, kind=SpanKind.SERVER, parent=parent, attributes=attributes
        )

    async def run(self, receive: Receive, send: Send) -> None:
        span = self.span

        async def traced_send(message: Message) -> None:
            await send(message)
            self._observe(message)

        # The lifespan's tracer is not current in request tasks: make it current for the app.
        tracer_token = use_tracer(self.tracer)
        try:
            with span:
                try:
                    await self.middleware.app(self.scope, receive, traced_send)
                except BaseException as exc:
                    self._finish(exc)
                    raise
                self._finish(None)
        finally:
            reset_tracer(tracer_token)

    def _observe(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            status = message.get("status")
            if type(status) is int:
                self.status = status
                self.span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            self.trailers = bool(message.get("trailers", False))
        elif self.end_ns is not None:
            return
        elif self.trailers:
            if kind == "http.response.trailers" and not message.get("more_trailers", False):
                self.end_ns = time_ns()
        elif kind == "http.response.pathsend" or (
            kind in ("http.response.body", "http.response.zerocopysend")
            and not message.get("more_body", False)
        ):
            self.end_ns = time_ns()

    def _finish(self, exc: BaseException | None) -> None:
        span = self.span
        route = _route(self.scope)
        if route is not None:
            span.set_attribute(HTTP_ROUTE, route)
            # The route is only known once the framework has routed the request.
            span.update_name(f"{self.method_name} {route}")
        failed = exc is not None and not is_cancellation(exc)
        if exc is not None:
            if failed:
                span.set_attribute(ERROR_TYPE, exception_type(exc))
            note_exception(span, exc)  # an error event and status, or the cancelled mark
        status = self.status
        if not failed and status is not None and server_status_is_error(status):
            span.set_attribute(ERROR_TYPE, str(status))
            # No description: the status code says it all (semconv, "Span Status").
            span.set_status(StatusCode.ERROR)
        span.end(self.end_ns)


def _request_attributes(scope: Scope, known: frozenset[str]) -> tuple[dict[str, object], Any, str]:
    """The attributes known when the request arrives, the remote parent, and the method name."""
    attributes: dict[str, object] = {}
    method = scope.get("method")
    method_name = method_attributes(method if isinstance(method, str) else "", known, attributes)
    scheme = scope.get("scheme") or "http"
    attributes[URL_SCHEME] = scheme
    path = scope.get("path")
    if isinstance(path, str):
        attributes[URL_PATH] = path
    query = scope.get("query_string")
    if isinstance(query, bytes) and query:
        attributes[URL_QUERY] = redact_query(query.decode("latin-1"))
    version = scope.get("http_version")
    if isinstance(version, str):
        attributes[NETWORK_PROTOCOL_VERSION] = version

    traceparents: list[str] = []
    tracestates: list[str] = []
    host: str | None = None
    for name, value in _headers(scope.get("headers")):
        if name == b"traceparent":
            traceparents.append(value.decode("latin-1"))
        elif name == b"tracestate":
            tracestates.append(value.decode("latin-1"))
        elif name == b"user-agent":
            attributes[USER_AGENT_ORIGINAL] = value.decode("latin-1")
        elif name == b"host" and host is None:
            host = value.decode("latin-1")

    server = _split_host(host, scheme) if host else None
    if server is None:
        server = _address(scope.get("server"))
    if server is not None:
        attributes[SERVER_ADDRESS] = server[0]
        if server[1] is not None:
            attributes[SERVER_PORT] = server[1]
    client = _address(scope.get("client"))
    if client is not None:
        attributes[CLIENT_ADDRESS] = client[0]
        if client[1] is not None:
            attributes[CLIENT_PORT] = client[1]
    return attributes, context_from_values(traceparents, tracestates), method_name


def _headers(raw: object) -> Iterable[tuple[bytes, bytes]]:
    if not isinstance(raw, Iterable):
        return
    for pair in raw:
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        if isinstance(name, bytes) and isinstance(value, bytes):
            yield name.lower(), value


def _split_host(host: str, scheme: str) -> tuple[str, int | None] | None:
    """Split a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``)."""
    host = host.strip()
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port_text = host.rpartition(":") if ":" in host else (host, "", "")
    if not address:
        return None
    if port_text:
        if not port_text.isdigit():
            return None
        return address, int(port_text)
    return address, DEFAULT_PORTS.get(scheme)


def _address(value: object) -> tuple[str, int | None] | None:
    """An ASGI ``client``/``server`` value: ``[host, port]``, or ``[path, None]`` for a socket."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    host, port = value
    if not isinstance(host, str) or not host:
        return None
    return host, port if type(port) is int else None


def _route(scope: Scope) -> str | None:
    """The route template from ``scope["route"]``, with the application root in front.

    Starlette and FastAPI put the matched route object there, relative to ``root_path`` (to
    which each mount has added its prefix by the time the response starts); a string is taken
    as the full template. A route with sub-routes is a mount of an app without routes of its
    own: it says nothing about the path template, so no route is reported for it.
    """
    route = scope.get("route")
    if route is None:
        return None
    if isinstance(route, str):
        return route or None
    if hasattr(route, "routes"):
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return None
    root_path = scope.get("root_path", "")
    return f"{root_path}{template}" if isinstance(root_path, str) else template
