"""W3C Trace Context propagation: ``traceparent`` and ``tracestate`` headers.

:func:`inject` writes a span context into outgoing headers; :func:`extract` reads the remote
parent from incoming ones. Both accept the header containers met in practice: plain dicts,
``httpx.Headers`` (and other mappings with ``multi_items()``), and ASGI header lists of
``(bytes, bytes)`` pairs.

Parsing is strict and never raises. A malformed, repeated or all-zero ``traceparent`` means "no
parent"; a malformed ``tracestate`` is dropped while a valid ``traceparent`` is still used (W3C
Trace Context level 1, sections 3.2 and 3.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence
from typing import Any

import attrs

from ._ids import format_traceparent, parse_traceparent
from ._records import SpanContext
from ._span import Span, current_span

__all__ = [
    "MAX_TRACESTATE_MEMBERS",
    "TRACEPARENT",
    "TRACESTATE",
    "clean_tracestate",
    "context_from_values",
    "extract",
    "inject",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_NAMES = (TRACEPARENT, TRACESTATE)

#: At most this many list members; a longer ``tracestate`` is discarded whole.
MAX_TRACESTATE_MEMBERS = 32

_KEY_CHARS = r"[a-z0-9_\-*/]"
_TRACESTATE_MEMBER = re.compile(
    rf"(?:[a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


def inject(headers: Any, context: SpanContext | Span | None = None) -> None:
    """Write ``traceparent`` (and ``tracestate`` when there is one) into ``headers``, in place.

    Existing ``traceparent``/``tracestate`` entries, in any letter case, are replaced. Nothing is
    written when there is no valid context (no current span). A span the sampler did not sample
    has one: it is written with the "sampled" flag cleared (``...-00``).

    Args:
        headers: a mutable mapping of ``str`` to ``str`` (a dict, ``httpx.Headers``) or a mutable
            list of ``(name, value)`` pairs (ASGI style: ``bytes`` unless the list already holds
            ``str`` names).
        context: the context to propagate; the current span's by default.

    Raises:
        TypeError: ``headers`` is neither a mutable mapping nor a mutable sequence.
    """
    if context is None:
        context = current_span().context
    elif isinstance(context, Span):
        context = context.context
    if context.trace_id == 0 or context.span_id == 0:
        return
    traceparent = format_traceparent(context)
    tracestate = context.trace_state
    if isinstance(headers, MutableMapping):
        stale = [key for key in headers if isinstance(key, str) and key.lower() in _NAMES]
        for key in stale:
            del headers[key]
        headers[TRACEPARENT] = traceparent
        if tracestate:
            headers[TRACESTATE] = tracestate
    elif isinstance(headers, MutableSequence):
        as_bytes = not any(isinstance(pair[0], str) for pair in headers)
        headers[:] = [pair for pair in headers if _name(pair[0]) not in _NAMES]
        new = [(TRACEPARENT, traceparent)]
        if tracestate:
            new.append((TRACESTATE, tracestate))
        for name, value in new:
            if as_bytes:
                headers.append((name.encode("ascii"), value.encode("latin-1")))
            else:
                headers.append((name, value))
    else:
        raise TypeError(
            f"headers must be a mutable mapping or a list of pairs, got {type(headers).__name__}"
        )


def extract(headers: Any) -> SpanContext | None:
    """Read a remote parent from ``traceparent`` and ``tracestate`` headers.

    Args:
        headers: a mapping (a dict with any letter case, ``httpx.Headers``, Starlette
            ``Headers``) or an iterable of ``(name, value)`` pairs of ``bytes`` or ``str``.

    Returns:
        A remote :class:`~spanlane.SpanContext` (``is_remote=True``) to pass as ``parent=``, or
        None when there is no valid ``traceparent``. Never raises.
    """
    try:
        traceparents: list[str] = []
        tracestates: list[str] = []
        for name, value in _items(headers):
            if name == TRACEPARENT:
                traceparents.append(value)
            elif name == TRACESTATE:
                tracestates.append(value)
        return context_from_values(traceparents, tracestates)
    except Exception:
        return None


def context_from_values(traceparents: list[str], tracestates: list[str]) -> SpanContext | None:
    """Build the remote context from every ``traceparent`` and ``tracestate`` value received.

    More than one ``traceparent`` is ambiguous and ignored; several ``tracestate`` headers are
    joined, as HTTP allows for list-valued fields.
    """
    if len(traceparents) != 1:
        return None
    context = parse_traceparent(traceparents[0])
    if context is None:
        return None
    tracestate = clean_tracestate(tracestates)
    if tracestate:
        context = attrs.evolve(context, trace_state=tracestate)
    return context


def clean_tracestate(values: Iterable[str]) -> str:
    """Validate and normalise ``tracestate`` values; return ``""`` if any member is malformed.

    Empty members and optional whitespace are removed. More than 32 members, a duplicate key, or
    any member that is not ``key=value`` in the W3C grammar discards the whole header.
    """
    members: list[str] = []
    keys: set[str] = set()
    for value in values:
        for raw in value.split(","):
            member = raw.strip(" \t")
            if not member:
                continue
            if _TRACESTATE_MEMBER.fullmatch(member) is None:
                return ""
            key = member.partition("=")[0]
            if key in keys:
                return ""
            keys.add(key)
            members.append(member)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return ""
    return ",".join(members)


def _name(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("latin-1").lower()
    if isinstance(raw, str):
        return raw.lower()
    return ""


def _items(headers: Any) -> Iterable[tuple[str, str]]:
    """Yield ``(lower-case name, str value)`` for every header, repeated names included."""
    pairs: Iterable[Any]
    if isinstance(headers, Mapping):
        multi_items = getattr(headers, "multi_items", None)
        pairs = multi_items() if callable(multi_items) else headers.items()
    else:
        pairs = headers
    for name, value in pairs:
        lowered = _name(name)
        if lowered not in _NAMES:
            continue
        if isinstance(value, bytes):
            yield lowered, value.decode("latin-1")
        elif isinstance(value, str):
            yield lowered, value
