"""Render every page into memory, then write them to a temporary folder and swap it in."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape as xml_escape

import jinja2
from markupsafe import Markup

from ..errors import BuildError
from ..validation import TOLERANCE
from . import views
from .compute import SiteData
from .fmt import first_heading, model_slug, render_markdown

MARKER = ".llm-memory-site"
def _templates_dir() -> Path:
    """The checkout's templates/ when running from source, else the copy installed as generator.templates."""
    source = Path(__file__).resolve().parents[2] / "templates"
    if (source / "base.html").is_file():
        return source
    return Path(__file__).resolve().parents[1] / "templates"


TEMPLATES = _templates_dir()


class Pages:
    """Path -> bytes; a second page for one path (compared ignoring case) is an error."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._folded: dict[str, str] = {}
        self.html: list[str] = []

    def add(self, path: str, content: str | bytes) -> None:
        if path.startswith("/") or ".." in path.split("/") or not path:
            raise BuildError(f"refusing to write outside the site: {path!r}")
        key = path.casefold()
        if key in self._folded:
            raise BuildError(f"two pages would write {path!r} (also {self._folded[key]!r})")
        self._folded[key] = path
        self.files[path] = content.encode("utf-8") if isinstance(content, str) else content
        if path.endswith(".html"):
            self.html.append(path)


@dataclass
class Context:
    base_url: str | None
    repo: Path  # where docs/methodology.md and CONTRIBUTING.md live


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env


def _root(path: str) -> str:
    return "../" * path.count("/")


def render_site(data: SiteData, ctx: Context) -> Pages:
    env = _env()
    pages = Pages()
    base = (ctx.base_url.rstrip("/") + "/") if ctx.base_url else None
    docs_md = ctx.repo / "docs" / "methodology.md"
    contrib_md = ctx.repo / "CONTRIBUTING.md"
    has_contrib = contrib_md.is_file()

    def page(path: str, template: str, title: str, description: str = "", root: str | None = None,
             nav: str = "", **kw: Any) -> None:
        html = env.get_template(template).render(
            root=_root(path) if root is None else root, title=title, description=description, nav=nav,
            canonical=(base + path.removesuffix("index.html")) if base else None, has_contrib=has_contrib,
            og=bool(base), **kw)
        pages.add(path, html)

    rows = views.index_rows(data)
    by_id = {r.model_id: r for r in rows}
    summary = f"{len(data.models)} models, {len(data.devices)} devices, {len(data.workloads)} workloads"
    for key, _, _ in views.SORTS:
        for direction in ("ascending", "descending"):
            page(views.sort_href(key, direction), "index.html", "Which GPU runs which LLM?",
                 description=f"Memory needed by {summary}: inference, LoRA, QLoRA and full fine-tuning.",
                 nav="index", rows=views.sorted_rows(rows, key, direction),
                 headers=views.sort_headers(key, direction), summary=summary)
    families, sizes = views.groups(data)
    fam_links = [views.Link(name, f"families/{s}.html", str(len(ids))) for s, (name, ids) in families.items()]
    size_links = [views.Link(label, f"sizes/{s}.html", str(len(ids))) for s, (label, ids) in sizes.items()]
    for kind, grouping in (("families", families), ("sizes", sizes)):
        for s, (label, ids) in grouping.items():
            title = f"{label} family" if kind == "families" else f"Models {label[0].lower()}{label[1:]}"
            page(f"{kind}/{s}.html", "group.html", title, nav="index",
                 rows=views.sorted_rows([by_id[i] for i in ids], "size", "ascending"),
                 families=fam_links, sizes=size_links)
    page("browse.html", "browse.html", "Browse by family and size", nav="index", families=fam_links,
         sizes=size_links)

    for mr in data.models:
        slug = model_slug(mr.id)
        base_path = f"models/{slug}/"
        tables = {w.id: views.fit_table(data, mr, w.id) for w in data.workloads}
        fit_nav = [views.Link(w.label, "index.html#fit" if i == 0 else f"{w.id}.html", w.id)
                   for i, w in enumerate(data.workloads) if tables.get(w.id)]
        facts, pfacts = views.model_facts(data, mr)
        heads, dev_rows = views.per_device_table(data, mr)
        off_heads, off_rows = views.offload_table(data, mr)
        f = mr.model.file
        common: dict[str, Any] = dict(model=f, facts=facts, fit_nav=fit_nav, row=by_id[mr.id])
        page(base_path + "index.html", "model.html", f"{f.name}: memory and GPU fit",
             description=f"How much memory {f.name} needs for inference and fine-tuning, and which GPUs run it.",
             nav="index", pfacts=pfacts, notes=render_markdown(f.notes) if f.notes else None,
             breakdowns=views.breakdowns(data, mr), fit=tables[data.workloads[0].id],
             chart=views.context_chart(data, mr), dev_heads=heads, dev_rows=dev_rows,
             off_heads=off_heads, off_rows=off_rows, training=views.training_summaries(data, mr),
             rules=views.rule_blocks(data, mr), traces=views.validation_rows(data, mr.id),
             current=data.workloads[0].id, **common)
        for w in data.workloads[1:]:
            if tables.get(w.id):
                page(base_path + f"{w.id}.html", "fit.html", f"{f.name}: {w.label} on every device", nav="index",
                     fit=tables[w.id], current=w.id, **common)
        js, csv_text = views.downloads(data, mr)
        pages.add(base_path + "estimates.json", js)
        pages.add(base_path + "estimates.csv", csv_text)

    page("validation.html", "validation.html", "Validation against PyTorch", nav="validation",
         description="Every estimate that has a PyTorch trace, beside it.", rows=views.validation_rows(data),
         tolerance=f"±{TOLERANCE:.0%}")

    dev_links = [views.Link(d.name, views.device_href(d.id), views.gib(d.usable)) for d in data.devices]
    page("devices/index.html", "devices.html", "Devices", nav="devices", devices=data.devices, links=dev_links)
    for d in data.devices:
        page(views.device_href(d.id), "device.html", f"{d.name}: which LLMs fit", nav="devices", device=d,
             facts=views.device_facts(d), workloads=views.device_workloads(data, d),
             notes=render_markdown(d.gpu.file.notes) if d.gpu.file.notes else None)

    doc_pages = {"methodology.md": "methodology.html", "CONTRIBUTING.md": "contributing.html",
                 "README.md": "index.html"}
    for src, out, fallback, nav in ((docs_md, "methodology.html", "Methodology", "methodology"),
                                     (contrib_md, "contributing.html", "Contributing", "contributing")):
        if not src.is_file():
            if nav == "contributing":
                continue
            text = "# Methodology\n\nThe methodology has not been written yet.\n"
        else:
            text = src.read_text(encoding="utf-8")
        title = first_heading(text) or fallback
        body = "\n".join(line for line in text.splitlines() if line.strip() != f"# {title}")
        page(out, "doc.html", title, nav=nav,
             body=render_markdown(body, {k: _root(out) + v for k, v in doc_pages.items()}, shift_headings=True))

    base_path = urlsplit(base).path if base else "/"
    # The 404 page is served at any depth, so it carries its styles inline rather than by a link.
    css = (TEMPLATES / "static" / "style.css").read_text(encoding="utf-8")
    if "</" in css:
        raise BuildError("style.css must not contain '</'")
    page("404.html", "404.html", "Page not found", root=base_path if base_path.endswith("/") else base_path + "/",
         inline_css=Markup(css))
    pages.add("style.css", (TEMPLATES / "static" / "style.css").read_bytes())
    pages.add(".nojekyll", b"")
    pages.add(MARKER, b"Built by llm-memory build; this folder is replaced on every build.\n")
    robots = "User-agent: *\nAllow: /\n"
    if base:
        urls = sorted(p.removesuffix("index.html") for p in pages.html if p != "404.html")
        pages.add("sitemap.xml", '<?xml version="1.0" encoding="UTF-8"?>\n'
                  '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                  + "".join(f"  <url><loc>{xml_escape(base + u)}</loc></url>\n" for u in urls) + "</urlset>\n")
        robots += f"Sitemap: {base}sitemap.xml\n"
    pages.add("robots.txt", robots)
    return pages


def write_site(pages: Pages, out: Path) -> None:
    """Write into a fresh folder beside `out`, then swap it in; on any failure the old site stays."""
    out = out.resolve()
    if out.exists():
        if not out.is_dir():
            raise BuildError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise BuildError(f"{out} is not empty and was not made by llm-memory build; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    old: Path | None = None
    try:
        for path in sorted(pages.files):
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(pages.files[path])
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "site")
        os.rename(tmp, out)
    except BaseException:
        if old is not None and (old / "site").exists() and not out.exists():
            os.rename(old / "site", out)  # put the previous site back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build(data_dir: Path, out: Path, base_url: str | None, echo: Callable[[str], None] | None = None,
          repo: Path | None = None) -> tuple[Pages, float]:
    """Docs (docs/methodology.md, CONTRIBUTING.md) are read from `repo`, by default the folder holding `data_dir`."""
    from ..catalog.load import load_catalog
    from .compute import compute

    start = time.perf_counter()
    say = echo or (lambda s: None)
    say(f"Loading the catalog from {data_dir} ...")
    catalog = load_catalog(data_dir)
    say(f"Computing {len(catalog.models)} models x {len(catalog.precisions.catalog.precisions)} precisions x "
        f"{len(catalog.workloads)} workloads against {len(catalog.gpus)} devices ...")

    def progress(i: int, n: int, mid: str) -> None:
        if i == n or i % 10 == 0:
            say(f"  {i}/{n} models")

    data = compute(catalog, progress)
    say("Rendering pages ...")
    pages = render_site(data, Context(base_url, repo or Path(data_dir).resolve().parent))
    say(f"Writing {len(pages.files)} files to {out} ...")
    write_site(pages, out)
    return pages, time.perf_counter() - start
