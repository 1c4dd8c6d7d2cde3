"""Configuration of the OTLP exporter from arguments and the OTLP environment variables.

Precedence, strongest first: the constructor argument, the per-signal variable
(``OTEL_EXPORTER_OTLP_TRACES_*``), the general variable (``OTEL_EXPORTER_OTLP_*``), the default.
An environment value that cannot be parsed is logged and ignored, as the OpenTelemetry
specification asks; a bad argument raises ``ValueError``.
"""

from __future__ import annotations

import logging
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Literal

import attrs

logger = logging.getLogger("spanlane")

Encoding = Literal["protobuf", "json"]
Compression = Literal["gzip"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_TIMEOUT = 10.0
TRACES_PATH = "v1/traces"

_PROTOCOLS: dict[str, Encoding] = {"http/protobuf": "protobuf", "http/json": "json"}
# RFC 9110 token characters, for header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_VALUE_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@attrs.frozen
class OTLPConfig:
    """The resolved settings of one exporter.

    Attributes:
        endpoint: the full URL spans are POSTed to.
        headers: extra request headers; never shown by ``repr``.
        encoding: ``"protobuf"`` or ``"json"``.
        compression: ``"gzip"`` or None.
        timeout: seconds one export call may take, all its requests together.
    """

    endpoint: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    encoding: Encoding
    compression: Compression | None
    timeout: float


def _env(environ: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """The per-signal variable if set, else the general one: ``(name, value)``, or None."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def check_endpoint(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise ``ValueError``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint must be an absolute http:// or https:// URL, got {url!r}")
    return url


def redact_url(url: str) -> str:
    """``url`` without credentials (``user:password@``) or query string, for logs and reprs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _resolve_endpoint(endpoint: str | None, environ: Mapping[str, str]) -> str:
    if endpoint is not None:
        return check_endpoint(endpoint)
    # The per-signal variable is the full URL; the general one is a base to which the signal's
    # path is appended (OTLP exporter specification, "Endpoint URLs for OTLP/HTTP").
    for name, per_signal in (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", True),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", False),
    ):
        value = environ.get(name, "").strip()
        if not value:
            continue
        url = value if per_signal else value.rstrip("/") + "/" + TRACES_PATH
        try:
            return check_endpoint(url)
        except ValueError:
            logger.warning("spanlane: ignoring %s: not an http(s) URL", name)
    return DEFAULT_ENDPOINT


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Validate header names and values; errors name the header, never show its value."""
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if not isinstance(value, str) or _FORBIDDEN_VALUE_CHARACTERS.search(value):
            raise ValueError(f"invalid value for HTTP header {name!r} (value not shown)")
        checked[name] = value
    return checked


def parse_headers(value: str) -> dict[str, str]:
    """Parse an ``OTEL_EXPORTER_OTLP_*HEADERS`` value: ``key1=value1,key2=value2``.

    The format is a W3C Baggage list: members separated by commas, values percent-encoded.
    Malformed members are skipped and logged by name only: the values are secrets.
    """
    headers: dict[str, str] = {}
    for member in value.split(","):
        if not member.strip():
            continue
        key, sep, raw = member.partition("=")
        key = key.strip()
        decoded = urllib.parse.unquote(raw.strip())
        if not sep or not _TOKEN.fullmatch(key) or _FORBIDDEN_VALUE_CHARACTERS.search(decoded):
            logger.warning("spanlane: skipping a malformed OTLP header entry (%r)", key[:40])
            continue
        headers[key] = decoded
    return headers


def _resolve_headers(
    headers: Mapping[str, str] | None, environ: Mapping[str, str]
) -> dict[str, str]:
    if headers is not None:
        return check_headers(headers)
    # A per-signal variable replaces the general one entirely; they are not merged.
    found = _env(environ, "HEADERS")
    return parse_headers(found[1]) if found else {}


def _resolve_encoding(encoding: str | None, environ: Mapping[str, str]) -> Encoding:
    if encoding is not None:
        if encoding not in ("protobuf", "json"):
            raise ValueError(f"encoding must be 'protobuf' or 'json', got {encoding!r}")
        return "json" if encoding == "json" else "protobuf"
    found = _env(environ, "PROTOCOL")
    if found:
        name, value = found
        if value in _PROTOCOLS:
            return _PROTOCOLS[value]
        logger.warning(
            "spanlane: ignoring %s=%r: this exporter speaks http/protobuf and http/json",
            name,
            value,
        )
    return "protobuf"


def _resolve_compression(
    compression: object, environ: Mapping[str, str], unset: object
) -> Compression | None:
    if compression is not unset:
        if compression is None or compression == "none":
            return None
        if compression == "gzip":
            return "gzip"
        raise ValueError(f"compression must be 'gzip' or None, got {compression!r}")
    found = _env(environ, "COMPRESSION")
    if found:
        name, value = found
        if value.lower() == "gzip":
            return "gzip"
        if value.lower() == "none":
            return None
        logger.warning("spanlane: ignoring %s=%r: expected 'gzip' or 'none'", name, value)
    return "gzip"


def _resolve_timeout(timeout: float | None, environ: Mapping[str, str]) -> float:
    if timeout is not None:
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return float(timeout)
    found = _env(environ, "TIMEOUT")
    if found:
        name, value = found
        # The variables are in milliseconds (OTLP exporter specification).
        try:
            milliseconds = float(value)
        except ValueError:
            milliseconds = math.nan
        if math.isfinite(milliseconds) and milliseconds > 0:
            return milliseconds / 1000.0
        logger.warning("spanlane: ignoring %s=%r: expected a positive number of ms", name, value)
    return DEFAULT_TIMEOUT


def resolve_config(
    *,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    encoding: str | None,
    compression: object,
    timeout: float | None,
    environ: Mapping[str, str],
    unset: object,
) -> OTLPConfig:
    """Merge arguments, environment and defaults into an :class:`OTLPConfig`.

    Args:
        endpoint: full URL, or None to consult the environment.
        headers: request headers, or None to consult the environment.
        encoding: ``"protobuf"``, ``"json"``, or None to consult ``OTEL_EXPORTER_OTLP_PROTOCOL``.
        compression: ``"gzip"``, None (no compression), or ``unset`` to consult the environment.
        timeout: seconds, or None to consult the environment (milliseconds there).
        environ: the environment to read.
        unset: the sentinel meaning "compression was not given".

    Raises:
        ValueError: an argument is invalid.
    """
    return OTLPConfig(
        endpoint=_resolve_endpoint(endpoint, environ),
        headers=_resolve_headers(headers, environ),
        encoding=_resolve_encoding(encoding, environ),
        compression=_resolve_compression(compression, environ, unset),
        timeout=_resolve_timeout(timeout, environ),
    )
