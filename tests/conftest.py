from __future__ import annotations

import sys

import pytest


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on both backends."""
    return str(request.param)


@pytest.fixture
def without_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import httpx`` fail as it does where httpx is not installed.

    ``None`` in ``sys.modules`` makes the import system raise ``ModuleNotFoundError``; the OTLP
    exporter's module is forgotten too (by ``sys.modules`` and by its package), so that
    importing it runs its imports again. All is restored after the test.
    """
    import spanlane.exporters

    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delitem(sys.modules, "spanlane.exporters.otlp", raising=False)
    monkeypatch.delattr(spanlane.exporters, "otlp", raising=False)
