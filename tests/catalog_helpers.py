from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from generator.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ("precisions.yaml", "runtimes.yaml", "workloads.yaml")  # taken from data/, so fixtures never test a stale copy


def copy_catalog(fixture: Path, dest: Path) -> Path:
    """A fixture's models and GPUs plus the project's own precision and workload catalogs, at dest."""
    shutil.copytree(fixture, dest)
    for name in SHARED:
        shutil.copy(ROOT / "data" / name, dest / name)
    return dest


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small valid catalog copied to tmp_path/data, with tmp_path as the working directory."""
    copy_catalog(FIXTURES / "catalog", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"
