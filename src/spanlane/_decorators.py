"""``@traced``: run every call of a function inside a span of the current tracer."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar, cast, overload

from ._context import get_tracer
from ._records import SpanKind

P = ParamSpec("P")
R = TypeVar("R")


@overload
def traced(name: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def traced(
    name: str | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, object] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(
    name: str | Callable[..., Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, object] | None = None,
) -> Any:
    """Decorate a function (sync or async) so that each call runs inside a span.

    Usable bare (``@traced``) or with arguments (``@traced("load user", kind=...)``). The span
    is the current span for the call's body, so spans started inside are its children; an
    exception leaving the function is recorded and marks the span as an error, then propagates
    unchanged; cancellation is not an error (the span gets ``spanlane.cancelled``).

    When no tracer is current the function is called directly: the cost is one context-variable
    lookup. A sync function run with ``anyio.to_thread.run_sync`` is traced too: the worker
    thread sees the caller's tracer and span.

    Args:
        name: the span name; the function's ``__qualname__`` by default.
        kind: the span kind.
        attributes: attributes set on every span (copied once, at decoration).

    Raises:
        TypeError: the function is a generator or async generator function, whose body runs
            across many calls; open a span inside it instead.
    """
    if callable(name):
        return _decorate(name, None, kind, attributes)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"traced() name must be a str, got {type(name).__name__}")

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        return _decorate(func, name, kind, attributes)

    return decorator


def _decorate(
    func: Callable[P, R],
    name: str | None,
    kind: SpanKind,
    attributes: Mapping[str, object] | None,
) -> Callable[P, R]:
    if not callable(func):
        raise TypeError(f"traced() needs a function, got {func!r}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"traced() does not support generator functions ({func!r}); open a span inside it"
        )
    span_name = name if name is not None else _qualname(func)
    kind = SpanKind(kind)
    frozen = MappingProxyType(dict(attributes)) if attributes else None

    if inspect.iscoroutinefunction(func):
        async_func = cast(Callable[P, Awaitable[Any]], func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            tracer = get_tracer()
            if tracer is None:
                return await async_func(*args, **kwargs)
            async with tracer.start_span(span_name, kind=kind, attributes=frozen):
                return await async_func(*args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tracer = get_tracer()
        if tracer is None:
            return func(*args, **kwargs)
        with tracer.start_span(span_name, kind=kind, attributes=frozen):
            return func(*args, **kwargs)

    return wrapper


def _qualname(func: Callable[..., Any]) -> str:
    qualname = getattr(func, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    inner = getattr(func, "func", None)  # functools.partial
    if inner is not None:
        return _qualname(inner)
    return type(func).__qualname__
