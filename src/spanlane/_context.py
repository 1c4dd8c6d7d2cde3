"""The context layer: which span and which tracer are current.

Every module asks these functions, never a ``ContextVar`` of its own, so that there is one place
where "current" is defined (the OpenTelemetry runtime context plugs in here). Both backends copy
the context into every task they spawn, so a task started inside a span sees that span as its
parent, under asyncio and trio alike.

Telemetry's own work (a drain worker, an exporter's ``export()`` and ``aclose()``) runs in a
*suppressed* context: spans started there are non-recording, so an exporter that traces its own
HTTP calls, or creates spans while exporting, cannot feed its lane forever.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._span import Span
    from ._tracer import Tracer

_current_span: ContextVar[Span | None] = ContextVar("spanlane.current_span", default=None)
_current_tracer: ContextVar[Tracer | None] = ContextVar("spanlane.current_tracer", default=None)
_suppressed: ContextVar[bool] = ContextVar("spanlane.suppressed", default=False)
# What another tracing API keeps in the context besides the current span (the OpenTelemetry
# Context: baggage, instrumentation-suppression keys). Carried along, never looked into here.
_carried: ContextVar[object] = ContextVar("spanlane.carried", default=None)

#: The type of the value :func:`use_span` returns, to be given back to :func:`reset_span`.
SpanToken = Token["Span | None"]
#: The type of the value :func:`use_tracer` returns, to be given back to :func:`reset_tracer`.
TracerToken = Token["Tracer | None"]

# Bound methods, looked up once: the hot path calls them for every span.
get_span = _current_span.get
use_span = _current_span.set
get_tracer = _current_tracer.get
use_tracer = _current_tracer.set
is_suppressed = _suppressed.get
get_carried = _carried.get
use_carried = _carried.set


#: ``ContextVar.reset`` of the current span, for hot paths that catch its ValueError themselves
#: (see :func:`reset_span`).
reset_current = _current_span.reset


def reset_span(token: SpanToken) -> bool:
    """Undo :func:`use_span`; True if done, False for a token from another context.

    A span left in another context than it was entered in (a misuse spanlane survives) must not
    change that context's current span, and must not raise into the caller either. The span
    keeps the token then, so that leaving it in its own context still restores that context.
    """
    try:
        _current_span.reset(token)
    except ValueError:
        return False
    return True


def reset_carried(token: Token[object]) -> None:
    """Undo :func:`use_carried`; a token from another context is ignored."""
    try:
        _carried.reset(token)
    except ValueError:
        pass


def reset_tracer(token: TracerToken) -> None:
    """Undo :func:`use_tracer`; a token from another context is ignored."""
    try:
        _current_tracer.reset(token)
    except ValueError:
        pass


def suppress(marker: Span) -> None:
    """Mark the current context as telemetry's own: spans started in it do not record.

    Called once at the top of the tracer's service task, whose context the drain workers and
    every exporter call inherit (including the threads ``anyio.to_thread`` starts from them).
    ``marker`` (the shared invalid span) becomes the current span there: a tracer tells a
    suppressed context by it, with the one lookup of the current span it makes anyway.
    """
    _suppressed.set(True)
    _current_span.set(marker)


def current_tracer() -> Tracer | None:
    """Return the tracer of the innermost open ``open_tracer()`` block, or None."""
    return _current_tracer.get()


# The tracers open in this process, oldest first, held weakly: what a process-wide API (the
# OpenTelemetry bridge's global provider) uses when no tracer is current in the context.
_open_tracers: list[weakref.ref[Tracer]] = []
# The last of them, or None: read on every span the bridge starts, so kept ready.
_latest: weakref.ref[Tracer] | None = None


def tracer_opened(tracer: Tracer) -> None:
    """Note that ``tracer`` is open (called by the tracer itself)."""
    global _latest
    entry = weakref.ref(tracer)
    _open_tracers.append(entry)
    _latest = entry


def tracer_closed(tracer: Tracer) -> None:
    """Note that ``tracer`` is closing (called by the tracer itself)."""
    global _latest
    _open_tracers[:] = [
        entry for entry in _open_tracers if entry() is not tracer and entry() is not None
    ]
    _latest = _open_tracers[-1] if _open_tracers else None


def latest_tracer() -> Tracer | None:
    """The tracer current in this context, else the most recently opened one still open."""
    tracer = _current_tracer.get()
    if tracer is not None:
        return tracer
    latest = _latest
    return None if latest is None else latest()
