"""Shared fixtures: a temporary lake and settings that point at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from transforms.settings import Settings


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


@pytest.fixture
def settings(lake_root: Path) -> Settings:
    return Settings(root=str(lake_root))
