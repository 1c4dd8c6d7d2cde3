"""RetryPolicy: validation and backoff; RetryableExportError's ``retry_after``."""

from __future__ import annotations

import random

import pytest

from spanlane import ExportError, RetryableExportError, RetryPolicy, SpanlaneError

pytestmark = pytest.mark.anyio


class _FixedRandom(random.Random):
    """A random source whose ``random()`` always returns one value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


NO_JITTER = _FixedRandom(0.0)


async def test_defaults() -> None:
    policy = RetryPolicy()
    # No attempt limit: the retry window (as the OpenTelemetry Collector's) is the bound.
    assert (policy.max_attempts, policy.max_elapsed) == (None, 300.0)
    assert (policy.initial_backoff, policy.max_backoff) == (0.5, 30.0)
    assert (policy.multiplier, policy.jitter) == (2.0, 0.2)
    assert RetryPolicy(max_attempts=3).max_attempts == 3


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="max_attempts-zero"),
        pytest.param({"max_attempts": 2.0}, "max_attempts", id="max_attempts-float"),
        pytest.param({"max_elapsed": 0}, "max_elapsed", id="max_elapsed-zero"),
        pytest.param({"max_elapsed": float("inf")}, "max_elapsed", id="max_elapsed-inf"),
        pytest.param({"initial_backoff": 0}, "initial_backoff", id="initial_backoff-zero"),
        pytest.param({"initial_backoff": -1}, "initial_backoff", id="initial_backoff-negative"),
        pytest.param(
            {"initial_backoff": float("nan")}, "initial_backoff", id="initial_backoff-nan"
        ),
        pytest.param({"max_backoff": float("inf")}, "max_backoff", id="max_backoff-inf"),
        pytest.param({"multiplier": 0.5}, "multiplier", id="multiplier-below-one"),
        pytest.param({"jitter": 1.5}, "jitter", id="jitter-above-one"),
        pytest.param({"jitter": -0.1}, "jitter", id="jitter-negative"),
        pytest.param({"jitter": True}, "jitter", id="jitter-bool"),
        pytest.param({"max_elapsed": True}, "max_elapsed", id="max_elapsed-bool"),
        pytest.param({"initial_backoff": 10**400}, "initial_backoff", id="int-too-large"),
        pytest.param({"multiplier": 10**400}, "multiplier", id="multiplier-int-too-large"),
        pytest.param(
            {"initial_backoff": 2.0, "max_backoff": 1.0}, "max_backoff", id="max-below-initial"
        ),
    ],
)
async def test_bad_policy_raises_value_error_naming_the_parameter(
    options: dict[str, float], parameter: str
) -> None:
    with pytest.raises(ValueError, match=parameter):
        RetryPolicy(**options)  # type: ignore[arg-type]


async def test_backoff_grows_exponentially_up_to_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=3.0, multiplier=2.0, jitter=0.5)
    delays = [policy.backoff(failures, rng=NO_JITTER) for failures in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.backoff(0, rng=NO_JITTER) == 0.5  # no failure yet counts as the first


async def test_backoff_does_not_overflow_after_many_failures() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=10.0, multiplier=1000.0)
    assert policy.backoff(10_000, rng=NO_JITTER) == 10.0
    # Even the capped exponent overflows a float with a huge multiplier: still the cap.
    huge = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, multiplier=1e308)
    assert [huge.backoff(failures, rng=NO_JITTER) for failures in (1, 2, 3, 65)] == [
        0.001,
        0.01,
        0.01,
        0.01,
    ]


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
async def test_jitter_shortens_the_backoff_by_at_most_its_fraction(draw: float) -> None:
    policy = RetryPolicy(initial_backoff=2.0, max_backoff=2.0, jitter=0.25)
    assert policy.backoff(1, rng=_FixedRandom(draw)) == pytest.approx(2.0 * (1 - 0.25 * draw))


async def test_jitter_stays_within_bounds_with_the_default_random_source() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=1.0, jitter=1.0)
    for _ in range(200):
        assert 0.0 <= policy.backoff(1) <= 1.0


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(2.5, 2.5, id="honoured"),
        pytest.param(100.0, 5.0, id="capped-at-max_backoff"),
        pytest.param(-3.0, 0.0, id="negative-is-zero"),
    ],
)
async def test_retry_after_wins_over_the_computed_backoff(
    retry_after: float, expected: float
) -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=5.0)
    assert policy.backoff(3, retry_after=retry_after, rng=NO_JITTER) == expected


async def test_retryable_export_error_carries_retry_after() -> None:
    error = RetryableExportError("busy", retry_after=1.5)
    assert error.retry_after == 1.5
    assert str(error) == "busy"
    assert repr(error) == "RetryableExportError('busy', retry_after=1.5)"
    assert RetryableExportError().retry_after is None
    assert isinstance(error, ExportError)
    assert isinstance(error, SpanlaneError)
    assert isinstance(error, Exception)


@pytest.mark.parametrize("retry_after", [-1.0, float("nan")])
async def test_retryable_export_error_rejects_a_bad_retry_after(retry_after: float) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        RetryableExportError("busy", retry_after=retry_after)
