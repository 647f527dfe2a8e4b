"""Shared helpers for the site tests: the small fixture catalog and a build into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.site.build import build

FIXTURE = Path(__file__).parent / "fixtures" / "site_catalog"
GOLDEN = Path(__file__).parent / "golden" / "site"
BASE_URL = "https://example.org/llm-memory/"


def build_fixture(out: Path, data: Path = FIXTURE, base_url: str | None = BASE_URL) -> list[str]:
    pages, _ = build(data, out, base_url, repo=data.parent)
    return sorted(pages.files)


def copy_fixture(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
