"""W3C trace context: inject and extract over every header container, strict parsing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spanlane
from spanlane import SpanContext
from spanlane.propagation import clean_tracestate, extract, inject
from spanlane.testing import capture_spans

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONTEXT = SpanContext(TRACE_ID, SPAN_ID, 1, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")

MALFORMED_TRACEPARENTS = [
    "",
    "garbage",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper-case hex
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # extra field on 00
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",  # wrong separator
    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # short version
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",  # short flags
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",  # not hex
]


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": TRACEPARENT, "tracestate": CONTEXT.trace_state},
        {"TraceParent": TRACEPARENT, "TRACESTATE": CONTEXT.trace_state},
        httpx.Headers({"traceparent": TRACEPARENT, "tracestate": CONTEXT.trace_state}),
        [(b"traceparent", TRACEPARENT.encode()), (b"tracestate", CONTEXT.trace_state.encode())],
        (("Traceparent", TRACEPARENT), ("Tracestate", CONTEXT.trace_state)),
    ],
    ids=["dict", "dict-mixed-case", "httpx", "asgi", "str-pairs"],
)
def test_extract_reads_every_header_container(headers: Any) -> None:
    assert extract(headers) == SpanContext(
        TRACE_ID, SPAN_ID, 1, CONTEXT.trace_state, is_remote=True
    )


@pytest.mark.parametrize("value", MALFORMED_TRACEPARENTS)
def test_malformed_traceparent_is_ignored(value: str) -> None:
    assert extract({"traceparent": value, "tracestate": "a=b"}) is None
    assert extract([(b"traceparent", value.encode())]) is None


def test_repeated_traceparent_is_ambiguous_and_ignored() -> None:
    headers = [(b"traceparent", TRACEPARENT.encode()), (b"traceparent", TRACEPARENT.encode())]
    assert extract(headers) is None


def test_future_version_with_extra_fields_is_accepted() -> None:
    context = extract({"traceparent": "cc" + TRACEPARENT[2:] + "-what-the-future-holds"})
    assert context is not None
    assert (context.trace_id, context.span_id) == (TRACE_ID, SPAN_ID)


def test_unsampled_flags_are_kept() -> None:
    context = extract({"traceparent": TRACEPARENT[:-2] + "00"})
    assert context is not None
    assert context.trace_flags == 0


def test_extract_never_raises_on_junk() -> None:
    junk: list[Any] = [
        None,
        42,
        "traceparent",
        [("traceparent",)],
        [(1, 2)],
        {"traceparent": 7},
        [(b"traceparent", b"\xff\xfe")],
    ]
    for headers in junk:
        assert extract(headers) is None


def test_multiple_tracestate_headers_are_joined() -> None:
    headers = [
        (b"traceparent", TRACEPARENT.encode()),
        (b"tracestate", b"congo=t61rcWkgMzE"),
        (b"tracestate", b" , rojo=00f067aa0ba902b7"),
    ]
    context = extract(headers)
    assert context is not None
    assert context.trace_state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


@pytest.mark.parametrize(
    "tracestate",
    [
        "noequals",
        "UPPER=1",
        "k=v,k=w",  # duplicate key
        "k=has,comma",
        "k=\x01",  # control character
        "k=",  # empty value
        "k=a=b",  # '=' in the value
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
        "1abc=v",  # simple keys start with a letter
        "t@SYS=v",  # upper-case system id
    ],
)
def test_malformed_tracestate_is_dropped_but_traceparent_kept(tracestate: str) -> None:
    context = extract({"traceparent": TRACEPARENT, "tracestate": tracestate})
    assert context is not None
    assert context.trace_id == TRACE_ID
    assert context.trace_state == ""


def test_multi_tenant_tracestate_keys_are_valid() -> None:
    assert clean_tracestate(["fw529a3039@dt=FfZnFAB, t61rc@rojo=1 ", "k=a b"]) == (
        "fw529a3039@dt=FfZnFAB,t61rc@rojo=1,k=a b"
    )


def test_inject_writes_traceparent_and_tracestate_into_a_dict() -> None:
    headers = {"Traceparent": "stale", "TRACESTATE": "stale=1", "accept": "*/*"}
    inject(headers, CONTEXT)
    assert headers == {
        "accept": "*/*",
        "traceparent": TRACEPARENT,
        "tracestate": CONTEXT.trace_state,
    }


def test_inject_into_httpx_headers_replaces_existing_values() -> None:
    headers = httpx.Headers([("traceparent", "stale"), ("tracestate", "stale=1")])
    inject(headers, SpanContext(TRACE_ID, SPAN_ID))
    assert headers.get_list("traceparent") == [TRACEPARENT]
    assert "tracestate" not in headers


def test_inject_into_asgi_header_list_uses_bytes() -> None:
    headers: list[tuple[bytes, bytes]] = [(b"host", b"example.com"), (b"traceparent", b"x")]
    inject(headers, CONTEXT)
    assert headers == [
        (b"host", b"example.com"),
        (b"traceparent", TRACEPARENT.encode()),
        (b"tracestate", CONTEXT.trace_state.encode()),
    ]


def test_inject_into_str_pair_list_keeps_str() -> None:
    headers: list[tuple[str, str]] = [("host", "example.com")]
    inject(headers, SpanContext(TRACE_ID, SPAN_ID))
    assert headers == [("host", "example.com"), ("traceparent", TRACEPARENT)]


def test_inject_rejects_read_only_containers() -> None:
    with pytest.raises(TypeError, match="mutable"):
        inject((("host", "example.com"),), CONTEXT)


def test_inject_without_a_current_span_writes_nothing() -> None:
    headers: dict[str, str] = {}
    inject(headers)
    assert headers == {}


@pytest.mark.anyio
async def test_inject_defaults_to_the_current_span() -> None:
    async with capture_spans():
        with spanlane.span("outgoing") as span:
            headers: dict[str, str] = {}
            inject(headers)
    assert extract(headers) == SpanContext(
        span.context.trace_id, span.context.span_id, 1, is_remote=True
    )


@pytest.mark.anyio
async def test_extracted_context_continues_the_trace() -> None:
    async with capture_spans() as captured:
        parent = extract({"traceparent": TRACEPARENT, "tracestate": CONTEXT.trace_state})
        with captured.tracer.span("handler", parent=parent) as span:
            headers: dict[str, str] = {}
            inject(headers, span)
    (record,) = captured.spans
    assert record.trace_id == TRACE_ID
    assert record.parent_span_id == SPAN_ID
    assert record.parent_is_remote
    assert record.trace_state == CONTEXT.trace_state
    # The trace state travels on to the next hop.
    assert headers["tracestate"] == CONTEXT.trace_state


@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    flags=st.integers(0, 255),
)
def test_inject_then_extract_round_trips(trace_id: int, span_id: int, flags: int) -> None:
    """Any valid context survives inject followed by extract, through every container."""
    context = SpanContext(trace_id, span_id, flags, "vendor=value")
    containers: list[Any] = [{}, httpx.Headers(), []]
    for headers in containers:
        inject(headers, context)
        assert extract(headers) == SpanContext(
            trace_id, span_id, flags, "vendor=value", is_remote=True
        )


@given(st.lists(st.tuples(st.binary(max_size=80), st.binary(max_size=200)), max_size=6))
def test_extract_never_raises(headers: list[tuple[bytes, bytes]]) -> None:
    """Arbitrary header lists give a context or None, never an exception."""
    result = extract(headers)
    assert result is None or isinstance(result, SpanContext)


@given(st.text(max_size=120))
def test_extract_never_raises_on_any_traceparent_text(value: str) -> None:
    """Arbitrary traceparent text gives a valid remote context or None."""
    result = extract({"traceparent": value})
    assert result is None or (result.trace_id and result.span_id and result.is_remote)
