"""Benchmark: build the real catalog's site and report time, pages and size.

Goal (issue 4): a full build of the real catalog in well under a minute on the project's 2-core machines,
and a site far below GitHub Pages' 1 GB limit. Run from the repository root:

    python benchmarks/bench_build.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from generator.cli import main


def run_once(out: Path) -> float:
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["build", "--data", "data", "--out", str(out), "--quiet"])
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return elapsed


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "site"
        for _ in range(args.repeat):
            times.append(run_once(out))
        files = [p for p in out.rglob("*") if p.is_file()]
        pages = sum(1 for p in files if p.suffix == ".html")
        size = sum(p.stat().st_size for p in files)
    print(f"build: median {statistics.median(times):.2f} s over {len(times)} runs (min {min(times):.2f} s)")
    print(f"output: {pages} HTML pages, {len(files)} files, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main_()
