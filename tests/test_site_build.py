"""The site build: golden output, determinism, atomic replacement, and refusal of path clashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from generator.catalog.load import CatalogError
from generator.errors import BuildError
from generator.site.build import Pages, write_site
from site_helpers import BASE_URL, FIXTURE, GOLDEN, build_fixture, copy_fixture, tree

# One page of each template, plus the generated non-HTML files.
GOLDEN_FILES = [
    "index.html", "sort/size-desc.html", "families/qwen3.html", "sizes/under-3b.html", "browse.html",
    "models/Qwen--Qwen3-30B-A3B-Base/index.html", "models/Qwen--Qwen3-30B-A3B-Base/qlora.html",
    "models/meta-llama--Llama-3.2-1B/index.html", "models/meta-llama--Llama-3.2-1B/estimates.csv",
    "devices/index.html", "devices/nvidia-rtx-4090.html", "methodology.html", "validation.html", "404.html",
    "sitemap.xml", "robots.txt",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "site"
    build_fixture(out)
    return out


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden(site: Path, name: str) -> None:
    produced = (site / name).read_bytes()
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(produced)
    assert golden.is_file(), f"no golden file for {name}; run UPDATE_GOLDEN=1 pytest tests/test_site_build.py"
    assert produced.decode() == golden.read_text(encoding="utf-8"), \
        f"{name} differs from {golden}; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff"


def test_expected_pages(site: Path) -> None:
    files = tree(site)
    for name in ("index.html", "404.html", "robots.txt", "sitemap.xml", "style.css", ".nojekyll",
                 "models/Qwen--Qwen3-30B-A3B-Base/estimates.json", "devices/apple-m2-max-32gb.html"):
        assert name in files
    for key in ("name-desc", "size-asc", "size-desc", "memory-asc", "memory-desc", "release-asc", "release-desc"):
        assert f"sort/{key}.html" in files
    assert b'aria-sort="ascending"' in files["index.html"]
    assert b'aria-sort="descending"' in files["sort/size-desc.html"]


def test_deterministic(tmp_path: Path) -> None:
    build_fixture(tmp_path / "a")
    build_fixture(tmp_path / "b")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_base_url_only_in_canonical_og_and_sitemap(tmp_path: Path) -> None:
    build_fixture(tmp_path / "site", base_url=None)
    files = tree(tmp_path / "site")
    assert "sitemap.xml" not in files
    assert not any(b"canonical" in v or b"og:" in v for k, v in files.items() if k.endswith(".html"))
    assert b'href="/index.html"' in files["404.html"]
    with_base = tmp_path / "with"
    build_fixture(with_base)
    files = tree(with_base)
    assert f'<link rel="canonical" href="{BASE_URL}models/Qwen--Qwen3-30B-A3B-Base/">'.encode() in \
        files["models/Qwen--Qwen3-30B-A3B-Base/index.html"]
    assert b'href="/llm-memory/index.html"' in files["404.html"]
    other = [k for k, v in files.items() if k.endswith(".html") and k != "404.html" and b'href="/llm-memory/' in v]
    assert other == []


def test_failed_build_keeps_old_site(tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_fixture(out)
    before = tree(out)
    broken = copy_fixture(tmp_path / "data")
    (broken / "gpus" / "nvidia-rtx-4090.yaml").write_text("id: [unclosed\n")
    with pytest.raises(CatalogError):
        build_fixture(out, data=broken)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "site"]  # no temporary folder left behind


def test_failed_write_keeps_old_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "site"
    build_fixture(out)
    before = tree(out)
    pages = Pages()
    pages.add("index.html", "new")
    real = os.rename

    def failing_rename(src, dst):  # type: ignore[no-untyped-def]
        if Path(src).name.startswith(".site.new-"):
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError):
        write_site(pages, out)
    monkeypatch.undo()
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_two_pages_one_path_refused() -> None:
    pages = Pages()
    pages.add("models/a/index.html", "x")
    with pytest.raises(BuildError, match="two pages"):
        pages.add("models/a/index.html", "y")
    with pytest.raises(BuildError, match="two pages"):
        pages.add("Models/A/index.html", "y")  # would clash on a case-insensitive file system
    with pytest.raises(BuildError):
        pages.add("../escape.html", "y")


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(BuildError, match="not made by llm-memory"):
        build_fixture(out)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_cli_build(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from generator.cli import main

    data = copy_fixture(tmp_path / "data")
    result = CliRunner().invoke(main, ["build", "--data", str(data), "--out", str(tmp_path / "s"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 models, 3 devices" in result.output
    bad = CliRunner().invoke(main, ["build", "--data", str(data), "--out", str(tmp_path / "s"),
                                    "--base-url", "javascript:alert(1)"])
    assert bad.exit_code == 2
