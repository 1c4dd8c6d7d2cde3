"""The exceptions spanlane raises or understands.

::

    SpanlaneError
    └── ExportError                 an exporter could not deliver a batch
        └── RetryableExportError    ... but trying again later may work

Configuration mistakes raise the builtin ``ValueError`` or ``TypeError`` naming the parameter.
"""

from __future__ import annotations


class SpanlaneError(Exception):
    """Base class of spanlane's own exceptions."""


class ExportError(SpanlaneError):
    """An exporter failed to deliver a batch; the batch is dropped as ``EXPORT_FAILED``.

    Exporters may raise any exception for a permanent failure; this class exists so that they can
    say so explicitly and so that users can catch spanlane's failures in one place.
    """


class RetryableExportError(ExportError):
    """A transient export failure: the lane retries the whole batch per its ``RetryPolicy``.

    Args:
        message: what went wrong, for the log.
        retry_after: seconds the receiver asked to wait before the next attempt (for example
            from an HTTP ``Retry-After`` header), or None to use the policy's backoff.
    """

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None and not retry_after >= 0:
            raise ValueError(f"retry_after must be >= 0 seconds, got {retry_after!r}")
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, retry_after={self.retry_after!r})"
