"""The suite tests this checkout: the generator/, templates/ and data/ beside tests/, never an installed copy.

`pip install .` puts a copy of generator/ in site-packages; pytest's `pythonpath = ["."]` (pyproject.toml) puts
the checkout first on sys.path, so an edit to a formula here is what the tests exercise, without reinstalling."""

from __future__ import annotations

from pathlib import Path

import generator
from generator.site import build

ROOT = Path(__file__).resolve().parents[1]


def test_generator_is_imported_from_this_checkout() -> None:
    assert Path(generator.__file__).resolve() == ROOT / "generator" / "__init__.py"


def test_templates_are_read_from_this_checkout() -> None:
    assert build.TEMPLATES == ROOT / "templates"
