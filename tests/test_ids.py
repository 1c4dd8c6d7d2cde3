"""W3C trace context ids: generation, hex formatting and strict ``traceparent`` parsing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spanlane import SpanContext
from spanlane import _ids as ids
from spanlane._ids import (
    format_span_id,
    format_trace_id,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


async def test_new_ids_are_in_range_and_unique() -> None:
    trace_ids = {new_trace_id() for _ in range(1000)}
    span_ids = {new_span_id() for _ in range(1000)}
    assert len(trace_ids) == len(span_ids) == 1000
    assert all(0 < value < 2**128 for value in trace_ids)
    assert all(0 < value < 2**64 for value in span_ids)


async def test_new_ids_are_never_zero_even_when_the_generator_draws_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws: Iterator[int] = iter([0, 0, 7, 0, 9])
    monkeypatch.setattr(ids.id_random, "getrandbits", lambda bits: next(draws))
    assert new_trace_id() == 7
    assert new_span_id() == 9


async def test_reseeding_changes_the_sequence() -> None:
    state = ids.id_random.getstate()
    try:
        first = ids.id_random.getrandbits(64)
        ids.id_random.setstate(state)
        ids._reseed()
        assert ids.id_random.getrandbits(64) != first
    finally:
        ids.id_random.setstate(state)


async def test_ids_format_as_fixed_width_lowercase_hex() -> None:
    assert format_trace_id(0xABC) == "00000000000000000000000000000abc"
    assert format_span_id(0xABC) == "0000000000000abc"
    assert format_trace_id(2**128 - 1) == "f" * 32
    assert format_span_id(2**64 - 1) == "f" * 16


async def test_traceparent_round_trips() -> None:
    context = parse_traceparent(f"00-{TRACE}-{SPAN}-01", "vendor=x")
    assert context == SpanContext(
        trace_id=int(TRACE, 16),
        span_id=int(SPAN, 16),
        trace_flags=1,
        trace_state="vendor=x",
        is_remote=True,
    )
    assert format_traceparent(context) == f"00-{TRACE}-{SPAN}-01"


async def test_traceparent_keeps_unsampled_flags_and_strips_whitespace() -> None:
    context = parse_traceparent(f"  00-{TRACE}-{SPAN}-00 ", " k=v ")
    assert context is not None
    assert context.trace_flags == 0
    assert context.trace_state == "k=v"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", id="upper-case"),
        pytest.param(f"ff-{TRACE}-{SPAN}-01", id="version-ff"),
        pytest.param(f"00-{'0' * 32}-{SPAN}-01", id="zero-trace-id"),
        pytest.param(f"00-{TRACE}-{'0' * 16}-01", id="zero-span-id"),
        pytest.param(f"00-{TRACE}-{SPAN}-01-extra", id="extra-field-on-version-00"),
        pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", id="short-trace-id"),
        pytest.param(f"00-{TRACE}-{SPAN}0-01", id="long-span-id"),
        pytest.param(f"00-{TRACE}-{SPAN}-1", id="short-flags"),
        pytest.param(f"00_{TRACE}_{SPAN}_01", id="wrong-separator"),
        pytest.param(f"0g-{TRACE}-{SPAN}-01", id="non-hex-version"),
    ],
)
async def test_malformed_traceparent_is_rejected(value: str) -> None:
    assert parse_traceparent(value) is None


async def test_later_version_may_carry_extra_fields() -> None:
    context = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds")
    assert context is not None
    assert context.trace_id == int(TRACE, 16)
