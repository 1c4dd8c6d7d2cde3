"""OpenTelemetry HTTP semantic conventions shared by the ASGI and httpx integrations.

Attribute names follow the stable HTTP span conventions (semconv 1.23 and later):
``http.request.method``, ``url.path``, ``http.response.status_code``, ``error.type``, ...
Only what both integrations need lives here: method normalisation, query redaction, and the
rules that turn a status code into an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The methods of RFC 9110 plus PATCH (RFC 5789): what semconv calls "known" by default.
DEFAULT_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
#: Environment variable that replaces the known methods (a comma-separated, case-sensitive list).
KNOWN_METHODS_ENV = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"

#: Query keys whose values semconv asks instrumentations to redact by default.
REDACTED_QUERY_KEYS = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})
REDACTED = "REDACTED"

# Attribute names, spelled once.
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL = "http.request.method_original"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_FULL = "url.full"
URL_PATH = "url.path"
URL_QUERY = "url.query"
URL_SCHEME = "url.scheme"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
USER_AGENT_ORIGINAL = "user_agent.original"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
ERROR_TYPE = "error.type"

DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def known_methods() -> frozenset[str]:
    """The known HTTP methods: ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` or the default set."""
    value = os.environ.get(KNOWN_METHODS_ENV, "").strip()
    if not value:
        return DEFAULT_KNOWN_METHODS
    return frozenset(method.strip() for method in value.split(",") if method.strip())


def method_attributes(method: str, known: frozenset[str], attributes: dict[str, object]) -> str:
    """Add ``http.request.method`` (and ``_original`` when normalised) to ``attributes``.

    Returns:
        The ``{method}`` part of the span name: the method itself, or ``"HTTP"`` for a method
        outside ``known`` (recorded as ``_OTHER``, as the conventions require).
    """
    if method in known:
        attributes[HTTP_REQUEST_METHOD] = method
        return method
    upper = method.upper()
    if upper in known:
        # A canonical equivalent exists: record it, and the original spelling as well.
        attributes[HTTP_REQUEST_METHOD] = upper
        attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
        return upper
    attributes[HTTP_REQUEST_METHOD] = "_OTHER"
    attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
    return "HTTP"


def redact_query(query: str) -> str:
    """Replace the values of well-known signature keys in a query string with ``REDACTED``."""
    if not any(key in query for key in REDACTED_QUERY_KEYS):
        return query
    parts = query.split("&")
    for index, part in enumerate(parts):
        key, sep, _ = part.partition("=")
        if sep and key in REDACTED_QUERY_KEYS:
            parts[index] = f"{key}={REDACTED}"
    return "&".join(parts)


def server_status_is_error(status: int) -> bool:
    """For a SERVER span: 5xx, and codes outside 100-599, are errors; 4xx are the client's."""
    return not 100 <= status < 500


def client_status_is_error(status: int) -> bool:
    """For a CLIENT span: 4xx and 5xx, and codes outside 100-599, are errors."""
    return not 100 <= status < 400


def protocol_version(value: object) -> str | None:
    """Normalise ``"HTTP/1.1"``, ``b"HTTP/2"`` or ``"1.1"`` to the semconv form (``"1.1"``)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or not value:
        return None
    if value.upper().startswith("HTTP/"):
        value = value[5:]
    return value
