"""httpx integration: a CLIENT span per request, and W3C trace context sent along with it.

Wrap the transport of an :class:`httpx.AsyncClient`::

    client = httpx.AsyncClient(transport=TracingTransport())

Every request sent through the client (each redirect hop is a request of its own) becomes a
CLIENT span, child of the current span, and carries a ``traceparent`` header naming that span,
so a traced server continues the trace. Works under asyncio and trio, like httpx itself.

The span ends when the response headers have arrived, as the HTTP semantic conventions ask: a
body the application never reads cannot leave the span open.
"""

from __future__ import annotations

from types import TracebackType

import httpx

from ._context import get_tracer
from ._records import SpanKind, StatusCode
from ._safe import exception_type
from ._semconv import (
    DEFAULT_PORTS,
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
    NETWORK_PROTOCOL_VERSION,
    REDACTED,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_FULL,
    client_status_is_error,
    known_methods,
    method_attributes,
    protocol_version,
    redact_query,
)
from ._tracer import Tracer
from .propagation import inject

__all__ = ["TracingTransport", "url_full"]


class TracingTransport(httpx.AsyncBaseTransport):
    """An async transport that traces each request and injects ``traceparent``.

    Status codes 4xx and 5xx and transport errors (``httpx.ConnectError``, timeouts, ...) mark
    the span as an error; ``error.type`` is the status code or the exception's class name.

    Args:
        inner: the transport that sends the requests; a new ``httpx.AsyncHTTPTransport()`` by
            default. Closing this transport closes it.
        tracer: where spans go; the current tracer by default. Without a tracer, requests are
            sent unchanged.
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, *, tracer: Tracer | None = None
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.tracer = tracer
        self._known_methods = known_methods()

    def __repr__(self) -> str:
        return f"<TracingTransport inner={self.inner!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the inner transport inside a CLIENT span."""
        tracer = self.tracer if self.tracer is not None else get_tracer()
        if tracer is None:
            return await self.inner.handle_async_request(request)
        attributes: dict[str, object] = {}
        name = method_attributes(request.method, self._known_methods, attributes)
        url = request.url
        attributes[SERVER_ADDRESS] = url.host
        port = url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme)
        if port is not None:
            attributes[SERVER_PORT] = port
        attributes[URL_FULL] = url_full(url)
        with tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
            inject(request.headers, span.context)
            try:
                response = await self.inner.handle_async_request(request)
            except Exception as exc:
                # The span records the exception itself as it exits; this is the semconv key.
                span.set_attribute(ERROR_TYPE, exception_type(exc))
                raise
            status = response.status_code
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            version = protocol_version(response.extensions.get("http_version"))
            if version is not None:
                span.set_attribute(NETWORK_PROTOCOL_VERSION, version)
            if client_status_is_error(status):
                span.set_attribute(ERROR_TYPE, str(status))
                span.set_status(StatusCode.ERROR)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()

    async def __aenter__(self) -> TracingTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc_value, traceback)


def url_full(url: httpx.URL) -> str:
    """The ``url.full`` value: credentials and well-known signatures replaced by ``REDACTED``."""
    if url.userinfo:
        url = url.copy_with(userinfo=f"{REDACTED}:{REDACTED}".encode("ascii"))
    text = str(url)
    query = url.query
    if query:
        decoded = query.decode("ascii", "replace")
        redacted = redact_query(decoded)
        if redacted != decoded:
            before, _, after = text.partition("?")
            fragment = after.partition("#")[2]
            text = f"{before}?{redacted}" + (f"#{fragment}" if fragment else "")
    return text
