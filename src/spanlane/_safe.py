"""Calling the caller's code without letting it hurt the caller.

Telemetry touches objects it does not own: attribute values (``repr``), exceptions (``str``, their
class's ``__module__``), exporters' errors. Any of them may raise, return nonsense or cost
seconds. The functions here turn each into a bounded string, and never raise anything but the
running backend's cancellation, which is never swallowed.
"""

from __future__ import annotations

import reprlib
import traceback

from ._runtime import is_cancellation

#: The longest ``repr`` kept for a value OTLP cannot carry, when no tighter limit is set.
REPR_LIMIT = 1024
#: The longest exception message or stack trace kept, in characters.
TEXT_LIMIT = 32 * 1024
#: Stack frames formatted at most for ``exception.stacktrace`` (innermost kept).
STACK_LIMIT = 128


class _BoundedRepr(reprlib.Repr):
    """reprlib, but an object whose ``__repr__`` raises makes the whole repr fail (reprlib would
    print ``<T instance at 0x...>``), so that :func:`safe_repr` says what happened."""

    def repr_instance(self, x: object, level: int) -> str:
        return repr(x)


def _bounded_repr() -> reprlib.Repr:
    # reprlib stops at a few items per container and a few levels deep, so a 2M-element list
    # costs what its first elements cost, not a full repr that is then cut (which took seconds).
    bounded = _BoundedRepr()
    bounded.maxlevel = 4
    bounded.maxtuple = bounded.maxlist = bounded.maxarray = 32
    bounded.maxdict = bounded.maxset = bounded.maxfrozenset = bounded.maxdeque = 32
    bounded.maxstring = REPR_LIMIT
    # Not cut in the middle by reprlib: safe_repr keeps the start of an object's own repr.
    bounded.maxother = 1 << 30
    bounded.maxlong = 256
    return bounded


_REPR = _bounded_repr()


def safe_repr(value: object, limit: int = REPR_LIMIT) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` characters that never raises.

    Containers are abbreviated before they are formatted; a ``__repr__`` that raises (anything
    but cancellation) gives ``<unrepresentable T>``.
    """
    try:
        text = _REPR.repr(value)
        if type(text) is not str:  # pragma: no cover - reprlib always returns a str
            text = str.__str__(text)
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        text = f"<unrepresentable {type_name(value)}>"
    return text[:limit]


def safe_str(value: object, limit: int = TEXT_LIMIT) -> str:
    """``str(value)``, at most ``limit`` characters, never raising."""
    try:
        text = value if type(value) is str else str(value)
        if type(text) is not str:
            text = str.__str__(text)
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        text = f"<unprintable {type_name(value)}>"
    return text[:limit]


def type_name(value: object) -> str:
    """The qualified name of ``type(value)``, whatever the class claims."""
    name = getattr(type(value), "__qualname__", None)
    return name if type(name) is str else type(value).__name__


def exception_type(exc: BaseException) -> str:
    """The ``exception.type`` / ``error.type`` of an exception: ``ValueError``, ``pkg.mod.Error``.

    As the OpenTelemetry SDK writes it (``module.qualname``), except that neither ``builtins``
    nor ``__main__`` is written as a prefix, and a class whose ``__module__`` is not a string
    (some C extensions and hostile classes) is named by its qualified name alone.
    """
    cls = type(exc)
    qualname = getattr(cls, "__qualname__", None)
    if type(qualname) is not str:
        qualname = cls.__name__
    try:
        module = cls.__module__
    except Exception:  # a property on a metaclass
        module = None
    if type(module) is not str or module in ("", "builtins", "__main__"):
        return qualname
    return f"{module}.{qualname}"


def format_stacktrace(exc: BaseException) -> str:
    """``exc``'s traceback as Python prints it, bounded, never raising."""
    try:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-STACK_LIMIT)
        text = "".join(lines)
    except BaseException as error:
        if is_cancellation(error):
            raise
        text = f"{exception_type(exc)}: <traceback unavailable>"
    return text[-TEXT_LIMIT:]
