"""Hypothesis profiles and the marker of the fuzz suite.

Two profiles, chosen with the ``HYPOTHESIS_PROFILE`` environment variable (``ci`` by default):

- ``ci``: a bounded, derandomized run without an example database, so that a normal test run is
  quick and reproducible.
- ``fuzz``: thousands of examples with random seeds, for ``tox -e fuzz``; failures are saved in
  Hypothesis's example database (``.hypothesis/``, kept out of git) and replayed first next time.

The profiles apply to the fuzz suite's own tests only (see :data:`fuzz_settings`); other tests
keep whatever Hypothesis settings they choose.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = settings(
    # Examples run real event loops with real (small) timeouts: their duration varies.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile(
    "ci", _COMMON, max_examples=40, derandomize=True, database=None, print_blob=False
)
settings.register_profile("fuzz", _COMMON, max_examples=2000, derandomize=False, print_blob=True)

PROFILES = ("ci", "fuzz")


def fuzz_settings() -> settings:
    """The settings the property tests run with: the profile ``HYPOTHESIS_PROFILE`` names."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return settings.get_profile(name if name in PROFILES else "ci")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz: property-based tests that run whole generated programs (tests/fuzz)"
    )
