"""spanlane.otel: the OpenTelemetry API over spanlane, on asyncio and trio.

``install()`` sets the process's global tracer provider (the OpenTelemetry API allows that once)
and its runtime context; every test here shares them, and opens its own spanlane tracer.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence

import anyio
import anyio.to_thread
import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

import spanlane
import spanlane.otel
import spanlane.propagation
from spanlane import SpanKind, SpanRecord, StatusCode
from spanlane.exporters import BaseExporter, MemoryExporter
from spanlane.testing import CapturedSpans, capture_spans

pytestmark = pytest.mark.anyio

PROVIDER = spanlane.otel.install()
# Off again until this module's tests run (the fixture below): collection imports every test
# module first, and the others must not see the bridge.
spanlane.otel.uninstall()
OTEL = trace.get_tracer("tests.otel", "1.0")


@pytest.fixture(autouse=True, scope="module")
def installed() -> Iterator[None]:
    """The bridge is on for this module only: other tests must not get spans from libraries
    that trace through the OpenTelemetry API (FastAPI does, by itself)."""
    spanlane.otel.install()
    yield
    spanlane.otel.uninstall()


REMOTE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def captured() -> AsyncIterator[CapturedSpans]:
    async with capture_spans() as captured:
        yield captured


def by_name(records: Sequence[SpanRecord]) -> dict[str, SpanRecord]:
    return {record.name: record for record in records}


async def test_install_sets_the_global_provider_and_the_runtime_context() -> None:
    assert trace.get_tracer_provider() is PROVIDER
    assert type(otel_context._RUNTIME_CONTEXT) is spanlane.otel.RuntimeContext
    assert spanlane.otel.install() is PROVIDER  # later calls rebind the same provider


async def test_nesting_works_in_both_directions(captured: CapturedSpans) -> None:
    tracer = captured.tracer
    with tracer.span("native root") as root:
        assert trace.get_current_span().get_span_context().span_id == root.context.span_id
        with OTEL.start_as_current_span("otel child") as child:
            assert spanlane.current_span() is child.native  # type: ignore[attr-defined]
            with (
                tracer.span("native grandchild"),
                OTEL.start_as_current_span("otel great-grandchild"),
            ):
                pass
    spans = by_name(await captured.flush())
    chain = ["native root", "otel child", "native grandchild", "otel great-grandchild"]
    for parent, child_name in itertools.pairwise(chain):
        assert spans[child_name].parent_span_id == spans[parent].span_id
        assert spans[child_name].trace_id == spans["native root"].trace_id


async def test_the_scope_of_an_otel_tracer_reaches_the_record(captured: CapturedSpans) -> None:
    otel = PROVIDER.get_tracer(
        "my.library", "2.0", "https://opentelemetry.io/schemas/1.11.0", {"team": "core"}
    )
    with otel.start_as_current_span("scoped"):
        pass
    (record,) = await captured.flush()
    assert record.scope.name == "my.library"
    assert record.scope.version == "2.0"
    assert record.scope.schema_url == "https://opentelemetry.io/schemas/1.11.0"
    assert dict(record.scope.attributes) == {"team": "core"}
    assert (
        PROVIDER.get_tracer(
            "my.library", "2.0", "https://opentelemetry.io/schemas/1.11.0", {"team": "core"}
        )
        is otel
    )


async def test_explicit_context_and_an_empty_context_as_root(captured: CapturedSpans) -> None:
    with OTEL.start_as_current_span("a") as a:
        with OTEL.start_as_current_span("root anyway", context=otel_context.Context()):
            pass
        other = OTEL.start_span("explicit child", context=trace.set_span_in_context(a))
        other.end()
    spans = by_name(await captured.flush())
    assert spans["root anyway"].parent_span_id is None
    assert spans["root anyway"].trace_id != spans["a"].trace_id
    assert spans["explicit child"].parent_span_id == spans["a"].span_id


async def test_use_span_and_end_on_exit(captured: CapturedSpans) -> None:
    span = OTEL.start_span("used")
    with trace.use_span(span):
        assert trace.get_current_span() is span
        with captured.tracer.span("inside"):
            pass
    assert span.is_recording()  # use_span does not end it by default
    with trace.use_span(span, end_on_exit=True):
        pass
    assert not span.is_recording()
    with OTEL.start_as_current_span("kept open", end_on_exit=False) as kept:
        pass
    assert kept.is_recording()
    kept.end()
    spans = by_name(await captured.flush())
    assert spans["inside"].parent_span_id == spans["used"].span_id
    assert set(spans) == {"used", "inside", "kept open"}


async def test_explicit_times_and_span_api(captured: CapturedSpans) -> None:
    span = OTEL.start_span(
        "timed",
        kind=trace.SpanKind.CLIENT,
        attributes={"a": 1, "bytes": b"\x01", "map": {"k": [1, "two", None]}},
        start_time=1_000,
    )
    span.set_attribute("b", "x")
    span.set_attributes({"c": 2.5})
    span.add_event("event", {"e": True}, timestamp=2_000)
    span.add_link(trace.SpanContext(5, 6, True), {"why": "batch"})
    span.update_name("renamed")
    span.set_status(trace.Status(trace.StatusCode.ERROR, "broken"))
    assert span.name == "renamed"  # type: ignore[attr-defined]
    assert span.kind is trace.SpanKind.CLIENT  # type: ignore[attr-defined]
    assert span.attributes["a"] == 1  # type: ignore[attr-defined]
    assert span.parent is None  # type: ignore[attr-defined]
    assert span.context == span.get_span_context()  # type: ignore[attr-defined]
    span.end(end_time=3_000)
    (record,) = await captured.flush()
    assert (record.start_time_ns, record.end_time_ns) == (1_000, 3_000)
    assert record.kind is SpanKind.CLIENT
    assert dict(record.attributes) == {
        "a": 1,
        "bytes": b"\x01",
        "map": {"k": (1, "two", None)},
        "b": "x",
        "c": 2.5,
    }
    (event,) = record.events
    assert (event.name, event.time_ns, dict(event.attributes)) == ("event", 2_000, {"e": True})
    (link,) = record.links
    assert (link.context.trace_id, link.context.span_id, link.context.is_remote) == (5, 6, True)
    assert record.status.code is StatusCode.ERROR
    assert record.status.description == "broken"
    assert PROVIDER.resource is captured.tracer.resource


async def test_exceptions_are_recorded_as_the_sdk_records_them(captured: CapturedSpans) -> None:
    with pytest.raises(ValueError, match="bad"), OTEL.start_as_current_span("raises"):
        raise ValueError("bad")
    with (
        pytest.raises(KeyError),
        OTEL.start_as_current_span("quiet", record_exception=False, set_status_on_exception=False),
    ):
        raise KeyError("k")
    span = OTEL.start_span("manual")
    span.record_exception(RuntimeError("r"), {"extra": 1}, timestamp=7, escaped=True)
    span.end()
    spans = by_name(await captured.flush())
    raised = spans["raises"]
    assert raised.status.code is StatusCode.ERROR
    assert raised.status.description == "ValueError: bad"
    (event,) = raised.events
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.escaped"] == "True"
    assert spans["quiet"].status.code is StatusCode.UNSET
    assert spans["quiet"].events == ()
    (manual,) = spans["manual"].events
    assert manual.time_ns == 7
    assert manual.attributes["extra"] == 1
    assert manual.attributes["exception.escaped"] == "True"


async def test_cancellation_is_marked_not_an_error(captured: CapturedSpans) -> None:
    with anyio.move_on_after(0):
        with OTEL.start_as_current_span("cancelled"):
            await anyio.sleep(1)
    (record,) = await captured.flush()
    assert record.status.code is StatusCode.UNSET
    assert record.attributes["spanlane.cancelled"] is True


async def test_the_decorator_works_on_sync_and_async_functions(captured: CapturedSpans) -> None:
    @OTEL.start_as_current_span("sync call")
    def sync_call() -> str:
        return trace.get_current_span().name  # type: ignore[attr-defined, no-any-return]

    @OTEL.start_as_current_span("async call")
    async def async_call() -> str:
        await anyio.lowlevel.checkpoint()
        return trace.get_current_span().name  # type: ignore[attr-defined, no-any-return]

    assert sync_call() == "sync call"
    assert await async_call() == "async call"
    assert await async_call() == "async call"
    records = await captured.flush()
    assert sorted(record.name for record in records) == ["async call", "async call", "sync call"]
    assert len({record.span_id for record in records}) == 3


async def test_context_crosses_task_groups_and_threads(captured: CapturedSpans) -> None:
    def in_thread() -> None:
        with OTEL.start_as_current_span("in thread"):
            pass

    async def in_task() -> None:
        with OTEL.start_as_current_span("in task"):
            await anyio.to_thread.run_sync(in_thread)

    with OTEL.start_as_current_span("outer"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(in_task)
    spans = by_name(await captured.flush())
    assert spans["in task"].parent_span_id == spans["outer"].span_id
    assert spans["in thread"].parent_span_id == spans["in task"].span_id


async def test_propagators_agree_with_spanlane_propagation(captured: CapturedSpans) -> None:
    carrier: dict[str, str] = {}
    with captured.tracer.span("client") as client:
        propagate.inject(carrier)
        mine: dict[str, str] = {}
        spanlane.propagation.inject(mine)
    assert carrier["traceparent"] == mine["traceparent"]
    assert carrier["traceparent"].split("-")[2] == f"{client.context.span_id:016x}"
    remote = propagate.extract({"traceparent": REMOTE})
    server = OTEL.start_as_current_span("server", context=remote, kind=trace.SpanKind.SERVER)
    with server, captured.tracer.span("handler"):
        pass
    spans = by_name(await captured.flush())
    assert spans["server"].trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert spans["server"].parent_span_id == 0xB7AD6B7169203331
    assert spans["server"].parent_is_remote
    assert spans["handler"].parent_span_id == spans["server"].span_id


async def test_baggage_and_suppression_keys_survive(captured: CapturedSpans) -> None:
    token = otel_context.attach(baggage.set_baggage("user", "u1"))
    try:
        with captured.tracer.span("native"):
            assert baggage.get_baggage("user") == "u1"
            with OTEL.start_as_current_span("otel"):
                assert baggage.get_baggage("user") == "u1"
    finally:
        otel_context.detach(token)
    assert baggage.get_baggage("user") is None
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        with captured.tracer.span("native"):
            assert otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY) is True
    finally:
        otel_context.detach(token)


async def test_get_current_returns_the_attached_context_object(captured: CapturedSpans) -> None:
    span = OTEL.start_span("s")
    context = trace.set_span_in_context(span, baggage.set_baggage("k", "v"))
    token = otel_context.attach(context)
    try:
        assert otel_context.get_current() is context
    finally:
        otel_context.detach(token)
    span.end()
    assert otel_context.get_current().get("k") is None


async def test_an_sdk_span_attached_in_the_context_is_a_parent(captured: CapturedSpans) -> None:
    sdk_tracer = SDKTracerProvider().get_tracer("sdk")
    with sdk_tracer.start_as_current_span("sdk span") as sdk_span:
        assert trace.get_current_span() is sdk_span
        with captured.tracer.span("native child"):
            assert trace.get_current_span() is not sdk_span
    (record,) = await captured.flush()
    assert record.parent_span_id == sdk_span.get_span_context().span_id


async def test_with_no_tracer_open_spans_are_non_recording_and_carry_the_parent() -> None:
    span = OTEL.start_span("nowhere")
    assert not span.is_recording()
    assert span is trace.INVALID_SPAN
    remote = propagate.extract({"traceparent": REMOTE})
    child = OTEL.start_span("child of remote", context=remote)
    assert not child.is_recording()
    assert child.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C


async def test_spans_go_to_the_bound_tracer_else_the_latest_open_one() -> None:
    first, second = MemoryExporter(name="first"), MemoryExporter(name="second")
    async with spanlane.open_tracer(first) as one:
        with OTEL.start_as_current_span("to first"):
            pass
        async with spanlane.open_tracer(second):
            with OTEL.start_as_current_span("to second"):
                pass
            PROVIDER.bind(one)
            try:
                with OTEL.start_as_current_span("bound to first"):
                    pass
            finally:
                PROVIDER.bind(None)
    assert [record.name for record in first.spans] == ["to first", "bound to first"]
    assert [record.name for record in second.spans] == ["to second"]


class TracesItsOwnCalls(BaseExporter):
    """An exporter using OpenTelemetry-instrumented code: its spans must not record."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, object]] = []
        self.records: list[SpanRecord] = []

    async def export(self, batch: Sequence[SpanRecord]) -> None:
        with OTEL.start_as_current_span("inside export") as span:
            self.seen.append(
                (span.is_recording(), otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))
            )
        self.records.extend(batch)


async def test_spans_inside_an_exporter_do_not_record_and_suppress_instrumentation() -> None:
    exporter = TracesItsOwnCalls()
    async with spanlane.open_tracer(exporter, max_batch_size=1) as tracer:
        with OTEL.start_as_current_span("app"):
            pass
        await tracer.flush()
    assert exporter.seen == [(False, True)]
    assert [record.name for record in exporter.records] == ["app"]


async def test_the_sdk_span_processor_sends_sdk_spans_to_the_lanes(captured: CapturedSpans) -> None:
    provider = SDKTracerProvider()
    provider.add_span_processor(spanlane.otel.SpanProcessor(captured.tracer))
    sdk = provider.get_tracer("sdk.lib", "3.1", schema_url="https://example.invalid/schema")
    with sdk.start_as_current_span(
        "sdk parent", attributes={"a": 1, "list": [1, 2]}, kind=trace.SpanKind.SERVER
    ) as parent:
        parent.add_event("e", {"x": "y"})
        with sdk.start_as_current_span("sdk child") as child:
            child.set_status(trace.Status(trace.StatusCode.ERROR, "nope"))

    def in_thread() -> None:
        with sdk.start_as_current_span("sdk in a thread"):
            pass

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    spans = by_name(await captured.flush())
    assert spans["sdk child"].parent_span_id == spans["sdk parent"].span_id
    assert spans["sdk parent"].kind is SpanKind.SERVER
    assert dict(spans["sdk parent"].attributes) == {"a": 1, "list": (1, 2)}
    assert spans["sdk parent"].events[0].name == "e"
    assert spans["sdk child"].status.description == "nope"
    assert spans["sdk parent"].scope.name == "sdk.lib"
    assert spans["sdk parent"].scope.schema_url == "https://example.invalid/schema"
    assert spans["sdk parent"].resource.attributes["telemetry.sdk.name"] == "opentelemetry"
    assert "sdk in a thread" in spans
    stats = captured.tracer.stats()
    assert stats.spans_started == stats.spans_ended == 3
    provider.shutdown()


def test_the_entry_point_selects_the_runtime_context() -> None:
    code = (
        "import opentelemetry.context as c, opentelemetry.trace as t;"
        "import spanlane.otel;"
        "print(type(c._RUNTIME_CONTEXT).__module__, type(c._RUNTIME_CONTEXT).__name__)"
    )
    env = {"OTEL_PYTHON_CONTEXT": "spanlane", "PATH": ""}
    output = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["spanlane._otel_context", "RuntimeContext"]


async def test_uninstall_stops_recording_and_install_turns_it_on_again(
    captured: CapturedSpans,
) -> None:
    spanlane.otel.uninstall()
    try:
        assert type(otel_context._RUNTIME_CONTEXT) is not spanlane.otel.RuntimeContext
        span = OTEL.start_span("off")
        assert not span.is_recording()
        span.end()
    finally:
        assert spanlane.otel.install() is PROVIDER
    with OTEL.start_as_current_span("on"):
        pass
    assert [record.name for record in await captured.flush()] == ["on"]


async def test_spans_tracers_and_the_provider_have_the_sdk_resource_attribute(
    captured: CapturedSpans,
) -> None:
    span = OTEL.start_span("x")
    assert span.resource is captured.tracer.resource  # type: ignore[attr-defined]
    assert OTEL.resource is captured.tracer.resource  # type: ignore[attr-defined]
    span.end()
    await captured.flush()


async def test_the_provider_resource_with_no_tracer_open_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-environment")
    assert PROVIDER.resource.service_name == "from-the-environment"


async def test_an_unsampled_remote_parent_is_honoured(captured: CapturedSpans) -> None:
    remote = propagate.extract({"traceparent": REMOTE[:-2] + "00"})
    with OTEL.start_as_current_span("server", context=remote) as server:
        assert not server.is_recording()
        assert not server.get_span_context().trace_flags.sampled
        with captured.tracer.span("native child") as child:
            assert not child.is_recording
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    assert carrier["traceparent"].endswith("-00")
    assert carrier["traceparent"].split("-")[1] == REMOTE.split("-")[1]
    assert await captured.flush() == []
    assert captured.tracer.stats().spans_sampled_out == 2
