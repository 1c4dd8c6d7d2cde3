"""The README's two copy-paste commands, and the CI script that runs one of them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

#: A fenced shell block: the language tag, then its body.
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell|console)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_commands() -> list[str]:
    return [body.rstrip("\n") for body in SHELL_BLOCK.findall(README.read_text(encoding="utf-8"))]


def test_readme_has_exactly_two_one_line_commands_each_in_a_virtualenv() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert "\n" not in command
        make_venv, *steps = command.split(" && ")
        assert make_venv == "python3 -m venv .venv"
        # Every later step runs the virtualenv's interpreter, never the system's or a bare pip.
        assert steps
        assert all(step.startswith(".venv/bin/python -m ") for step in steps), steps


def test_readme_demo_command_installs_trio_and_runs_the_demo() -> None:
    demo, _ = readme_commands()
    assert '.venv/bin/python -m pip install ".[trio]"' in demo
    assert demo.endswith(".venv/bin/python -m spanlane demo")


def test_readme_test_command_is_what_ci_runs() -> None:
    _, tests = readme_commands()
    assert tests.endswith(".venv/bin/python -m tox")
    ci_lines = [
        line
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ci_lines[-1] == tests
    # Everything before it only sets the shell up and goes to the repository root.
    assert ci_lines[:-1] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."']
