"""Hostile strings in the catalog are escaped or rejected, never executed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.catalog.load import CatalogError
from generator.site.check import check_site
from generator.site.fmt import render_markdown, safe_url
from site_helpers import build_fixture, copy_fixture

MODEL = "models/meta-llama--Llama-3.2-1B.yaml"


def _edit(path: Path, **changes: object) -> None:
    text = path.read_text()
    first, rest = text.split("\n", 1)
    data = yaml.safe_load(rest)
    data.update(changes)
    path.write_text(first + "\n" + yaml.safe_dump(data, sort_keys=False))


def test_hostile_name_and_notes_are_escaped(tmp_path: Path) -> None:
    data = copy_fixture(tmp_path / "data")
    _edit(data / MODEL, name="<script>alert(1)</script>", family='"><img src=x onerror=alert(1)>',
          notes="Click [here](javascript:alert(1)) or [there](data:text/html,x) *now* & 1 < 2", organization="O'Reilly & Sons")
    out = tmp_path / "site"
    build_fixture(out, data=data)
    assert check_site(out) == []
    for path in out.rglob("*.html"):
        text = path.read_text()
        assert "<script" not in text and "javascript:" not in text and "onerror=" not in text.replace("onerror=alert", "")
        assert "<img src=x" not in text
    page = (out / "models" / "meta-llama--Llama-3.2-1B" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "O&#39;Reilly &amp; Sons" in page


def test_raw_html_in_notes_is_rejected_by_the_catalog(tmp_path: Path) -> None:
    data = copy_fixture(tmp_path / "data")
    _edit(data / MODEL, notes='Hello <script>alert(1)</script> <a href="javascript:alert(1)">x</a>')
    with pytest.raises(CatalogError):
        build_fixture(tmp_path / "site", data=data)
    assert not (tmp_path / "site").exists()


def test_javascript_link_is_rejected_by_the_catalog(tmp_path: Path) -> None:
    data = copy_fixture(tmp_path / "data")
    _edit(data / MODEL, links={"model_card": "javascript:alert(1)", "config": "https://example.org/c.json"})
    with pytest.raises(CatalogError):
        build_fixture(tmp_path / "site", data=data)


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "[x](javascript:alert(1))",
    "[x](JAVASCRIPT:alert(1))", '<a href="javascript:alert(1)">x</a>', "<iframe src=https://evil.example/></iframe>",
    '<p style="background:url(javascript:alert(1))">x</p>', "[x](vbscript:msgbox)",
])
def test_markdown_sanitiser(text: str) -> None:
    html = str(render_markdown(text)).lower()
    assert "<script" not in html and "javascript:" not in html and "onerror" not in html
    assert "<iframe" not in html and "vbscript:" not in html and "style=" not in html


def test_markdown_keeps_safe_markup() -> None:
    html = str(render_markdown("A *b* [link](https://example.org) `c`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"))
    assert '<a href="https://example.org" rel="noopener noreferrer">link</a>' in html
    assert "<em>b</em>" in html and "<table>" in html and "<code>c</code>" in html


def test_safe_url() -> None:
    assert safe_url("https://example.org/x") == "https://example.org/x"
    for bad in ("javascript:alert(1)", "http://example.org", "https://exa mple.org", "//evil.example"):
        assert safe_url(bad) is None
