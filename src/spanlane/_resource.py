"""Building the :class:`Resource` a tracer reports, from arguments and the OTel environment."""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Any

from ._attributes import coerce_attributes, freeze
from ._records import Resource
from ._version import __version__


def parse_resource_attributes(value: str) -> dict[str, str]:
    """Parse ``OTEL_RESOURCE_ATTRIBUTES`` (``key1=value1,key2=value2``, values percent-encoded).

    Malformed members (no ``=``, an empty key) are skipped, as the OTel specification asks.
    """
    result: dict[str, str] = {}
    for member in value.split(","):
        key, sep, raw = member.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        result[urllib.parse.unquote(key)] = urllib.parse.unquote(raw.strip())
    return result


def build_resource(
    service_name: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resource:
    """Merge the resource from defaults, the environment and arguments, later ones winning.

    Order, weakest first: spanlane's ``telemetry.sdk.*`` attributes and an
    ``unknown_service:<executable>`` service name; ``OTEL_RESOURCE_ATTRIBUTES``;
    ``OTEL_SERVICE_NAME``; the ``resource_attributes`` argument; the ``service_name`` argument.
    """
    env = os.environ if environ is None else environ
    executable = os.path.basename(sys.executable) or "python"
    merged: dict[str, Any] = {
        "service.name": f"unknown_service:{executable}",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "spanlane",
        "telemetry.sdk.version": __version__,
    }
    merged.update(parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    env_service = env.get("OTEL_SERVICE_NAME", "").strip()
    if env_service:
        merged["service.name"] = env_service
    if resource_attributes:
        merged.update(resource_attributes)
    if service_name is not None:
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be a non-empty str, got {service_name!r}")
        merged["service.name"] = service_name
    kept, _ = coerce_attributes(merged, max_count=len(merged), max_length=None)
    return Resource(freeze(kept))
