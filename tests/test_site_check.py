"""Site checks over every page of the fixture build, and the checker catching what it must."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.site.check import check_site, parse
from site_helpers import build_fixture


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("check") / "site"
    build_fixture(out)
    return out


def test_every_page_is_clean(site: Path) -> None:
    assert check_site(site) == []


def test_no_javascript_anywhere(site: Path) -> None:
    for path in site.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".css", ".xml", ".txt"):
            text = path.read_text(encoding="utf-8").lower()
            assert "<script" not in text and "javascript:" not in text, path


def test_tables_and_charts_are_accessible(site: Path) -> None:
    html = (site / "models" / "Qwen--Qwen3-30B-A3B-Base" / "index.html").read_text()
    assert html.count("<table") == html.count("<caption")
    assert html.count('role="region" tabindex="0" aria-labelledby=') >= 5
    assert html.count('role="img"') == html.count("<svg") and html.count("<title") >= html.count("<svg") + 1
    assert 'scope="col"' in html and 'scope="row"' in html


def _page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"


@pytest.mark.parametrize("body, problem", [
    ('<script>alert(1)</script>', "<script> is not allowed"),
    ('<a href="x" onclick="alert(1)">x</a>', "event handler"),
    ('<a href=" JavaScript:alert(1)">x</a>', "script URL"),
    ('<div><p>unclosed</div>', "does not close"),
    ('<p id="a"></p><p id="a"></p>', "duplicate id"),
])
def test_checker_catches(body: str, problem: str) -> None:
    assert any(problem in p for p in parse(_page(body)).problems)


def test_checker_catches_links(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(_page('<a href="sub/page.html#there">ok</a><a href="/abs.html">r</a>'
                                               '<a href="missing.html">m</a><a href="sub/page.html#nowhere">f</a>'
                                               '<a href="sub/">d</a><a href="https://example.org/">ext</a>'))
    (tmp_path / "sub" / "page.html").write_text(_page('<p id="there">x</p><a href="../index.html">up</a>'))
    problems = check_site(tmp_path)
    assert any("root-relative" in p for p in problems)
    assert any("broken link 'missing.html'" in p for p in problems)
    assert any("no id 'nowhere'" in p for p in problems)
    assert any("'sub/'" in p for p in problems)
    assert len(problems) == 4
