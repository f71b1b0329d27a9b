"""Shared fixtures."""

from pathlib import Path

import pytest


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary project folder used as the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
