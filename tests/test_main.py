"""The command line: ``python -m spanlane`` and the ``spanlane`` script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spanlane import __version__
from spanlane.__main__ import main, program_name


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"spanlane {__version__}\n"


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/venv/bin/spanlane", "spanlane"),
        ("spanlane.exe", "spanlane"),
        ("/src/spanlane/__main__.py", "python -m spanlane"),
        ("-m", "python -m spanlane"),
        ("", "python -m spanlane"),
    ],
)
def test_program_name_follows_how_the_command_line_was_started(argv0: str, prog: str) -> None:
    assert program_name(argv0) == prog


@pytest.mark.parametrize(
    ("argv0", "prog"), [("spanlane", "spanlane"), ("__main__.py", "python -m spanlane")]
)
def test_help_names_the_program_and_has_no_rest_markup(
    argv0: str, prog: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    for argv in (["--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: {prog} ")
        assert "``" not in text
    assert main(["demo", "--requests", "-1"]) == 2
    assert capsys.readouterr().err.startswith(f"{prog} demo: ")


def test_python_dash_m_help_says_python_dash_m() -> None:
    result = run(sys.executable, "-m", "spanlane", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m spanlane ")
    version = run(sys.executable, "-m", "spanlane", "--version")
    assert version.stdout == f"spanlane {__version__}\n"


def test_console_script_help_says_spanlane() -> None:
    # The script pip installed next to this interpreter (tox installs the package).
    script = shutil.which("spanlane", path=str(Path(sys.executable).parent))
    if script is None:  # pragma: no cover - run from a checkout without installing
        pytest.skip("the spanlane script is not installed")
    result = run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: spanlane ")


@pytest.mark.usefixtures("without_httpx")
def test_demo_with_otlp_but_without_httpx_says_which_extra_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "spans.jsonl"
    status = main(["demo", "--otlp", "http://127.0.0.1:4318/v1/traces", "--out", str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert 'pip install "spanlane[otlp]"' in err
    assert "Traceback" not in err
    assert not out.exists()  # it stopped before running anything
