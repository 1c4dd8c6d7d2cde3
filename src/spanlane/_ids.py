"""W3C trace context ids: generation, hex formatting and ``traceparent`` parsing.

Trace ids are 128 bits and span ids 64 bits, both never zero (W3C Trace Context, level 1).
"""

from __future__ import annotations

import os
import random
import re

from ._records import SpanContext

INVALID_TRACE_ID = 0
INVALID_SPAN_ID = 0

# One generator for the process, seeded from the OS. getrandbits on a Random instance costs a
# fraction of os.urandom or the secrets module; ids need to be unique, not secret.
id_random = random.Random(os.urandom(32))


def _reseed() -> None:
    id_random.seed(os.urandom(32))


# A forked child must not repeat its parent's ids.
if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_reseed)


def new_trace_id() -> int:
    """Return a random, non-zero 128-bit trace id."""
    while True:
        value = id_random.getrandbits(128)
        if value:
            return value


def new_span_id() -> int:
    """Return a random, non-zero 64-bit span id."""
    while True:
        value = id_random.getrandbits(64)
        if value:
            return value


def format_trace_id(trace_id: int) -> str:
    """Format a trace id as 32 lowercase hex digits."""
    return f"{trace_id:032x}"


def format_span_id(span_id: int) -> str:
    """Format a span id as 16 lowercase hex digits."""
    return f"{span_id:016x}"


_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?"
)


def format_traceparent(context: SpanContext) -> str:
    """Format a span context as a W3C ``traceparent`` header value (version 00)."""
    return (
        f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
        f"-{context.trace_flags & 0xFF:02x}"
    )


def parse_traceparent(value: str, tracestate: str = "") -> SpanContext | None:
    """Parse a W3C ``traceparent`` header value strictly.

    Returns None for anything malformed: wrong field lengths, upper-case hex, version ``ff``, an
    all-zero trace or span id, or extra fields on version 00. Later versions may carry extra
    fields, which are ignored as the specification asks.

    Args:
        value: the ``traceparent`` header value.
        tracestate: the ``tracestate`` header value to attach, passed through unchanged.

    Returns:
        A remote :class:`SpanContext`, or None.
    """
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version = match["version"]
    if version == "ff" or (version == "00" and match["rest"] is not None):
        return None
    trace_id = int(match["trace_id"], 16)
    span_id = int(match["span_id"], 16)
    if trace_id == INVALID_TRACE_ID or span_id == INVALID_SPAN_ID:
        return None
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        trace_flags=int(match["flags"], 16),
        trace_state=tracestate.strip(),
        is_remote=True,
    )
