"""The resource: defaults, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME and arguments."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from spanlane import __version__, open_tracer
from spanlane._resource import build_resource, parse_resource_attributes
from spanlane.exporters import MemoryExporter
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def open_tracer_with_memory(**options: Any) -> AsyncIterator[dict[str, object]]:
    """Open a tracer with a memory exporter; yield its resource attributes as a dict."""
    async with open_tracer(MemoryExporter(), **options) as tracer:
        yield dict(tracer.resource.attributes)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


async def test_parse_resource_attributes_decodes_and_skips_malformed_members() -> None:
    parsed = parse_resource_attributes(" a = 1 ,b=x%2Cy%3Dz,noequals,=novalue,,c=, %20k%20 = v ")
    assert parsed == {"a": "1", "b": "x,y=z", "c": "", " k ": "v"}
    assert parse_resource_attributes("") == {}


async def test_default_resource_names_an_unknown_service_and_the_sdk() -> None:
    async with open_tracer_with_memory() as attributes:
        executable = os.path.basename(sys.executable)
        assert attributes == {
            "service.name": f"unknown_service:{executable}",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "spanlane",
            "telemetry.sdk.version": __version__,
        }


async def test_otel_resource_attributes_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=core")
    async with open_tracer_with_memory() as attributes:
        assert attributes["deployment.environment"] == "prod"
        assert attributes["team"] == "core"


async def test_otel_service_name_wins_over_otel_resource_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    async with open_tracer_with_memory() as attributes:
        assert attributes["service.name"] == "from-attributes"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    async with open_tracer_with_memory() as attributes:
        assert attributes["service.name"] == "from-service-name"


async def test_blank_otel_service_name_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "   ")
    async with open_tracer_with_memory() as attributes:
        assert attributes["service.name"] == "from-attributes"


async def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=env-attrs,team=env")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-service")
    async with open_tracer_with_memory(
        resource_attributes={"service.name": "arg-attrs", "team": "arg"}
    ) as attributes:
        assert attributes["service.name"] == "arg-attrs"
        assert attributes["team"] == "arg"
    async with open_tracer_with_memory(
        service_name="arg-service", resource_attributes={"service.name": "arg-attrs"}
    ) as attributes:
        assert attributes["service.name"] == "arg-service"


async def test_every_record_carries_the_tracers_resource() -> None:
    async with capture_spans(service_name="svc") as captured:
        with captured.tracer.span("a"), captured.tracer.span("b"):
            pass
        records = await captured.flush()
    assert {record.resource.service_name for record in records} == {"svc"}
    assert records[0].resource is records[1].resource is captured.tracer.resource


async def test_resource_attribute_values_are_coerced() -> None:
    resource = build_resource(
        resource_attributes={"list": [1, 2], "map": {"a": 1}, "obj": {1, 2}, "none": None},
        environ={},
    )
    assert resource.attributes["list"] == (1, 2)
    assert resource.attributes["map"] == {"a": 1}
    assert resource.attributes["obj"] == "{1, 2}"
    assert "none" not in resource.attributes


async def test_explicit_environ_mapping_is_used_instead_of_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-os")
    resource = build_resource(environ={"OTEL_SERVICE_NAME": "from-mapping"})
    assert resource.service_name == "from-mapping"


@pytest.mark.parametrize("service_name", ["", 5])
async def test_bad_service_name_raises_value_error(service_name: object) -> None:
    with pytest.raises(ValueError, match="service_name"):
        build_resource(service_name=service_name)  # type: ignore[arg-type]
