"""The real catalog's site through the Nu HTML Checker and axe-core (headless Chromium).

These need Java, Node packages (`npm install`: vnu-jar, playwright-core, axe-core) and Debian's chromium.
`.ci/run` installs them and sets LLM_MEMORY_REQUIRE_SITE_TOOLS=1, which turns a missing tool into a failure;
elsewhere the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.cli import main

ROOT = Path(__file__).resolve().parents[1]
VNU = ROOT / "node_modules/vnu-jar/build/dist/vnu.jar"
AXE = ROOT / "tests/site_checks/axe.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("LLM_MEMORY_REQUIRE_SITE_TOOLS") == "1"


def _need(ok: bool, what: str) -> None:
    if not ok:
        if REQUIRED:
            pytest.fail(f"{what} is missing but LLM_MEMORY_REQUIRE_SITE_TOOLS=1")
        pytest.skip(f"{what} is not installed (bash .ci/run installs it)")


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """The real catalog's site, built on first use: a test whose tools are missing skips before paying for it."""
    built: list[Path] = []

    def get() -> Path:
        if not built:
            out = tmp_path_factory.mktemp("real") / "site"
            result = CliRunner().invoke(main, ["build", "--data", str(ROOT / "data"), "--out", str(out), "--quiet",
                                               "--base-url", "https://example.github.io/llm-memory-catalog/"])
            assert result.exit_code == 0, result.output
            built.append(out)
        return built[0]

    return get


def one_page_per_template(site: Path) -> list[Path]:
    """index, 404, methodology-like top-level pages, and the first page of each section folder."""
    pages = sorted(site.glob("*.html"))
    for folder in sorted(p for p in site.iterdir() if p.is_dir()):
        first = sorted(folder.rglob("*.html"))
        if first:
            pages.append(first[0])
    return pages


def test_nu_html_checker_reports_no_errors(real_site: Callable[[], Path]) -> None:
    _need(shutil.which("java") is not None, "java")
    _need(VNU.exists(), "vnu-jar (npm install)")
    proc = subprocess.run(["java", "-Xss8m", "-jar", str(VNU), "--errors-only", "--skip-non-html", "--format", "text",
                           str(real_site())], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[:20000]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_reports_no_violations(real_site: Callable[[], Path], scheme: str) -> None:
    _need(shutil.which("node") is not None, "node")
    _need((ROOT / "node_modules/playwright-core").exists() and (ROOT / "node_modules/axe-core").exists(),
          "playwright-core and axe-core (npm install)")
    _need(Path(CHROMIUM).exists(), "chromium (apt-get install chromium)")
    pages = one_page_per_template(real_site())
    proc = subprocess.run(["node", str(AXE), *map(str, pages)], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env={**os.environ, "CHROMIUM": CHROMIUM})
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads(proc.stdout)
    problems = {page: r[scheme] for page, r in results.items() if r[scheme]}
    assert not problems, json.dumps(problems, indent=1)[:20000]
