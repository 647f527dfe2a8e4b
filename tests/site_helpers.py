"""Shared helpers for the site tests: the small fixture catalog and a build into a folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from catalog_helpers import copy_catalog
from generator.site.build import build

FIXTURE = Path(__file__).parent / "fixtures" / "site_catalog"
GOLDEN = Path(__file__).parent / "golden" / "site"
BASE_URL = "https://example.org/llm-memory/"


def copy_fixture(dest: Path) -> Path:
    """The site fixture catalog (with data/'s precisions and workloads) at dest."""
    return copy_catalog(FIXTURE, dest)


def build_fixture(out: Path, data: Path | None = None, base_url: str | None = BASE_URL) -> list[str]:
    """Build the fixture catalog (a temporary copy unless `data` is given). Docs come from
    tests/fixtures, which has none, so the methodology and contributing pages use their placeholders."""
    if data is not None:
        pages, _ = build(data, out, base_url, repo=FIXTURE.parent)
        return sorted(pages.files)
    with tempfile.TemporaryDirectory() as tmp:
        return build_fixture(out, copy_fixture(Path(tmp) / "data"), base_url)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
