"""`llm-memory build` and `llm-memory serve`."""

from __future__ import annotations

import functools
import http.server
from pathlib import Path
from urllib.parse import urlsplit

import click

from ..errors import BuildError, CatalogInvalid


def _check_base_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise click.BadParameter("must be an absolute http(s) URL such as https://user.github.io/repo/")
    return value


def _run_build(data_dir: Path, out: Path, base_url: str | None, quiet: bool) -> None:
    from ..catalog.load import CatalogError
    from .build import build

    echo = None if quiet else (lambda s: click.echo(s, err=True))
    try:
        pages, seconds = build(data_dir, out, base_url, echo)
    except CatalogError as e:
        for p in e.problems:
            click.echo(str(p), err=True)
        raise CatalogInvalid(f"{len(e.problems)} problem(s) in the catalog; nothing was written") from None
    except OSError as e:
        raise BuildError(f"cannot write the site: {e}") from None
    n_html = len(pages.html)
    models = sum(1 for p in pages.html if p.startswith("models/") and p.endswith("/index.html"))
    devices = sum(1 for p in pages.html if p.startswith("devices/") and p != "devices/index.html")
    click.echo(f"Built {n_html} pages ({len(pages.files)} files; {models} models, {devices} devices) "
               f"in {out} in {seconds:.1f} s")


_data = click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("data"),
                     show_default=True, help="Catalog folder.")
_out = click.option("--out", type=click.Path(path_type=Path), default=Path("site"), show_default=True,
                    help="Output folder (replaced as a whole when the build succeeds).")
_base = click.option("--base-url", default=None, callback=_check_base_url,
                     help="Public URL of the site, for canonical links, Open Graph tags and sitemap.xml only.")


@click.command()
@_data
@_out
@_base
@click.option("--quiet", is_flag=True, help="Print only the summary line (for CI).")
def build(data_dir: Path, out: Path, base_url: str | None, quiet: bool) -> None:
    """Build the static site from the catalog."""
    _run_build(data_dir, out, base_url, quiet)


@click.command()
@_data
@_out
@_base
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve(data_dir: Path, out: Path, base_url: str | None, port: int) -> None:
    """Build the site, then serve it on http://127.0.0.1:PORT/ for preview (Ctrl-C stops)."""
    _run_build(data_dir, out, base_url, quiet=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        click.echo(f"Serving {out} at http://127.0.0.1:{port}/ (Ctrl-C to stop)", err=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
