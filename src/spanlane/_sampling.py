"""Head sampling: the :class:`Sampler` protocol, the built-in samplers, and the environment.

A tracer asks its sampler once per span, when the span starts, whether to record it. The
decisions are OpenTelemetry's: :class:`TraceIdRatio` samples exactly the trace ids the SDK's
``TraceIdRatioBased`` samples, and :class:`ParentBased` picks its delegate as the SDK's
``ParentBased`` does, so that services sampled by either agree on every trace.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from ._log import logger
from ._records import SAMPLED_FLAG, SpanContext, SpanKind
from ._validate import as_float

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "DEFAULT_SAMPLER",
    "HEAD_ALL",
    "HEAD_CALL",
    "HEAD_FOLLOW",
    "HEAD_NONE",
    "ParentBased",
    "RateLimited",
    "Sampler",
    "TraceIdRatio",
    "check_sampler",
    "head_mode",
    "ratio_bound",
    "sampler_from_environment",
    "validate_ratio",
]

#: The low 64 bits of a trace id: what the ratio rule compares (W3C level 2 makes them random).
_LOW_64: Final = (1 << 64) - 1
_TWO_TO_64: Final = 1 << 64


class Sampler(Protocol):
    """Decides, when a span starts, whether it is recorded.

    Any object with this method is a sampler. It is called once per span, on the thread that
    starts the span (so it must be thread-safe), before anything else is built for the span: it
    must be quick and must not block. A sampler that raises is taken as "not sampled"; the
    failure is counted in ``Stats.sampler_errors`` and logged (rate-limited), and never reaches
    the caller.
    """

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        """Return True to record the span.

        Args:
            trace_id: the span's trace id (its parent's, or a new one for a root).
            parent: the parent's context (valid; ``is_remote`` tells a parent from another
                process), or None for a root span.
            name: the span's name.
            kind: the span's kind.
            attributes: the attributes given to ``tracer.span()``, as given (not yet coerced),
                or None.
        """
        ...


class _Static:
    """A sampler with a fixed answer (``ALWAYS_ON``, ``ALWAYS_OFF``)."""

    __slots__ = ("_decision", "_name")

    def __init__(self, decision: bool, name: str) -> None:
        self._decision = decision
        self._name = name

    def __repr__(self) -> str:
        return f"spanlane.sampling.{self._name}"

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        """Return the fixed answer."""
        return self._decision


#: Records every span.
ALWAYS_ON: Final[Sampler] = _Static(True, "ALWAYS_ON")
#: Records no span (each is still a real, non-recording span that propagates ``-00``).
ALWAYS_OFF: Final[Sampler] = _Static(False, "ALWAYS_OFF")


def check_sampler(what: str, sampler: object) -> Sampler:
    """``sampler`` if it is a sampler instance.

    Raises:
        TypeError: it is a class, or has no callable ``should_sample``.
    """
    if isinstance(sampler, type):
        raise TypeError(f"{what} must be a sampler instance, not the class {sampler.__name__}")
    if not callable(getattr(sampler, "should_sample", None)):
        raise TypeError(
            f"{what} must be a sampler (an object with a should_sample() method), got {sampler!r}"
        )
    return sampler  # type: ignore[return-value]


def validate_ratio(what: str, ratio: object) -> float:
    """A sampling ratio as a float in ``[0, 1]``.

    Raises:
        TypeError: ``ratio`` is not an int or a float (a bool is neither).
        ValueError: ``ratio`` is NaN or outside ``[0, 1]``.
    """
    value = as_float(what, ratio, error=TypeError)
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"{what} must be between 0 and 1, got {ratio!r}")
    return value


def ratio_bound(ratio: float) -> int:
    """The bound the ratio rule compares the low 64 bits of a trace id with.

    ``round(ratio * 2**64)`` in float arithmetic, as the OpenTelemetry SDK computes it (its
    ``TraceIdRatioBased.get_bound_for_rate``): the same float product and the same rounding give
    the same bound, hence the same decision for every trace id.
    """
    return round(ratio * _TWO_TO_64)


class TraceIdRatio:
    """Samples a fixed fraction of traces, decided by the trace id alone.

    A span is sampled when the low 64 bits of its trace id, as an unsigned integer, are below
    ``round(ratio * 2**64)``: the rule of the OpenTelemetry SDK's ``TraceIdRatioBased``, so
    every service (spanlane or OpenTelemetry) with the same ratio keeps the same traces, and a
    service with a higher ratio keeps a superset of them. It does not look at the parent: wrap it
    in :class:`ParentBased` to honour upstream decisions.

    Args:
        ratio: the fraction of trace ids to sample, from 0 (none) to 1 (all).

    Raises:
        TypeError: ``ratio`` is not a number.
        ValueError: ``ratio`` is NaN or outside ``[0, 1]``.
    """

    __slots__ = ("_bound", "_ratio")

    def __init__(self, ratio: float) -> None:
        self._ratio = validate_ratio("ratio", ratio)
        self._bound = ratio_bound(self._ratio)

    def __repr__(self) -> str:
        return f"TraceIdRatio({self._ratio!r})"

    @property
    def ratio(self) -> float:
        """The fraction of trace ids sampled."""
        return self._ratio

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        """True when the low 64 bits of ``trace_id`` fall below the ratio's bound."""
        return trace_id & _LOW_64 < self._bound


def _is_sampled(context: SpanContext) -> bool:
    flags = context.trace_flags
    return type(flags) is int and bool(flags & SAMPLED_FLAG)


class ParentBased:
    """Follows the parent's decision; asks ``root`` for spans without a parent.

    The delegate is chosen by the parent, as the OpenTelemetry SDK's ``ParentBased`` chooses
    it: no parent (or an invalid one) asks ``root``; a parent from another process
    (``is_remote``) asks ``remote_sampled`` or ``remote_not_sampled`` by its "sampled" flag; a
    parent in this process asks ``local_sampled`` or ``local_not_sampled``. The defaults keep
    every trace whole: a child is sampled exactly when its parent was.

    Args:
        root: the sampler for root spans.
        remote_sampled: for a span whose remote parent was sampled (``traceparent ...-01``).
        remote_not_sampled: for a span whose remote parent was not (``traceparent ...-00``).
        local_sampled: for a span whose parent in this process is sampled.
        local_not_sampled: for a span whose parent in this process is not.

    Raises:
        TypeError: an argument is not a sampler instance.
    """

    __slots__ = (
        "_local_not_sampled",
        "_local_sampled",
        "_remote_not_sampled",
        "_remote_sampled",
        "_root",
    )

    def __init__(
        self,
        root: Sampler,
        *,
        remote_sampled: Sampler = ALWAYS_ON,
        remote_not_sampled: Sampler = ALWAYS_OFF,
        local_sampled: Sampler = ALWAYS_ON,
        local_not_sampled: Sampler = ALWAYS_OFF,
    ) -> None:
        self._root = check_sampler("root", root)
        self._remote_sampled = check_sampler("remote_sampled", remote_sampled)
        self._remote_not_sampled = check_sampler("remote_not_sampled", remote_not_sampled)
        self._local_sampled = check_sampler("local_sampled", local_sampled)
        self._local_not_sampled = check_sampler("local_not_sampled", local_not_sampled)

    def __repr__(self) -> str:
        parts = [repr(self._root)]
        for name, default in (
            ("remote_sampled", ALWAYS_ON),
            ("remote_not_sampled", ALWAYS_OFF),
            ("local_sampled", ALWAYS_ON),
            ("local_not_sampled", ALWAYS_OFF),
        ):
            value = getattr(self, name)
            if value is not default:
                parts.append(f"{name}={value!r}")
        return f"ParentBased({', '.join(parts)})"

    @property
    def root(self) -> Sampler:
        """The sampler for root spans."""
        return self._root

    @property
    def remote_sampled(self) -> Sampler:
        """The sampler for spans whose remote parent was sampled."""
        return self._remote_sampled

    @property
    def remote_not_sampled(self) -> Sampler:
        """The sampler for spans whose remote parent was not sampled."""
        return self._remote_not_sampled

    @property
    def local_sampled(self) -> Sampler:
        """The sampler for spans whose local parent is sampled."""
        return self._local_sampled

    @property
    def local_not_sampled(self) -> Sampler:
        """The sampler for spans whose local parent is not sampled."""
        return self._local_not_sampled

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        """Ask the delegate the parent selects."""
        if parent is None or not parent.is_valid:
            delegate = self._root
        elif parent.is_remote is True:
            delegate = self._remote_sampled if _is_sampled(parent) else self._remote_not_sampled
        else:
            delegate = self._local_sampled if _is_sampled(parent) else self._local_not_sampled
        return delegate.should_sample(
            trace_id=trace_id, parent=parent, name=name, kind=kind, attributes=attributes
        )


def _positive_rate(value: object) -> float:
    rate = as_float("per_second", value, error=TypeError)
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"per_second must be a positive, finite number, got {value!r}")
    return rate


class RateLimited:
    """Samples at most ``per_second`` new traces per second (a token bucket), thread-safe.

    It decides *local roots*: spans without a parent, and spans whose parent is in another
    process. Each sampled local root takes a token; the bucket holds at most ``max(per_second,
    1)`` tokens (one second's worth, so a quiet service can take a short burst) and refills at
    ``per_second`` tokens a second. A span whose parent is in this process follows its parent
    without taking a token, so a trace is recorded or not as a whole.

    Standing alone it ignores the decision a remote parent carries; inside
    :class:`ParentBased` (``ParentBased(RateLimited(100))``) upstream decisions are honoured and
    the limit applies to the traces this service starts. One instance given to several places
    (``root=limit, remote_sampled=limit``) shares one bucket.

    Args:
        per_second: the most local roots sampled per second, on average; fractions allowed
            (0.5 is one every two seconds).
        clock: a monotonic clock in seconds (``time.monotonic`` by default); for tests.

    Raises:
        TypeError: ``per_second`` is not a number, or ``clock`` is not callable.
        ValueError: ``per_second`` is not positive and finite.
    """

    __slots__ = ("_capacity", "_clock", "_last", "_lock", "_rate", "_tokens")

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = _positive_rate(per_second)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._capacity = max(self._rate, 1.0)
        self._tokens = self._capacity
        self._last = clock()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimited({self._rate!r})"

    @property
    def per_second(self) -> float:
        """The most local roots sampled per second."""
        return self._rate

    def should_sample(
        self,
        *,
        trace_id: int,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, object] | None,
    ) -> bool:
        """Follow a local parent; otherwise take a token if there is one."""
        if parent is not None and parent.is_remote is not True and parent.is_valid:
            return _is_sampled(parent)
        with self._lock:
            now = self._clock()
            elapsed = now - self._last
            if elapsed > 0:  # a clock that stands still or steps back adds nothing
                self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
                self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


#: What a tracer samples with by default: every root, and every child as its parent was.
DEFAULT_SAMPLER: Final = ParentBased(ALWAYS_ON)

#: How the tracer's hot path applies its sampler (see :func:`head_mode`).
HEAD_ALL: Final = 0  # record every span: no call
HEAD_FOLLOW: Final = 1  # roots recorded, children as their parent: a flag test, no call
HEAD_CALL: Final = 2  # call the sampler
HEAD_NONE: Final = 3  # record no span: no call


def head_mode(sampler: Sampler) -> int:
    """How the tracer can apply ``sampler``: three common ones need no call at all.

    ``ALWAYS_ON`` records everything, ``ALWAYS_OFF`` nothing; ``ParentBased(ALWAYS_ON)`` with its
    default delegates (the default sampler) records roots and follows the parent's flag
    otherwise. All are immutable, so the answer cannot go stale.
    """
    if sampler is ALWAYS_ON:
        return HEAD_ALL
    if sampler is ALWAYS_OFF:
        return HEAD_NONE
    if (
        type(sampler) is ParentBased
        and sampler.root is ALWAYS_ON
        and sampler.remote_sampled is ALWAYS_ON
        and sampler.local_sampled is ALWAYS_ON
        and sampler.remote_not_sampled is ALWAYS_OFF
        and sampler.local_not_sampled is ALWAYS_OFF
    ):
        return HEAD_FOLLOW
    return HEAD_CALL


_ENV_SAMPLER: Final = "OTEL_TRACES_SAMPLER"
_ENV_ARG: Final = "OTEL_TRACES_SAMPLER_ARG"


def _env_ratio(environ: Mapping[str, str]) -> float:
    """``OTEL_TRACES_SAMPLER_ARG`` as a ratio: 1.0 when unset; an unusable one is logged and
    ignored (1.0), as the specification asks of invalid environment values."""
    raw = environ.get(_ENV_ARG)
    if raw is None or not raw.strip():
        return 1.0
    try:
        return validate_ratio(_ENV_ARG, float(raw.strip()))
    except (TypeError, ValueError):
        logger.warning("spanlane: %s=%r is not a ratio between 0 and 1; using 1.0", _ENV_ARG, raw)
        return 1.0


def sampler_from_environment(environ: Mapping[str, str] | None = None) -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` (and ``OTEL_TRACES_SAMPLER_ARG``) name.

    The values of the OpenTelemetry specification are understood, in any letter case:
    ``always_on``, ``always_off``, ``traceidratio``, ``parentbased_always_on``,
    ``parentbased_always_off``, ``parentbased_traceidratio``. Unset or empty means the default,
    ``ParentBased(ALWAYS_ON)``; any other value is logged as a warning and means the default too.
    """
    env = os.environ if environ is None else environ
    raw = env.get(_ENV_SAMPLER)
    if raw is None or not raw.strip():
        return DEFAULT_SAMPLER
    name = raw.strip().lower()
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "parentbased_always_on":
        return DEFAULT_SAMPLER
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "traceidratio":
        return TraceIdRatio(_env_ratio(env))
    if name == "parentbased_traceidratio":
        return ParentBased(TraceIdRatio(_env_ratio(env)))
    logger.warning(
        "spanlane: %s=%r is not a sampler spanlane knows; using the default, parentbased_always_on",
        _ENV_SAMPLER,
        raw,
    )
    return DEFAULT_SAMPLER
