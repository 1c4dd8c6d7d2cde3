"""Hypothesis strategies for spanlane's tests: tracer configurations, fault models and programs.

A *case* is a :class:`TracerConfig` (lanes, sizes, timeouts, policies, and per lane the faults its
exporter suffers) and a :class:`Program`: for each of a few concurrent producer tasks, a list of
operations on the tracer, plus the way the program leaves ``open_tracer()``. Everything drawn here
is plain frozen data with a readable ``repr``, so that a shrunk counterexample can be pasted into an
``@example`` as it is printed. Objects that would be awkward to print or that are mutated while the
program runs (hostile attribute values) are drawn as :class:`Weird` tags and built fresh each time
a program runs (see ``materialize`` in ``tests/fuzz/interpreter.py``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from typing import Any, Literal

import attrs
from hypothesis import strategies as st

from spanlane import RetryPolicy, SpanLimits
from spanlane.testing import Fault, FaultKind

# --- values ----------------------------------------------------------------------------------


class Weird(enum.Enum):
    """A hostile attribute value or mapping, built fresh for every run of a program."""

    HUGE_STR = "huge_str"  #: a 100,000-character string
    BIG_INT = "big_int"  #: an int past 64 bits
    BAD_REPR = "bad_repr"  #: an object whose __repr__ and __str__ raise
    RECURSIVE_LIST = "recursive_list"  #: a list that contains itself
    STR_SUBCLASS = "str_subclass"  #: a str subclass with its own __str__
    INT_ENUM = "int_enum"  #: an IntEnum member
    NESTED = "nested"  #: dicts in lists in dicts
    MUTABLE_LIST = "mutable_list"  #: a list the program appends to after handing it over
    BAD_MAPPING = "bad_mapping"  #: a "mapping" whose items() raises (for set_attributes)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and the infinities included
    st.text(max_size=12),
    st.binary(max_size=4),
)

#: Attribute values, legal and hostile: scalars, homogeneous and mixed sequences, nested
#: containers, and the :class:`Weird` ones.
attribute_values: st.SearchStrategy[object] = st.one_of(
    _scalars,
    st.lists(st.integers(), max_size=4),
    st.tuples(_scalars, _scalars),
    st.recursive(
        _scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    st.sampled_from([w for w in Weird if w is not Weird.BAD_MAPPING]),
)

#: Attribute keys: a few names that collide often (so updates happen), and keys spanlane must
#: refuse (empty, non-string).
attribute_keys: st.SearchStrategy[object] = st.one_of(
    st.sampled_from(["a", "b", "http.route", "db.statement"]),
    st.sampled_from(["", 0, None, ("t",), b"k", 1.5]),
    st.text(min_size=1, max_size=6),
)

Items = tuple[tuple[object, object], ...]

_items: st.SearchStrategy[Items] = st.lists(
    st.tuples(attribute_keys, attribute_values), max_size=4
).map(tuple)


# --- the fault model -------------------------------------------------------------------------


@attrs.frozen
class LaneSpec:
    """One lane: its exporter's appetite for start records, and the faults it suffers.

    Attributes:
        wants_starts: the exporter also asks for start notifications.
        script: the fault applied to the 1st, 2nd, ... export call (retries are calls too);
            calls past the end of the script succeed.
        fail_on_close: ``aclose()`` raises.
        hang_on_close: ``aclose()`` never returns (the lane abandons it after its grace period).
    """

    wants_starts: bool = False
    script: tuple[Fault | None, ...] = ()
    fail_on_close: bool = False
    hang_on_close: bool = False
    #: The lane's own ``max_batch_size`` (``spanlane.lane(exporter, max_batch_size=...)``), or
    #: None to take the tracer's.
    max_batch_size: int | None = None
    #: The lane's ``max_concurrent_exports``, or None for the exporter's default (1 here).
    max_concurrent_exports: int | None = None
    #: The lane's ``max_buffer_bytes``, or None for no byte bound.
    max_buffer_bytes: int | None = None

    def overrides(self) -> dict[str, object]:
        """The lane options this lane sets itself (``spanlane.lane(exporter, **...)``)."""
        options = {
            "max_batch_size": self.max_batch_size,
            "max_concurrent_exports": self.max_concurrent_exports,
            "max_buffer_bytes": self.max_buffer_bytes,
        }
        return {name: value for name, value in options.items() if value is not None}

    def count(self, *kinds: FaultKind) -> int:
        """How many scripted faults are of one of ``kinds``."""
        return sum(1 for fault in self.script if fault is not None and fault.kind in kinds)

    @property
    def failed_attempts(self) -> int:
        """Export calls the script makes fail in a way the lane retries."""
        return self.count(FaultKind.TRANSIENT, FaultKind.DELIVER_THEN_FAIL)

    @property
    def redelivers(self) -> bool:
        """True when an export may deliver a batch and then fail (so delivery is at-least-once)."""
        return self.count(FaultKind.DELIVER_THEN_FAIL) > 0


DEFAULT_LIMITS = SpanLimits()
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.004)


class SamplerSpec(enum.Enum):
    """The head sampler of a run, built fresh by the interpreter (see ``build_sampler``)."""

    DEFAULT = "default"  #: no ``sampler=``: ParentBased(ALWAYS_ON)
    ALWAYS_OFF = "always_off"  #: nothing is recorded
    RATIO = "ratio"  #: ParentBased(TraceIdRatio(0.5)): random, by trace id
    EVEN = "even"  #: spans whose number (``p<i>.<n>``) is even, whatever the parent
    RAISES = "raises"  #: raises for spans whose number is 3 mod 4, samples the others

    @property
    def deterministic(self) -> bool:
        """True when the decisions do not depend on random ids."""
        return self is not SamplerSpec.RATIO


@attrs.frozen
class TailSpec:
    """``TailSampling(...)`` arguments; the interpreter builds a fresh stage for each run."""

    keep_errors: bool = True
    keep_slower_than: float | None = None
    keep_ratio: float = 0.0
    max_pending_spans: int = 10_000
    decision_wait: float = 10.0

    @property
    def keeps_everything(self) -> bool:
        """True when every trace is kept (the ratio rule keeps every trace id)."""
        return self.keep_ratio == 1.0


@attrs.frozen
class TracerConfig:
    """The arguments of ``open_tracer()``, and one :class:`LaneSpec` per exporter."""

    lanes: tuple[LaneSpec, ...] = (LaneSpec(),)
    buffer_size: int = 2048
    max_batch_size: int = 512
    flush_interval: float = 1.0
    on_full: Literal["drop", "wait"] = "drop"
    wait_timeout: float = 0.02
    drain_timeout: float = 0.3
    export_timeout: float = 5.0
    retry: RetryPolicy = FAST_RETRY
    limits: SpanLimits = DEFAULT_LIMITS
    #: Queued records at which lanes pack their queue (``Lane._compact_at``), or None for the
    #: library's default (which no drawn program reaches).
    compact_at: int | None = None
    sampler: SamplerSpec = SamplerSpec.DEFAULT
    tail: TailSpec | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``open_tracer()`` (the sampler and tail stage excepted: they
        are built fresh for every run)."""
        return {
            "buffer_size": self.buffer_size,
            "max_batch_size": self.max_batch_size,
            "flush_interval": self.flush_interval,
            "on_full": self.on_full,
            "wait_timeout": self.wait_timeout,
            "drain_timeout": self.drain_timeout,
            "export_timeout": self.export_timeout,
            "retry": self.retry,
            "limits": self.limits,
        }


def _rarely(chance_in: int) -> st.SearchStrategy[bool]:
    """True about once in ``chance_in`` draws; shrinks to False."""
    return st.sampled_from((False,) * (chance_in - 1) + (True,))


_retry_after = st.sampled_from([None, 0.0, 0.002, 30.0])  # 30 s is capped by max_backoff


class Injected:
    """Marks an exception the fault model raised, so that the interpreter can tell it from a
    real Ctrl-C (which must still stop the test run)."""


class InjectedKeyboardInterrupt(Injected, KeyboardInterrupt):
    pass


class InjectedSystemExit(Injected, SystemExit):
    pass


class InjectedGeneratorExit(Injected, GeneratorExit):
    pass


class InjectedOwn(Injected, BaseException):
    """A BaseException of an exporter's own."""


class InjectedForeignCancellation(Injected, asyncio.CancelledError):
    """A cancellation that is not the worker's: awaiting a future something else cancelled."""


_BASE_EXCEPTION_FAULTS = [
    Fault.raising(InjectedKeyboardInterrupt),
    Fault.raising(InjectedSystemExit),
    Fault.raising(InjectedGeneratorExit),
    Fault.raising(InjectedOwn),
    Fault.raising(InjectedForeignCancellation),
]


def faults(
    *, permanent: bool = True, hang: bool = True, redeliver: bool = True
) -> st.SearchStrategy[Fault | None]:
    """One scripted export outcome; None and ``Fault.ok()`` both mean success."""
    options: list[st.SearchStrategy[Fault | None]] = [
        st.none(),
        st.just(Fault.ok()),
        st.builds(Fault.transient, retry_after=_retry_after),
        st.builds(Fault.delay, st.sampled_from([0.001, 0.005, 0.02])),
    ]
    if permanent:
        options.append(st.just(Fault.permanent()))
        # Anything at all raised by export() fails the batch for good, never the application.
        options.append(st.sampled_from(_BASE_EXCEPTION_FAULTS))
    if hang:
        options.append(st.just(Fault.hang()))
    if redeliver:
        options.append(st.builds(Fault.deliver_then_fail, retry_after=_retry_after))
    return st.one_of(options)


def lane_specs(
    *,
    permanent: bool = True,
    hang: bool = True,
    redeliver: bool = True,
    close_faults: bool = True,
    byte_bound: bool = True,
    concurrent: bool = False,
) -> st.SearchStrategy[LaneSpec]:
    """A lane with a drawn fault model; the flags leave whole kinds of fault out (or, with
    ``concurrent``, make every lane export several batches at once)."""
    return st.builds(
        LaneSpec,
        wants_starts=st.booleans(),
        script=st.lists(
            faults(permanent=permanent, hang=hang, redeliver=redeliver), max_size=8
        ).map(tuple),
        fail_on_close=st.booleans() if close_faults else st.just(False),
        max_batch_size=st.sampled_from([None, None, 1]),
        max_concurrent_exports=st.sampled_from([2, 4])
        if concurrent
        else st.sampled_from([None, None, 1, 2, 4]),
        # A small bound (a few records) makes byte drops common; a large one never binds.
        max_buffer_bytes=st.sampled_from([None, None, 2_000, 1_000_000])
        if byte_bound
        else st.just(None),
        # A hung aclose() costs the lane's whole grace period (a second): keep it rare.
        hang_on_close=_rarely(30) if close_faults and hang else st.just(False),
    )


_limits = st.builds(
    SpanLimits,
    max_attributes=st.sampled_from([128, 3]),
    max_events=st.sampled_from([128, 2]),
    max_attribute_length=st.sampled_from([None, 8, 4096]),
    max_event_attributes=st.sampled_from([128, 2]),
)


def tail_specs(
    *, keeps_everything: bool = False, deterministic: bool = False
) -> st.SearchStrategy[TailSpec]:
    """A tail stage: with ``keeps_everything`` one that keeps every trace; with
    ``deterministic`` one whose decisions do not depend on the order records arrive in."""
    if keeps_everything:
        ratios: st.SearchStrategy[float] = st.just(1.0)
    elif deterministic:
        ratios = st.sampled_from([0.0, 1.0])
    else:
        ratios = st.sampled_from([0.0, 0.5, 1.0])
    if deterministic:
        return st.builds(TailSpec, keep_errors=st.just(False), keep_ratio=ratios)
    return st.builds(
        TailSpec,
        keep_errors=st.booleans(),
        keep_slower_than=st.sampled_from([None, 0.0, 0.001]),
        keep_ratio=ratios,
        max_pending_spans=st.sampled_from([10_000, 1, 2, 3]),
        decision_wait=st.sampled_from([10.0, 0.001, 0.02]),
    )


def sampler_specs(
    *, deterministic: bool = False, often: bool = False
) -> st.SearchStrategy[SamplerSpec]:
    """A head sampler; the default most often (it shrinks to it) unless ``often``."""
    choices = [spec for spec in SamplerSpec if spec.deterministic or not deterministic]
    if not often:
        choices = [SamplerSpec.DEFAULT] * 6 + choices[1:]
    return st.sampled_from(choices)


@st.composite
def tracer_configs(
    draw: st.DrawFn,
    *,
    lossless_for: int | None = None,
    redeliver: bool = True,
    concurrent: bool = False,
    deterministic: bool = False,
    sampling: bool = False,
) -> TracerConfig:
    """A tracer configuration with one to three lanes.

    Args:
        lossless_for: when given, the configuration may lose nothing for a program that offers
            at most this many records to a lane: the buffer holds them all, no fault is
            permanent or hangs, there are more attempts than scripted failures, and every
            deadline is far beyond what the faults can consume (and a tail stage keeps every
            trace).
        redeliver: allow faults that deliver a batch and then fail.
        concurrent: every lane exports two or four batches at once.
        deterministic: samplers and tail stages whose decisions do not depend on random ids
            or on the order records arrive in.
        sampling: draw a sampler other than the default and a tail stage more often.
    """
    lossless = lossless_for is not None
    lanes = tuple(
        draw(
            st.lists(
                lane_specs(
                    permanent=not lossless,
                    hang=not lossless,
                    redeliver=redeliver,
                    byte_bound=not lossless,
                    concurrent=concurrent,
                ),
                min_size=1,
                max_size=3,
            )
        )
    )
    if lossless_for is not None:
        buffer_size = draw(st.integers(max(lossless_for, 1), max(lossless_for, 1) + 8))
    else:
        buffer_size = draw(st.sampled_from([1, 2, 3, 5, 8, 64, 4096]))
    max_batch_size = draw(st.integers(1, min(buffer_size, 16)) | st.just(buffer_size))
    needed_attempts = max(lane.failed_attempts for lane in lanes) + 1
    if lossless:
        max_attempts = draw(st.integers(needed_attempts, needed_attempts + 2))
    else:
        max_attempts = draw(st.integers(1, 4))
    retry = RetryPolicy(
        max_attempts=max_attempts,
        initial_backoff=0.001,
        max_backoff=0.004,
        jitter=draw(st.sampled_from([0.0, 0.5, 1.0])),
    )
    return TracerConfig(
        lanes=lanes,
        buffer_size=buffer_size,
        max_batch_size=max_batch_size,
        flush_interval=draw(st.sampled_from([0.001, 0.01, 0.2, 5.0])),
        on_full=draw(st.sampled_from(["drop", "wait"])),
        wait_timeout=draw(st.sampled_from([0.001, 0.02])),
        # A lossless drain is never cut short; its generous deadline costs nothing, because the
        # tracer exits as soon as the lanes are empty.
        drain_timeout=5.0 if lossless else draw(st.sampled_from([0.1, 0.2, 0.4])),
        export_timeout=5.0 if lossless else draw(st.sampled_from([0.05, 0.2, 10.0])),
        retry=retry,
        limits=draw(_limits),
        # Pack queued records at once, after a few, or never (the default threshold).
        compact_at=draw(st.sampled_from([None, None, 1, 3])),
        sampler=draw(sampler_specs(deterministic=deterministic, often=sampling)),
        # A tail stage in one case in five; in three in four of the sampling cases.
        tail=draw(
            st.sampled_from(
                [True, True, True, False] if sampling else [False] * 4 + [True]
            ).flatmap(
                lambda with_tail: (
                    tail_specs(keeps_everything=lossless, deterministic=deterministic)
                    if with_tail
                    else st.none()
                )
            )
        ),
    )


# --- programs --------------------------------------------------------------------------------

#: External parents (drawn by sampling programs only): ``"remote"`` and ``"remote00"`` a
#: remote context, sampled or not (the span is a local root); ``"detached"`` a context of this
#: process that no span of the program records (its trace has no local root here).
External = Literal["remote", "remote00", "detached"]
Parent = int | Literal["current"] | External | None


@attrs.frozen
class StartSpan:
    """Start a span with ``start_span()``.

    ``parent`` is an index into the producer's spans (modulo their number), an external parent
    (see :data:`External`), ``"current"`` for the
    current span (the body span, if any), or None for a new trace.
    """

    parent: Parent = None
    attributes: Items | None = None


@attrs.frozen
class EndSpan:
    """End one of the producer's spans: ``end()``, ``await aend()``, or ``end()`` in a thread."""

    target: int = 0
    via: Literal["end", "aend", "thread"] = "end"


@attrs.frozen
class SetAttribute:
    """``set_attribute(key, value)`` on one of the producer's spans, open or ended."""

    target: int = 0
    key: object = "a"
    value: object = 1


@attrs.frozen
class SetAttributes:
    """``set_attributes(mapping)`` on one of the producer's spans, open or ended."""

    target: int = 0
    items: Items | Weird = ()


@attrs.frozen
class AddEvent:
    """``add_event(name, attributes)`` on one of the producer's spans, open or ended."""

    target: int = 0
    name: object = "event"
    attributes: Items | None = None


@attrs.frozen
class RaiseInSpan:
    """Raise an exception inside a ``with`` (or ``async with``) span and catch it outside.

    With ``checkpoint``, the body awaits a checkpoint first, where cancellation may arrive.
    """

    parent: Parent = None
    asynchronous: bool = False
    checkpoint: bool = False
    attributes: Items | None = None


@attrs.frozen
class Flush:
    """``await tracer.flush(timeout)``."""

    timeout: float = 0.0


@attrs.frozen
class Checkpoint:
    """``await anyio.lowlevel.checkpoint()``, or ``await anyio.sleep(0)``."""

    sleep: bool = False


Op = (
    StartSpan | EndSpan | SetAttribute | SetAttributes | AddEvent | RaiseInSpan | Flush | Checkpoint
)


@attrs.frozen
class Exit:
    """How the program leaves ``open_tracer()``.

    Attributes:
        how: ``"normal"``; ``"raise"``: a ``BodyError`` is raised; ``"cancel"``: a cancel scope
            around ``open_tracer()`` is cancelled.
        at: ``(producer, step)``: the producer raises or cancels just before its op number
            ``step`` (or after its last op, if ``step`` is past it), while the others are still
            running; None: after every producer has finished.
    """

    how: Literal["normal", "raise", "cancel"] = "normal"
    at: tuple[int, int] | None = None


@attrs.frozen
class Program:
    """What the producers do, and how the body ends.

    Attributes:
        producers: one op list per producer task, all started in one task group.
        body_span: the task group runs inside a ``with tracer.span("body")`` block, which is then
            the current span (and the ``"current"`` parent) in every producer.
        exit: how the body leaves ``open_tracer()``.
    """

    producers: tuple[tuple[Op, ...], ...] = ((),)
    body_span: bool = False
    exit: Exit = Exit()

    @property
    def max_spans(self) -> int:
        """The most spans the program can start."""
        starts = sum(
            1 for ops in self.producers for op in ops if isinstance(op, (StartSpan, RaiseInSpan))
        )
        return starts + int(self.body_span)


_parents: st.SearchStrategy[Parent] = st.one_of(st.none(), st.just("current"), st.integers(0, 7))
_targets = st.integers(0, 7)

#: One operation of a producer; span starts and ends are drawn most often.
ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(StartSpan, parent=_parents, attributes=st.none() | _items),
    st.builds(EndSpan, target=_targets, via=st.sampled_from(["end", "aend", "thread"])),
    st.builds(StartSpan, parent=_parents),
    st.builds(EndSpan, target=_targets),
    st.builds(SetAttribute, target=_targets, key=attribute_keys, value=attribute_values),
    st.builds(SetAttributes, target=_targets, items=_items | st.just(Weird.BAD_MAPPING)),
    st.builds(
        AddEvent,
        target=_targets,
        name=st.text(max_size=6) | attribute_values,
        attributes=st.none() | _items,
    ),
    st.builds(
        RaiseInSpan,
        parent=_parents,
        asynchronous=st.booleans(),
        checkpoint=st.booleans(),
        attributes=st.none() | _items,
    ),
    st.builds(Flush, timeout=st.sampled_from([0.0, 0.005, 0.05])),
    st.builds(Checkpoint, sleep=st.booleans()),
)


_sampling_parents: st.SearchStrategy[Parent] = st.one_of(
    st.none(),
    st.integers(0, 7),
    st.integers(0, 7),
    st.just("current"),
    st.sampled_from(["remote", "remote00", "detached"]),
)

#: The ops of a sampling program: spans started under every kind of parent and ended in any
#: order (children after their roots: stragglers), errors, and the waits that let timers fire.
sampling_ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(StartSpan, parent=_sampling_parents),
    st.builds(EndSpan, target=_targets, via=st.sampled_from(["end", "aend", "thread"])),
    st.builds(EndSpan, target=_targets),
    st.builds(
        RaiseInSpan,
        parent=_sampling_parents,
        asynchronous=st.booleans(),
        checkpoint=st.booleans(),
    ),
    st.builds(Flush, timeout=st.sampled_from([0.0, 0.005, 0.05])),
    st.builds(Checkpoint, sleep=st.booleans()),
)


def _exits(producers: Sequence[Sequence[Op]], *, mid_program: bool) -> st.SearchStrategy[Exit]:
    after_join = st.builds(Exit, how=st.sampled_from(["normal", "raise", "cancel"]))
    if not mid_program:
        return after_join
    points = st.integers(0, len(producers) - 1).flatmap(
        lambda producer: st.tuples(st.just(producer), st.integers(0, len(producers[producer])))
    )
    during = st.builds(Exit, how=st.sampled_from(["raise", "cancel"]), at=points)
    return after_join | during


@st.composite
def programs(
    draw: st.DrawFn,
    *,
    max_producers: int = 4,
    max_ops: int = 10,
    mid_program_exit: bool = True,
    sampling: bool = False,
) -> Program:
    """A program: one to ``max_producers`` producers with up to ``max_ops`` ops each.

    Args:
        mid_program_exit: allow a producer to raise or cancel while the others run (which makes
            the outcome depend on scheduling, so it is off for backend comparisons).
        sampling: draw :data:`sampling_ops` (external parents, stragglers) instead.
    """
    producer_ops = sampling_ops if sampling else ops
    producers = tuple(
        tuple(draw(st.lists(producer_ops, max_size=max_ops)))
        for _ in range(draw(st.integers(1, max_producers)))
    )
    return Program(
        producers=producers,
        body_span=draw(st.booleans()),
        exit=draw(_exits(producers, mid_program=mid_program_exit)),
    )


@attrs.frozen
class Case:
    """A configuration and a program to run under it."""

    config: TracerConfig
    program: Program


@st.composite
def cases(
    draw: st.DrawFn,
    *,
    lossless: bool = False,
    redeliver: bool = True,
    mid_program_exit: bool = True,
    concurrent: bool = False,
    deterministic: bool = False,
    sampling: bool = False,
) -> Case:
    """A :class:`Case`; with ``lossless``, a configuration that may drop nothing for the program.

    Args:
        lossless: see :func:`tracer_configs`.
        redeliver: see :func:`tracer_configs`.
        mid_program_exit: see :func:`programs`.
        concurrent: see :func:`tracer_configs`.
        deterministic: see :func:`tracer_configs`.
        sampling: see :func:`tracer_configs`.
    """
    program = draw(programs(mid_program_exit=mid_program_exit, sampling=sampling))
    # Every span may send a start and an end record down a lane.
    budget = 2 * program.max_spans if lossless else None
    config = draw(
        tracer_configs(
            lossless_for=budget,
            redeliver=redeliver,
            concurrent=concurrent,
            deterministic=deterministic,
            sampling=sampling,
        )
    )
    return Case(config=config, program=program)


def deterministic_cases() -> st.SearchStrategy[Case]:
    """Cases whose exported records do not depend on scheduling: lossless, no redelivery (how
    many duplicates a redelivered batch makes depends on how the records were batched), and no
    exit while producers still run."""
    return cases(lossless=True, redeliver=False, mid_program_exit=False, deterministic=True)


def sampling_cases() -> st.SearchStrategy[Case]:
    """Cases that draw head samplers and tail stages often."""
    return cases(sampling=True)
