"""TracerProvider and Tracer: the OpenTelemetry tracing API over spanlane tracers.

A provider sends spans to the spanlane tracer it is bound to while that tracer is open, else
to the tracer current in the context, else to the most recently opened one still open; with no
tracer open, OpenTelemetry spans are non-recording spans that still carry their parent's context.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

import opentelemetry.context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types

from .._attributes import coerce_attributes
from .._context import get_span, is_suppressed, latest_tracer, reset_span, use_span
from .._otel_context import RuntimeContext
from .._records import InstrumentationScope, Resource, SpanContext
from .._records import SpanKind as NativeKind
from .._resource import build_resource
from .._span import INVALID_SPAN as NATIVE_INVALID
from .._span import Span as NativeSpan
from .._tracer import Tracer as NativeTracer
from ._convert import from_otel_kind
from ._span import Span, links_of, native_span_of, note_exit, view_of

__all__ = ["Tracer", "TracerProvider", "install", "uninstall"]

#: Passed as ``parent=`` to start a new trace whatever span is current.
_NO_PARENT = SpanContext(0, 0, 0)
_INTERNAL = NativeKind.INTERNAL

F = TypeVar("F", bound=Callable[..., Any])


def _ours() -> bool:
    """True when the OpenTelemetry API's runtime context is spanlane's."""
    return type(otel_context._RUNTIME_CONTEXT) is RuntimeContext


class TracerProvider(trace.TracerProvider):
    """An OpenTelemetry ``TracerProvider`` whose tracers record into spanlane.

    Args:
        tracer: the spanlane tracer to send spans to while it is open; by default (and once it
            has closed) the one current in the context, else the most recently opened one.
    """

    def __init__(self, tracer: NativeTracer | None = None) -> None:
        self._bound = tracer
        self._tracers: dict[tuple[Any, ...], Tracer] = {}
        #: False after :func:`uninstall`: spans do not record (the API keeps this provider).
        self.enabled = True

    def __repr__(self) -> str:
        return f"<spanlane.otel.TracerProvider bound={self._bound!r}>"

    def bind(self, tracer: NativeTracer | None) -> None:
        """Send spans to ``tracer`` (None: whichever is open, as described above)."""
        self._bound = tracer

    @property
    def tracer(self) -> NativeTracer | None:
        """The spanlane tracer spans go to now, or None when none is open."""
        bound = self._bound
        if bound is not None and bound.is_open:
            return bound
        return latest_tracer()

    @property
    def resource(self) -> Resource:
        """The resource of the tracer spans go to now (as instrumentations read it).

        With no tracer open, the resource one would have from the environment alone
        (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``): the logging instrumentation reads
        it once, at the first log record, which may come before any tracer is open.
        """
        tracer = self.tracer
        return build_resource() if tracer is None else tracer.resource

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> Tracer:
        """An OpenTelemetry tracer whose spans carry this instrumentation scope."""
        given: object = instrumenting_module_name
        name = given if isinstance(given, str) else ""
        given = instrumenting_library_version
        version = given if isinstance(given, str) else None if given is None else str(given)
        given = schema_url
        schema_url = given if isinstance(given, str) else None
        kept, _ = coerce_attributes(attributes, 128, None)
        key = (name, version, schema_url, tuple(sorted(kept.items(), key=repr)))
        found = self._tracers.get(key)
        if found is None:
            scope = InstrumentationScope(
                name, version, schema_url, MappingProxyType(kept) if kept else MappingProxyType({})
            )
            found = self._tracers[key] = Tracer(self, scope)
        return found


class Tracer(trace.Tracer):
    """An OpenTelemetry ``Tracer`` that starts spanlane spans, with its instrumentation scope."""

    def __init__(self, provider: TracerProvider, scope: InstrumentationScope) -> None:
        self._provider = provider
        self.scope = scope

    def __repr__(self) -> str:
        return f"<spanlane.otel.Tracer {self.scope.name!r}>"

    @property
    def resource(self) -> Resource:
        """The resource of the spanlane tracer its spans go to now (as SDK tracers have one)."""
        return self._provider.resource

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """Start a span; its parent is the span in ``context`` (the current span by default)."""
        provider = self._provider
        bound = provider._bound
        native = bound if bound is not None and bound.is_open else latest_tracer()
        if not provider.enabled:
            native = None
        if context is None:
            if type(otel_context._RUNTIME_CONTEXT) is RuntimeContext:
                parent: Any = get_span()
                if parent is NATIVE_INVALID:
                    # Telemetry's own code (see spanlane._context.suppress): the native tracer
                    # returns a non-recording span for it when given no parent.
                    parent = None
            else:
                parent = native_span_of(trace.get_current_span())
        else:
            parent = native_span_of(context.get(_SPAN_KEY)) or _NO_PARENT
            if is_suppressed():  # with no parent given, the native tracer checks this itself
                native = None
        if native is None:
            # No tracer open (or telemetry's own code): a non-recording span that still
            # carries its parent's context, as OpenTelemetry's no-op tracer does.
            if parent is None or parent is _NO_PARENT:
                return trace.INVALID_SPAN
            return trace.NonRecordingSpan(view_of(parent).get_span_context())
        inner = native.span(
            name if type(name) is str else str(name),
            attributes=attributes,
            kind=_INTERNAL if kind is trace.SpanKind.INTERNAL else from_otel_kind(kind),
            links=links_of(links) if links else (),  # type: ignore[arg-type]
            parent=parent,
            start_time_ns=start_time,
            scope=self.scope,
        )
        if type(inner) is NativeSpan:
            # A fresh recording span: its view is made here (view_of would look it up first).
            return Span(inner, record_exception, set_status_on_exception)
        view = view_of(inner)
        if type(view) is Span:
            view.record_exception_on_exit = record_exception
            view.set_status_on_exit = set_status_on_exception
        return view

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _CurrentSpan:
        """Start a span and make it current for a ``with`` block, or for each call of a
        decorated function (sync or async)."""
        return _CurrentSpan(
            self,
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )


class _CurrentSpan:
    """``start_as_current_span``: a context manager, and a decorator for sync and async
    functions (a fresh span per call)."""

    # The arguments are slots rather than a dict of options: this object is made for every
    # span, and unpacking **options cost about 5% of the bridge's span.
    __slots__ = (
        "_attributes",
        "_context",
        "_end_on_exit",
        "_kind",
        "_links",
        "_name",
        "_native",
        "_record_exception",
        "_set_status",
        "_span",
        "_start_time",
        "_token",
        "_tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        context: Context | None,
        kind: trace.SpanKind,
        attributes: types.Attributes,
        links: Sequence[trace.Link] | None,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
        end_on_exit: bool,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._kind = kind
        self._attributes = attributes
        self._links = links
        self._start_time = start_time
        self._record_exception = record_exception
        self._set_status = set_status_on_exception
        self._end_on_exit = end_on_exit
        self._span: trace.Span | None = None
        self._native = False
        self._token: Any = None

    def _again(self) -> _CurrentSpan:
        return _CurrentSpan(
            self._tracer,
            self._name,
            self._context,
            self._kind,
            self._attributes,
            self._links,
            self._start_time,
            self._record_exception,
            self._set_status,
            self._end_on_exit,
        )

    def __enter__(self) -> trace.Span:
        span = self._span = self._tracer.start_span(
            self._name,
            self._context,
            self._kind,
            self._attributes,
            self._links,
            self._start_time,
            self._record_exception,
            self._set_status,
        )
        if type(span) is Span and type(otel_context._RUNTIME_CONTEXT) is RuntimeContext:
            # The fast way to make it current: the runtime context would do the same.
            self._native = True
            self._token = use_span(span.native)
        else:
            self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if self._native:
            reset_span(self._token)
        else:
            otel_context.detach(self._token)
        if exc is not None and type(span) is Span:
            note_exit(span, exc, self._record_exception, self._set_status)
        if self._end_on_exit and span is not None:
            span.end()

    def __call__(self, func: F) -> F:
        template = self
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with template._again():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with template._again():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


_PROVIDER: TracerProvider | None = None
# The runtime context install() replaced, for uninstall() to put back.
_REPLACED: Any = None


def install(tracer: NativeTracer | None = None) -> TracerProvider:
    """Make OpenTelemetry-instrumented code trace into spanlane; returns the global provider.

    Sets the OpenTelemetry API's global tracer provider (which the API allows once per process:
    the first call does it, later calls rebind the same provider) and its runtime context (see
    :class:`RuntimeContext`). Spans then go to ``tracer`` while it is open, else to the spanlane
    tracer current in the context, else to the most recently opened one (so each new
    ``open_tracer`` is picked up without calling this again); with none open they are
    non-recording.

    Args:
        tracer: the spanlane tracer to bind to, or None.

    Returns:
        The provider, also what ``opentelemetry.trace.get_tracer_provider()`` returns.
    """
    global _PROVIDER, _REPLACED
    if _PROVIDER is None:
        _PROVIDER = TracerProvider()
        trace.set_tracer_provider(_PROVIDER)
    if trace.get_tracer_provider() is not _PROVIDER:
        import logging

        logging.getLogger("spanlane").warning(
            "spanlane.otel.install(): another global TracerProvider was set first (%r); "
            "OpenTelemetry allows one per process, so instrumentations keep using it",
            trace.get_tracer_provider(),
        )
    if not _ours():
        # The runtime context is switched at run time (see RuntimeContext): what was attached
        # before this call is not visible through the new one.
        _REPLACED = otel_context._RUNTIME_CONTEXT
        otel_context._RUNTIME_CONTEXT = RuntimeContext()
    _PROVIDER.bind(tracer)
    _PROVIDER.enabled = True
    return _PROVIDER


def uninstall() -> None:
    """Undo :func:`install` as far as the OpenTelemetry API allows.

    The global provider stays (the API sets it once per process) but starts only
    non-recording spans again, and the runtime context that ``install()`` replaced is put back.
    Useful in tests; ``install()`` turns it all on again.
    """
    global _REPLACED
    if _PROVIDER is not None:
        _PROVIDER.enabled = False
        _PROVIDER.bind(None)
    if _REPLACED is not None and _ours():
        otel_context._RUNTIME_CONTEXT = _REPLACED
        _REPLACED = None
