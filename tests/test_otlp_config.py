"""OTLPExporter configuration: arguments, OTLP environment variables, defaults."""

from __future__ import annotations

import logging

import pytest

from spanlane.exporters._otlp_config import parse_headers, redact_url
from spanlane.exporters.otlp import OTLPExporter, parse_retry_after

_VARIABLES = [
    f"OTEL_EXPORTER_OTLP_{signal}{name}"
    for signal in ("", "TRACES_")
    for name in ("ENDPOINT", "HEADERS", "COMPRESSION", "TIMEOUT", "PROTOCOL")
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment without OTLP variables."""
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_without_arguments_or_environment() -> None:
    exporter = OTLPExporter()
    assert exporter.endpoint == "http://localhost:4318/v1/traces"
    assert exporter.encoding == "protobuf"
    assert exporter.compression == "gzip"
    assert exporter.timeout == 10.0
    assert exporter.header_names == ()
    assert exporter.max_request_bytes == 4 * 1024 * 1024
    assert exporter.wants_starts is False


def test_general_endpoint_gets_the_traces_path_appended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")
    assert OTLPExporter().endpoint == "https://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/base/")
    assert OTLPExporter().endpoint == "https://collector:4318/base/v1/traces"


def test_endpoint_precedence_argument_then_signal_then_general(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://signal:4318/custom")
    # The per-signal URL is used exactly as given.
    assert OTLPExporter().endpoint == "http://signal:4318/custom"
    assert OTLPExporter("http://arg:1/x").endpoint == "http://arg:1/x"


def test_headers_precedence_and_percent_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "general=1")
    assert OTLPExporter().header_names == ("general",)
    # The per-signal variable replaces the general one; the two are not merged.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=a%20b%3Dc, x-team = blue ")
    assert OTLPExporter().header_names == ("api-key", "x-team")
    assert OTLPExporter(headers={"arg": "v"}).header_names == ("arg",)
    assert parse_headers("api-key=a%20b%3Dc, x-team = blue ") == {
        "api-key": "a b=c",
        "x-team": "blue",
    }


def test_malformed_header_entries_are_skipped_and_logged_without_values(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "good=ok,novalue,bad key=SECRET1,=SECRET2")
    with caplog.at_level(logging.WARNING, logger="spanlane"):
        exporter = OTLPExporter()
    assert exporter.header_names == ("good",)
    assert "SECRET" not in caplog.text
    assert len(caplog.records) == 3


def test_compression_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
    assert OTLPExporter().compression is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    assert OTLPExporter().compression == "gzip"
    assert OTLPExporter(compression=None).compression is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")
    assert OTLPExporter(compression="gzip").compression == "gzip"


def test_timeout_environment_is_in_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    assert OTLPExporter().timeout == 2.5
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "750")
    assert OTLPExporter().timeout == 0.75
    assert OTLPExporter(timeout=3).timeout == 3.0


def test_protocol_variable_chooses_the_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    assert OTLPExporter().encoding == "json"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert OTLPExporter().encoding == "protobuf"
    assert OTLPExporter(encoding="json").encoding == "json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
    ],
)
def test_invalid_environment_values_are_logged_and_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="spanlane"):
        exporter = OTLPExporter()
    assert name in caplog.text
    monkeypatch.delenv(name)
    assert repr(exporter) == repr(OTLPExporter())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint": "ftp://collector/v1/traces"},
        {"endpoint": "/v1/traces"},
        {"encoding": "xml"},
        {"compression": "brotli"},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"max_request_bytes": 10},
        {"headers": {"bad header": "v"}},
        {"headers": {"x-key": "line\nbreak"}},
    ],
)
def test_invalid_arguments_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        OTLPExporter(**kwargs)  # type: ignore[arg-type]


def test_a_bad_header_value_is_not_shown_in_the_error() -> None:
    with pytest.raises(ValueError, match="x-key") as caught:
        OTLPExporter(headers={"x-key": "SECRET\r\n"})
    assert "SECRET" not in str(caught.value)


def test_client_must_be_an_httpx_async_client() -> None:
    with pytest.raises(TypeError, match="AsyncClient"):
        OTLPExporter(client=object())  # type: ignore[arg-type]


def test_repr_shows_header_names_and_hides_values_and_credentials() -> None:
    exporter = OTLPExporter(
        "https://user:PASSWORD@collector:4318/v1/traces?token=QUERYSECRET",
        headers={"Authorization": "Bearer TOKEN123", "x-api-key": "KEY456"},
    )
    text = repr(exporter)
    assert "Authorization" in text
    assert "x-api-key" in text
    for secret in ("TOKEN123", "KEY456", "PASSWORD", "QUERYSECRET"):
        assert secret not in text
    assert "https://collector:4318/v1/traces" in text


def test_redact_url_keeps_scheme_host_port_and_path() -> None:
    assert redact_url("http://u:p@[::1]:99/a/b?q=1#f") == "http://[::1]:99/a/b"
    assert redact_url("https://host/x") == "https://host/x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("not a date", None),
        ("-3", None),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: no wait
        ("99999999999", 86_400.0),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(
    value: str | None, expected: float | None
) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(value, now=now) == expected
