"""Retry policy for transient export failures: capped exponential backoff with jitter."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from ._validate import as_float, positive_seconds


def _check_positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    positive_seconds(attribute.name, value)


def _check_attempts(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"max_attempts must be None or an int >= 1, got {value!r}")


def _check_multiplier(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    number = as_float("multiplier", value)
    if not (math.isfinite(number) and number >= 1):
        raise ValueError(f"multiplier must be a finite number >= 1, got {value!r}")


def _check_jitter(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    number = as_float("jitter", value)
    if not 0 <= number <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How a lane retries a batch whose export failed transiently.

    A batch is retried, whole and in its place, after :class:`RetryableExportError` and after an
    attempt that ran out of the lane's ``export_timeout`` (which bounds one attempt), with capped,
    jittered backoff, until it succeeds, ``max_elapsed`` seconds have passed since its first
    attempt, ``max_attempts`` (if set) have failed, or the tracer's drain deadline passes. With
    the defaults a batch rides out an outage of five minutes, as the OpenTelemetry Collector's
    ``retry_on_failure`` does. Retrying a timed-out attempt makes delivery at-least-once: the
    receiver may have stored the batch whose answer never came.

    Attributes:
        max_attempts: attempts in all, the first included, or None (the default) for no limit
            but ``max_elapsed``; 1 means never retry.
        max_elapsed: the retry window in seconds: no attempt starts later than this after the
            batch's first attempt began (300 s).
        initial_backoff: seconds before the first retry.
        max_backoff: the longest wait between attempts, in seconds (also caps ``retry_after``).
        multiplier: growth of the backoff per attempt.
        jitter: the fraction of each backoff that is randomised (0 = none, 1 = full jitter),
            so that many processes do not retry in step.
    """

    max_attempts: int | None = attrs.field(default=None, validator=_check_attempts)
    initial_backoff: float = attrs.field(default=0.5, validator=_check_positive)
    max_backoff: float = attrs.field(default=30.0, validator=_check_positive)
    multiplier: float = attrs.field(default=2.0, validator=_check_multiplier)
    jitter: float = attrs.field(default=0.2, validator=_check_jitter)
    max_elapsed: float = attrs.field(default=300.0, validator=_check_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_backoff < self.initial_backoff:
            raise ValueError(
                f"max_backoff ({self.max_backoff}) must be >= initial_backoff "
                f"({self.initial_backoff})"
            )

    def backoff(
        self, failures: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before the next attempt.

        Args:
            failures: how many attempts have failed so far (1 after the first failure).
            retry_after: the receiver's requested wait in seconds, which wins over the computed
                backoff (capped at ``max_backoff``).
            rng: the random source for jitter (the module's by default).

        Returns:
            A delay in seconds, between 0 and ``max_backoff``.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        exponent = max(failures - 1, 0)
        # The exponent is capped, and still a large multiplier (1e308 ** 2) overflows a float:
        # the cap makes the exact value irrelevant there.
        try:
            base = self.initial_backoff * self.multiplier ** min(exponent, 64)
        except OverflowError:
            base = math.inf
        base = min(base, self.max_backoff)
        draw = (rng or random).random()
        return base * (1.0 - self.jitter * draw)
