"""Display formatting and sanitising: every number the templates print is a string made here."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import markdown
import nh3
from markupsafe import Markup

from ..estimate.scenario import GIB


def gib(n: int | float) -> str:
    v = n / GIB
    if v >= 100:
        return f"{v:,.0f} GiB"
    return f"{v:,.1f} GiB" if v >= 10 else f"{v:.2f} GiB"


def params(n: int) -> str:
    for unit, div in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= div * 0.9995:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 else f"{v:.1f}{unit}" if v >= 10 else f"{v:.2f}{unit}"
    return str(n)


def tokens(n: int) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024:,}k"
    return f"{n:,}"


def pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def model_slug(model_id: str) -> str:
    return model_id.replace("/", "--")


# --------------------------------------------------------------------------------------------------
# Markdown

TAGS = {"p", "a", "em", "strong", "code", "pre", "ul", "ol", "li", "blockquote", "h2", "h3", "h4", "h5", "h6",
        "table", "thead", "tbody", "tr", "th", "td", "br", "hr", "sub", "sup", "dl", "dt", "dd", "span", "abbr",
        "math", "mi", "mn", "mo", "mrow", "msub", "msup", "mfrac", "msqrt", "mtext", "caption", "img"}
ATTRIBUTES = {"a": {"href", "title"}, "h2": {"id"}, "h3": {"id"}, "h4": {"id"}, "h5": {"id"}, "h6": {"id"},
              "th": {"scope", "align", "style"}, "td": {"align", "style"}, "code": {"class"}, "abbr": {"title"},
              "img": {"src", "alt"}, "math": {"display"}}


def _link_filter(docs: dict[str, str]) -> Callable[[str, str, str], str | None]:
    """Keep https/http/mailto and #fragment links; map links to known repository documents onto their
    pages; drop every other relative link (it would point into the repository, not the site)."""
    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if tag == "th" and attr == "style" or tag == "td" and attr == "style":
            m = re.fullmatch(r"text-align:\s*(left|right|center);?", value.strip())
            return f"text-align: {m.group(1)}" if m else None
        if attr not in ("href", "src"):
            return value
        if value.startswith("#"):
            return value
        scheme = urlsplit(value).scheme.lower()
        if scheme in ("https", "http", "mailto"):
            return value
        if scheme:
            return None
        path, _, frag = value.partition("#")
        name = path.rsplit("/", 1)[-1]
        if name in docs:
            return docs[name] + (f"#{frag}" if frag else "")
        return None
    return attribute_filter


def render_markdown(text: str, docs: dict[str, str] | None = None, shift_headings: bool = False) -> Markup:
    """Markdown (tables, fenced code, heading ids) to HTML, sanitised by an allow-list."""
    html = markdown.markdown(text, extensions=["tables", "fenced_code", "toc", "sane_lists"],
                             extension_configs={"toc": {"permalink": False}})
    if shift_headings:  # a document's own <h1> becomes the page title; demote the rest under it
        html = re.sub(r"<(/?)h1([ >])", r"<\1h2\2", html)
    clean = nh3.clean(html, tags=TAGS, attributes={k: set(v) for k, v in ATTRIBUTES.items()},
                      url_schemes={"https", "http", "mailto"}, link_rel="noopener noreferrer",
                      attribute_filter=_link_filter(docs or {}), strip_comments=True)
    return Markup(clean)


def first_heading(text: str) -> str | None:
    m = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.M)
    return m.group(1) if m else None


def safe_url(url: str) -> str | None:
    """An https URL from YAML, or None (the schema only admits https; this is a second line)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname and not any(c.isspace() or ord(c) < 32 for c in url):
        return url
    return None


def short_device(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'RTX 4090'; 'Apple M2 Max (32GB unified memory)' -> 'M2 Max 32GB'."""
    m = re.match(r"(.*?)\s*\((\d+\s*GB)[^)]*\)\s*$", name)
    if m:
        name = f"{m.group(1)} {m.group(2)}"
    name = re.sub(r"\s*\([^)]*\)", "", name)
    return re.sub(r"^(NVIDIA |AMD |Apple |Intel |Google )?(GeForce |Radeon |Tesla |Instinct )?", "", name).strip() or name
