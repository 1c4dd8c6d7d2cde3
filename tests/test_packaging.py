"""What the built distribution says about itself: licence and classifiers.

The metadata checks read the installed distribution (tox installs the wheel built from this
checkout), so they test what a user gets, not the source of ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LICENSE = ROOT / "LICENSE"
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@pytest.fixture
def metadata() -> importlib.metadata.PackageMetadata:
    try:
        return importlib.metadata.metadata("spanlane")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        pytest.skip("spanlane is not installed (tox installs it)")


def test_license_file_is_the_full_mit_text_with_a_copyright_line() -> None:
    text = LICENSE.read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "\nCopyright (c) 2026 spanlane developers\n" in text
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert "The above copyright notice and this permission notice shall be included" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_distribution_ships_the_license_file(metadata: importlib.metadata.PackageMetadata) -> None:
    assert metadata["License-Expression"] == "MIT"
    files = importlib.metadata.files("spanlane") or []
    (shipped,) = [file for file in files if file.name == "LICENSE"]
    assert shipped.read_text(encoding="utf-8") == LICENSE.read_text(encoding="utf-8")


def test_classifiers_name_the_platform_and_every_supported_python(
    metadata: importlib.metadata.PackageMetadata,
) -> None:
    classifiers = metadata.get_all("Classifier") or []
    assert "Operating System :: OS Independent" in classifiers
    versions = [
        classifier.removeprefix("Programming Language :: Python :: ")
        for classifier in classifiers
        if classifier.startswith("Programming Language :: Python :: 3.")
    ]
    assert versions == PYTHONS
    assert metadata["Requires-Python"] == f">={PYTHONS[0]}"
    # PEP 639: with a License-Expression, "License ::" classifiers are deprecated and may be
    # refused by build tools and package indexes.
    assert not [classifier for classifier in classifiers if classifier.startswith("License ::")]
