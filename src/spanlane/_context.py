"""Context variables: the current span and the current tracer.

Both backends copy the context into every task they spawn, so a task started inside a span sees
that span as its parent, under asyncio and trio alike.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._span import Span
    from ._tracer import Tracer

current_span_var: ContextVar[Span | None] = ContextVar("spanlane.current_span", default=None)
current_tracer_var: ContextVar[Tracer | None] = ContextVar("spanlane.current_tracer", default=None)


def current_tracer() -> Tracer | None:
    """Return the tracer of the innermost open ``open_tracer()`` block, or None."""
    return current_tracer_var.get()
