"""Checks over a built site: no JavaScript, every internal link and #fragment resolves, no root-relative
links (except in 404.html, which must use absolute ones), and every page is well-formed HTML."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# Elements whose end tag HTML lets you leave out; the templates always close them, so they are checked too.
SVG_SELF_CLOSING_OK = {"path", "rect", "line", "circle", "polyline", "stop"}
URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "poster", "data"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, int]] = []
        self.problems: list[str] = []
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (attribute, url)
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        seen = set()
        for name, value in attrs:
            if name in seen:
                self.problems.append(f"line {line}: <{tag}> repeats attribute {name}")
            seen.add(name)
            if name.startswith("on"):
                self.problems.append(f"line {line}: event handler attribute {name} on <{tag}>")
            if name == "id" and value is not None:
                if value in self.ids:
                    self.problems.append(f"line {line}: duplicate id {value!r}")
                self.ids.add(value)
            if name in URL_ATTRS and value is not None:
                if re.sub(r"[\s\x00-\x1f]", "", value).lower().startswith(("javascript:", "vbscript:", "data:text/html")):
                    self.problems.append(f"line {line}: script URL in {name} of <{tag}>")
                self.links.append((name, value))
            if name == "style" and value and "javascript" in value.lower():
                self.problems.append(f"line {line}: javascript in style")
        if tag in ("script", "iframe", "object", "embed", "applet", "base", "form"):
            self.problems.append(f"line {line}: <{tag}> is not allowed")
        if tag == "meta" and any(n == "http-equiv" and (v or "").lower() == "refresh" for n, v in attrs):
            self.problems.append(f"line {line}: meta refresh")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append((tag, self.getpos()[0]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID and tag not in SVG_SELF_CLOSING_OK:
            self.problems.append(f"line {self.getpos()[0]}: <{tag}/> self-closed")

    def handle_endtag(self, tag: str) -> None:
        line = self.getpos()[0]
        if tag in VOID:
            self.problems.append(f"line {line}: end tag for void element </{tag}>")
            return
        if not self.stack or self.stack[-1][0] != tag:
            open_ = self.stack[-1] if self.stack else None
            self.problems.append(f"line {line}: </{tag}> does not close "
                                 + (f"<{open_[0]}> from line {open_[1]}" if open_ else "anything"))
            if any(t == tag for t, _ in self.stack):
                while self.stack and self.stack.pop()[0] != tag:
                    pass
            return
        self.stack.pop()


def parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    p.close()
    if not p.doctype:
        p.problems.append("missing <!DOCTYPE html>")
    for tag, line in p.stack:
        p.problems.append(f"line {line}: <{tag}> is never closed")
    if "<script" in html.lower():
        p.problems.append("contains '<script'")
    return p


def check_site(root: Path) -> list[str]:
    """Every problem in the built site at `root`, as 'path: message' lines (empty when clean)."""
    root = root.resolve()
    problems: list[str] = []
    pages: dict[str, _Page] = {}
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        page = parse(path.read_text(encoding="utf-8"))
        pages[rel] = page
        problems += [f"{rel}: {m}" for m in page.problems]
    for path in sorted(root.rglob("*.css")):
        text = path.read_text(encoding="utf-8").lower()
        if "javascript:" in text or "expression(" in text or "@import" in text:
            problems.append(f"{path.relative_to(root).as_posix()}: script-like CSS")
    for rel, page in pages.items():
        for attr, url in page.links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # external
            if rel == "404.html":
                if parts.path and not parts.path.startswith("/"):
                    problems.append(f"{rel}: relative link {url!r}; the 404 page needs absolute links")
                continue
            if parts.path.startswith("/"):
                problems.append(f"{rel}: root-relative link {url!r} (breaks under a project path and file://)")
                continue
            joined = rel if not parts.path else (Path(rel).parent / unquote(parts.path)).as_posix()
            target = _normalise(joined)
            if target is None or not (root / target).is_file():
                problems.append(f"{rel}: broken link {url!r}")
                continue
            if parts.path.endswith("/") or (root / target).is_dir():
                problems.append(f"{rel}: link to a folder {url!r} (file:// shows no index.html)")
            if parts.fragment:
                if target not in pages:
                    problems.append(f"{rel}: fragment into a non-HTML file {url!r}")
                elif unquote(parts.fragment) not in pages[target].ids:
                    problems.append(f"{rel}: no id {parts.fragment!r} in {target} ({url!r})")
    return problems


def _normalise(path: str) -> str | None:
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
        else:
            out.append(part)
    return "/".join(out)
