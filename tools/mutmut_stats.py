"""pytest plugin for `mutmut run` (see [tool.mutmut] in pyproject.toml): give import-time calls to tests.

mutmut runs, for each mutant, only the tests that called the mutated function while it recorded its
statistics. A call made while a test module is imported - ``PRECISIONS = parse_precision_catalog(...)``
at the top of tests/test_estimate.py - is recorded before any test starts, so mutmut credits it to the
first test alone, and a mutant of such a function is checked against that one test. This plugin
credits those calls to every test of the module that made them. It does nothing outside mutmut's
statistics run (MUTANT_UNDER_TEST=stats).
"""

from __future__ import annotations

import os

import pytest

_hits_by_module: dict[str, set[str]] = {}


def _collecting_stats() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if not _collecting_stats() or not report.nodeid.endswith(".py"):
        return
    from mutmut.state import state  # only importable under mutmut

    _hits_by_module[report.nodeid] = set(state()._stats)  # functions called while importing this module
    state()._stats.clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not _collecting_stats():
        return
    from mutmut.state import state

    for item in items:
        for function in _hits_by_module.get(item.nodeid.split("::")[0], ()):
            state().tests_by_mangled_function_name[function].add(item.nodeid)
