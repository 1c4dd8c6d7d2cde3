"""Lane options: one validated object per lane, and :func:`lane` to give a lane its own.

The tracer's keyword arguments (``open_tracer(buffer_size=..., ...)``) are the defaults of every
lane; ``spanlane.lane(exporter, buffer_size=...)`` overrides only the fields it names, for that
lane. Validation happens here and nowhere else: each field when it is given, and the combination
(``max_batch_size <= buffer_size``) once the lane's options are complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from ._retry import RetryPolicy
from ._validate import positive_seconds

__all__ = ["LaneOptions", "LaneSpec", "OnFull", "lane"]

OnFull = Literal["drop", "wait"]


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive int, got {value!r}")


def _positive_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    positive_seconds(attribute.name, value)


def _positive_int_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or value <= 0):
        raise ValueError(f"{attribute.name} must be None or a positive int, got {value!r}")


def _on_full(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not str or value not in ("drop", "wait"):
        raise ValueError(f"on_full must be 'drop' or 'wait', got {value!r}")


def _retry(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {value!r}")


@attrs.frozen(kw_only=True)
class LaneOptions:
    """How one lane buffers, batches and exports. Every field is validated when set.

    Attributes:
        buffer_size: records the lane's stream holds at most.
        max_batch_size: records per export call at most; a full batch is exported at once.
            Must not exceed ``buffer_size``.
        flush_interval: seconds a record may wait for its batch to fill before it is exported.
        on_full: what a full lane does with a new record: ``"drop"`` drops it (and counts it);
            ``"wait"`` makes a span ended by ``async with`` (or ``await span.aend()``) wait up
            to ``wait_timeout`` for room, then drop. A span ended synchronously never waits.
        wait_timeout: seconds an async span end may wait for room, with ``on_full="wait"``.
        export_timeout: seconds one export attempt may take; an attempt that runs out of time
            is retried (see ``retry``), as a ``RetryableExportError`` is.
        retry: the retry policy (attempts, backoff, and the retry window ``max_elapsed``).
        max_concurrent_exports: batches the lane exports at once. None (the default) takes what
            the exporter declares (its ``max_concurrent_exports``: 4 for the OTLP exporter),
            else 1. Batches are formed and started in order either way; with 1 they also
            finish in order. With more, an end record is never sent before the batch holding
            its span's start record (for exporters that want starts) has been exported or
            dropped.
        max_buffer_bytes: the most memory, in bytes by a cheap estimate, that the lane's
            records (queued and in flight) may hold; a record that would exceed it is dropped
            as ``QUEUE_FULL``. None (the default): bounded by ``buffer_size`` only.

    Raises:
        ValueError: a value is out of range (or of the wrong kind for a number), or
            ``max_batch_size > buffer_size``.
        TypeError: ``retry`` is not a :class:`~spanlane.RetryPolicy`.
    """

    buffer_size: int = attrs.field(default=2048, validator=_positive_int)
    max_batch_size: int = attrs.field(default=512, validator=_positive_int)
    flush_interval: float = attrs.field(default=1.0, validator=_positive_seconds)
    on_full: OnFull = attrs.field(default="drop", validator=_on_full)
    wait_timeout: float = attrs.field(default=1.0, validator=_positive_seconds)
    export_timeout: float = attrs.field(default=10.0, validator=_positive_seconds)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, validator=_retry)
    max_concurrent_exports: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    max_buffer_bytes: int | None = attrs.field(default=None, validator=_positive_int_or_none)

    def __attrs_post_init__(self) -> None:
        if self.max_batch_size > self.buffer_size:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) must not exceed buffer_size "
                f"({self.buffer_size})"
            )

    def updated(self, overrides: Mapping[str, Any]) -> LaneOptions:
        """These options with ``overrides`` applied (validated again as a whole)."""
        return attrs.evolve(self, **overrides) if overrides else self


def _check_field(name: str, value: object) -> None:
    field = getattr(attrs.fields(LaneOptions), name)
    if field.validator is not None:
        field.validator(None, field, value)


_FIELDS = frozenset(field.name for field in attrs.fields(LaneOptions))


@attrs.frozen
class LaneSpec:
    """An exporter with the lane options that differ from the tracer's; made by :func:`lane`.

    Attributes:
        exporter: the exporter at the end of the lane.
        overrides: the options this lane sets itself (read-only).
    """

    exporter: object
    overrides: Mapping[str, Any] = attrs.field(factory=lambda: MappingProxyType({}))

    def options(self, defaults: LaneOptions) -> LaneOptions:
        """The lane's complete options: ``defaults`` with this lane's own fields applied."""
        return defaults.updated(self.overrides)


def lane(exporter: object, **options: Any) -> LaneSpec:
    """An exporter with options of its own, to pass to :func:`spanlane.open_tracer`.

    ``open_tracer(fast, lane(slow, buffer_size=100_000, export_timeout=60))`` gives the second
    exporter a bigger buffer and a longer timeout; everything else comes from the tracer's
    keyword arguments.

    Args:
        exporter: the exporter (an instance).
        **options: any :class:`LaneOptions` fields.

    Raises:
        TypeError: an unknown option, or ``retry`` that is not a ``RetryPolicy``.
        ValueError: an option's value is invalid.
    """
    unknown = sorted(set(options) - _FIELDS)
    if unknown:
        raise TypeError(f"lane() got unknown option(s): {', '.join(unknown)}")
    for name, value in options.items():
        _check_field(name, value)
    return LaneSpec(exporter, MappingProxyType(dict(options)))
