"""Shared fixtures; tests in sub-folders (tests/faults) import ``helpers`` from here."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary project folder used as the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
