"""Head sampling: the samplers' decisions (against the OpenTelemetry SDK's), the environment,
and what an unsampled span is and costs the caller (nothing reaches a lane, nothing raises)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import anyio.to_thread
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import sampling as otel_sampling

import spanlane
from spanlane import NonRecordingSpan, SpanContext, SpanKind, open_tracer, propagation
from spanlane._sampling import DEFAULT_SAMPLER, ratio_bound
from spanlane._span import INVALID_SPAN
from spanlane.exporters import MemoryExporter
from spanlane.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    RateLimited,
    Sampler,
    TraceIdRatio,
    sampler_from_environment,
)
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio

LOW_64 = (1 << 64) - 1

# --- decisions, against the OpenTelemetry SDK -----------------------------------------------------


def _ratios(rng: random.Random) -> list[float]:
    fixed = [0.0, 1e-18, 1e-9, 0.001, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.75, 0.999999, 1.0]
    return fixed + [rng.random() for _ in range(20)]


def _trace_ids(rng: random.Random, bound: int) -> Iterator[int]:
    """Random ids, and ids whose low 64 bits sit right at the ratio's bound."""
    for _ in range(150):
        yield rng.getrandbits(128) or 1
    for low in (bound - 1, bound, bound + 1, 0, LOW_64):
        if 0 <= low <= LOW_64:
            yield (rng.getrandbits(64) << 64) | low or 1


def _otel_decision(sampler: Any, trace_id: int, parent: SpanContext | None = None) -> bool:
    context = None
    if parent is not None:
        otel_parent = otel_trace.SpanContext(
            parent.trace_id,
            parent.span_id,
            parent.is_remote,
            otel_trace.TraceFlags(parent.trace_flags),
        )
        context = otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(otel_parent))
    result = sampler.should_sample(context, trace_id, "x")
    return bool(result.decision.is_sampled())


def _ours(sampler: Sampler, trace_id: int, parent: SpanContext | None = None) -> bool:
    return sampler.should_sample(
        trace_id=trace_id, parent=parent, name="x", kind=SpanKind.INTERNAL, attributes=None
    )


def test_trace_id_ratio_decides_as_the_sdk_for_every_id() -> None:
    rng = random.Random(10)
    checked = 0
    for ratio in _ratios(rng):
        ours, theirs = TraceIdRatio(ratio), otel_sampling.TraceIdRatioBased(ratio)
        assert ratio_bound(ratio) == theirs.bound
        for trace_id in _trace_ids(rng, theirs.bound):
            assert _ours(ours, trace_id) == _otel_decision(theirs, trace_id), (ratio, trace_id)
            checked += 1
    assert checked > 4000


def test_trace_id_ratio_keeps_nested_sets_of_traces() -> None:
    rng = random.Random(11)
    low, high = TraceIdRatio(0.1), TraceIdRatio(0.2)
    ids = [rng.getrandbits(128) for _ in range(2000)]
    kept_low = {i for i in ids if _ours(low, i)}
    kept_high = {i for i in ids if _ours(high, i)}
    assert kept_low <= kept_high
    assert 0 < len(kept_low) < len(kept_high) < len(ids)


def _random_parent(rng: random.Random, trace_id: int) -> SpanContext | None:
    roll = rng.random()
    if roll < 0.15:
        return None
    if roll < 0.2:  # invalid: as no parent
        return SpanContext(trace_id, 0, rng.getrandbits(8), is_remote=rng.random() < 0.5)
    return SpanContext(
        trace_id, rng.getrandbits(64) or 1, rng.getrandbits(8), is_remote=rng.random() < 0.5
    )


def _delegate(rng: random.Random) -> tuple[Sampler, Any]:
    roll = rng.random()
    if roll < 0.3:
        return ALWAYS_ON, otel_sampling.ALWAYS_ON
    if roll < 0.6:
        return ALWAYS_OFF, otel_sampling.ALWAYS_OFF
    ratio = rng.choice([0.0, 0.3, 0.5, 1.0, rng.random()])
    return TraceIdRatio(ratio), otel_sampling.TraceIdRatioBased(ratio)


def test_parent_based_decides_as_the_sdk_for_every_parent() -> None:
    rng = random.Random(12)
    checked = 0
    for _ in range(60):
        pairs = [_delegate(rng) for _ in range(5)]
        ours = ParentBased(
            pairs[0][0],
            remote_sampled=pairs[1][0],
            remote_not_sampled=pairs[2][0],
            local_sampled=pairs[3][0],
            local_not_sampled=pairs[4][0],
        )
        theirs = otel_sampling.ParentBased(*(pair[1] for pair in pairs))
        for _ in range(60):
            trace_id = rng.getrandbits(128) or 1
            parent = _random_parent(rng, trace_id)
            assert _ours(ours, trace_id, parent) == _otel_decision(theirs, trace_id, parent), (
                ours,
                parent,
            )
            checked += 1
    assert checked >= 3600


def test_the_default_sampler_follows_the_parent_as_the_sdk_default() -> None:
    rng = random.Random(13)
    for _ in range(1000):
        trace_id = rng.getrandbits(128) or 1
        parent = _random_parent(rng, trace_id)
        assert _ours(DEFAULT_SAMPLER, trace_id, parent) == _otel_decision(
            otel_sampling.DEFAULT_ON, trace_id, parent
        )


# --- configuration from the environment -----------------------------------------------------------

ENV_CASES = [
    ("always_on", None),
    ("always_off", None),
    ("ALWAYS_OFF", None),
    ("traceidratio", "0.25"),
    ("traceidratio", None),
    ("parentbased_always_on", None),
    ("parentbased_always_off", None),
    ("parentbased_traceidratio", "0.5"),
    ("parentbased_traceidratio", "0"),
    ("traceidratio", "not a number"),
    ("traceidratio", "1.5"),
    ("parentbased_traceidratio", "nan"),
    ("jaeger_remote", None),
    ("", None),
]


@pytest.mark.parametrize(("name", "arg"), ENV_CASES)
def test_the_environment_names_the_sampler_the_sdk_would_use(
    monkeypatch: pytest.MonkeyPatch, name: str, arg: str | None
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    ours = sampler_from_environment()
    theirs = otel_sampling._get_from_env_or_default()
    rng = random.Random(name + str(arg))
    for _ in range(500):
        trace_id = rng.getrandbits(128) or 1
        parent = _random_parent(rng, trace_id)
        assert _ours(ours, trace_id, parent) == _otel_decision(theirs, trace_id, parent)


def test_an_unknown_sampler_is_logged_and_means_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="spanlane"):
        sampler = sampler_from_environment({"OTEL_TRACES_SAMPLER": "xray"})
    assert sampler is DEFAULT_SAMPLER
    assert "xray" in caplog.text


def test_an_unusable_ratio_is_logged_and_means_one(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"OTEL_TRACES_SAMPLER": " TraceIdRatio ", "OTEL_TRACES_SAMPLER_ARG": "-0.1"}
    with caplog.at_level(logging.WARNING, logger="spanlane"):
        sampler = sampler_from_environment(environ)
    assert isinstance(sampler, TraceIdRatio)
    assert sampler.ratio == 1.0
    assert "OTEL_TRACES_SAMPLER_ARG" in caplog.text


@pytest.mark.anyio
async def test_open_tracer_reads_the_environment_only_without_a_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = MemoryExporter()
    async with open_tracer(exporter) as tracer:
        assert tracer.sampler is ALWAYS_OFF
        with tracer.span("from the environment"):
            pass
    assert exporter.records == []
    assert open_tracer(MemoryExporter(), sampler=ALWAYS_ON).sampler is ALWAYS_ON
    monkeypatch.delenv("OTEL_TRACES_SAMPLER")
    assert open_tracer(MemoryExporter()).sampler is DEFAULT_SAMPLER


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: TraceIdRatio(1.5), ValueError),
        (lambda: TraceIdRatio(-0.1), ValueError),
        (lambda: TraceIdRatio(float("nan")), ValueError),
        (lambda: TraceIdRatio("0.5"), TypeError),  # type: ignore[arg-type]
        (lambda: TraceIdRatio(True), TypeError),
        (lambda: ParentBased(object()), TypeError),  # type: ignore[arg-type]
        (lambda: ParentBased(TraceIdRatio), TypeError),  # type: ignore[arg-type]
        (lambda: ParentBased(ALWAYS_ON, remote_sampled=None), TypeError),  # type: ignore[arg-type]
        (lambda: RateLimited(0), ValueError),
        (lambda: RateLimited(float("inf")), ValueError),
        (lambda: RateLimited("10"), TypeError),  # type: ignore[arg-type]
        (lambda: RateLimited(10, clock=3), TypeError),  # type: ignore[arg-type]
        (lambda: open_tracer(MemoryExporter(), sampler=object()), TypeError),  # type: ignore[arg-type]
        (lambda: open_tracer(MemoryExporter(), sampler=RateLimited), TypeError),  # type: ignore[arg-type]
    ],
)
def test_samplers_refuse_bad_arguments_when_built(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_samplers_describe_themselves() -> None:
    assert repr(ALWAYS_ON) == "spanlane.sampling.ALWAYS_ON"
    assert repr(ParentBased(TraceIdRatio(0.5))) == "ParentBased(TraceIdRatio(0.5))"
    assert repr(ParentBased(ALWAYS_ON, local_sampled=ALWAYS_OFF)) == (
        "ParentBased(spanlane.sampling.ALWAYS_ON, local_sampled=spanlane.sampling.ALWAYS_OFF)"
    )
    assert repr(RateLimited(2)) == "RateLimited(2.0)"


# --- RateLimited ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


REMOTE_SAMPLED = SpanContext(0xABC, 0xDEF, trace_flags=1, is_remote=True)
LOCAL_UNSAMPLED = SpanContext(0xABC, 0xDEF, trace_flags=0)
LOCAL_SAMPLED = SpanContext(0xABC, 0xDEF, trace_flags=1)


def test_rate_limited_allows_a_burst_then_refills_with_time() -> None:
    clock = FakeClock()
    limit = RateLimited(3, clock=clock)
    assert [_ours(limit, 1) for _ in range(5)] == [True, True, True, False, False]
    clock.now += 0.5  # 1.5 tokens
    assert [_ours(limit, 1) for _ in range(2)] == [True, False]
    clock.now += 100  # refills up to one second's worth only
    assert sum(_ours(limit, 1) for _ in range(10)) == 3
    clock.now -= 50  # a clock stepping back adds nothing
    assert not _ours(limit, 1)


def test_rate_limited_takes_fractional_rates() -> None:
    clock = FakeClock()
    limit = RateLimited(0.5, clock=clock)
    assert [_ours(limit, 1), _ours(limit, 1)] == [True, False]
    clock.now += 1.0
    assert not _ours(limit, 1)
    clock.now += 1.0
    assert _ours(limit, 1)


def test_rate_limited_follows_a_local_parent_and_limits_remote_ones() -> None:
    limit = RateLimited(1, clock=FakeClock())
    assert _ours(limit, 1, REMOTE_SAMPLED)  # a local root: takes the token
    assert not _ours(limit, 1)
    assert _ours(limit, 1, LOCAL_SAMPLED)  # no token needed
    assert not _ours(limit, 1, LOCAL_UNSAMPLED)
    # Inside ParentBased, an upstream "no" is honoured before the limit is asked.
    honouring = ParentBased(RateLimited(5, clock=FakeClock()))
    assert not _ours(honouring, 1, SpanContext(1, 2, trace_flags=0, is_remote=True))


def test_rate_limited_is_exact_across_threads() -> None:
    limit = RateLimited(50, clock=FakeClock())  # the clock stands still: 50 tokens in all
    results: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [_ours(limit, 1) for _ in range(200)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 50


# --- unsampled spans ------------------------------------------------------------------------------

REMOTE_UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


async def test_an_unsampled_span_is_real_current_and_records_nothing() -> None:
    async with capture_spans(sampler=ALWAYS_OFF) as captured:
        tracer = captured.tracer
        span = tracer.span("not sampled", attributes={"a": 1})
        assert isinstance(span, NonRecordingSpan)
        assert not span.is_recording
        with span:
            assert spanlane.current_span() is span
            context = span.context
            assert context.is_valid
            assert not context.is_sampled
            assert context.trace_flags == 0
            assert span.context is context  # the ids, made when first asked for, stay
            with tracer.span("child") as child:
                assert child.context.trace_id == context.trace_id
                assert child.parent == context
                assert child.context.span_id != context.span_id
            span.set_attribute("b", 2)
            span.set_attributes({"c": 3})
            span.add_event("e")
            span.record_exception(ValueError("x"))
            span.set_status(spanlane.StatusCode.ERROR)
            span.update_name("renamed")
        span.end()
        await span.aend()
        assert spanlane.current_span() is INVALID_SPAN
        assert span.name == ""
        assert span.record is None
        assert span.end_time_ns is None
        assert dict(span.attributes) == {}
        assert span.start_time_ns == 0
        assert "NonRecordingSpan" in repr(span)
        assert f"{context.span_id:016x}" in repr(span)
        assert await captured.flush() == []
        stats = tracer.stats()
    assert stats.spans_started == stats.spans_ended == 0
    assert stats.spans_sampled_out == 2
    assert stats.lanes[0].offered == 0


async def test_an_exception_in_an_unsampled_span_propagates_unchanged() -> None:
    async with capture_spans(sampler=ALWAYS_OFF) as captured:
        boom = ValueError("boom")
        with pytest.raises(ValueError, match="boom") as raised:
            async with captured.tracer.span("x"):
                raise boom
        assert raised.value is boom
        assert spanlane.current_span() is INVALID_SPAN


async def test_a_remote_unsampled_parent_is_honoured_and_propagated() -> None:
    remote = propagation.extract({"traceparent": REMOTE_UNSAMPLED, "tracestate": "k=v"})
    assert remote is not None
    assert not remote.is_sampled
    async with capture_spans() as captured:
        with captured.tracer.span("server", parent=remote, kind=SpanKind.SERVER) as server:
            assert not server.is_recording
            with captured.tracer.span("inside") as inside:
                assert not inside.is_recording
                headers: dict[str, str] = {}
                propagation.inject(headers)
        # A sampled remote parent is recorded.
        sampled = propagation.extract({"traceparent": REMOTE_UNSAMPLED[:-2] + "01"})
        with captured.tracer.span("sampled", parent=sampled):
            pass
        records = await captured.flush()
    traceparent = headers["traceparent"]
    assert traceparent == (f"00-4bf92f3577b34da6a3ce929d0e0e4736-{inside.context.span_id:016x}-00")
    assert headers["tracestate"] == "k=v"
    assert [record.name for record in records] == ["sampled"]
    assert records[0].trace_flags == 1
    assert captured.tracer.stats().spans_sampled_out == 2


async def test_an_unsampled_child_keeps_its_parents_other_flags() -> None:
    parent = SpanContext(0x1234, 0x5678, trace_flags=0x02, is_remote=True)  # level 2: random
    async with capture_spans() as captured:
        span = captured.tracer.span("x", parent=parent)
    assert span.context.trace_flags == 0x02


async def test_invalid_span_stays_stateless() -> None:
    async with capture_spans(sampler=ALWAYS_OFF):
        with INVALID_SPAN:
            assert spanlane.current_span() is INVALID_SPAN
            assert INVALID_SPAN._token is None
        assert not INVALID_SPAN.context.is_valid


async def test_a_non_recording_span_given_a_context_continues_it() -> None:
    remote = SpanContext(0xAB, 0xCD, trace_flags=1, is_remote=True)
    async with capture_spans() as captured:
        with NonRecordingSpan(remote) as carrier:
            assert carrier.context is remote
            with captured.tracer.span("child"):
                pass
        (record,) = await captured.flush()
    assert record.trace_id == 0xAB
    assert record.parent_span_id == 0xCD


class Recording:
    """A sampler that notes what it was asked and samples names starting with "keep"."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        self.calls.append(
            {"trace_id": trace_id, "parent": parent, "name": name, "kind": kind, "a": attributes}
        )
        return name.startswith("keep")


async def test_the_sampler_is_asked_once_per_span_with_what_is_known_at_start() -> None:
    sampler = Recording()
    attributes = {"user": "u"}
    async with capture_spans(sampler=sampler) as captured:
        tracer = captured.tracer
        root = tracer.span("keep root", kind=SpanKind.SERVER, attributes=attributes)
        with root, tracer.span("drop child", kind=7):  # type: ignore[arg-type]
            pass
        records = await captured.flush()
    first, second = sampler.calls
    assert first["parent"] is None
    assert first["name"] == "keep root"
    assert first["kind"] is SpanKind.SERVER
    assert first["a"] is attributes
    assert first["trace_id"] == root.context.trace_id
    assert second["parent"] == root.context
    assert second["kind"] is SpanKind.INTERNAL
    assert second["trace_id"] == root.context.trace_id
    assert [record.name for record in records] == ["keep root"]


class Raising:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def should_sample(self, **_: object) -> bool:
        raise self.exc


class Truthy:
    def should_sample(self, **_: object) -> object:
        return "yes"


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyboardInterrupt(), RecursionError()])
async def test_a_sampler_that_raises_means_not_sampled_and_is_counted(
    exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="spanlane"):
        async with capture_spans(sampler=Raising(exc)) as captured:
            for _ in range(3):
                with captured.tracer.span("x") as span:
                    assert not span.is_recording
                    assert span.context.is_valid
            assert await captured.flush() == []
    stats = captured.tracer.stats()
    assert stats.sampler_errors == 3
    assert stats.spans_sampled_out == 3
    warnings = [record for record in caplog.records if "sampler" in record.getMessage()]
    assert len(warnings) == 1  # rate-limited


async def test_a_sampler_that_cancels_is_not_swallowed() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except cancelled as exc:
            caught: BaseException = exc  # the backend's own cancellation, to raise again
    async with capture_spans(sampler=Raising(caught)) as captured:
        with pytest.raises(cancelled):
            captured.tracer.span("x")
        assert captured.tracer.stats().sampler_errors == 0


async def test_a_truthy_answer_samples() -> None:
    async with capture_spans(sampler=Truthy()) as captured:
        with captured.tracer.span("x"):
            pass
        assert len(await captured.flush()) == 1


async def test_unsampled_spans_started_in_threads_are_counted() -> None:
    async with capture_spans(sampler=ALWAYS_OFF) as captured:

        def in_thread() -> None:
            for _ in range(100):
                with captured.tracer.span("in a thread"):
                    pass

        await anyio.to_thread.run_sync(in_thread)
        assert captured.tracer.stats().spans_sampled_out == 100


async def test_spanlane_span_follows_the_current_tracers_sampler() -> None:
    async with capture_spans(sampler=ALWAYS_OFF) as captured:
        with spanlane.span("module level") as span:
            assert not span.is_recording
        assert await captured.flush() == []
