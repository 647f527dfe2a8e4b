"""Mutation testing of the estimator, for what mutmut cannot reach, plus a readable mutmut summary.

    python tools/mutation.py run [--jobs 2] [--timeout S] [--match TEXT] [--list]
    python tools/mutation.py report        # after `mutmut run`: score and survivors with file:line

`run` makes one mutant at a time of
  * data/precisions.yaml: every number n -> n+1 and n-1 (the numerator of a fraction "a/b" +-1); each
    rule of each precision deleted, each key of a rule (`names`, `groups`, `dims`, `when`) deleted,
    and each item of a rule's list with more than one item deleted;
  * the code of generator/estimate/*.py that mutmut leaves alone - module-level constants and tables
    (`_PER_PARAM`, `CONDITIONS`' lambdas, `_DEFAULTS`, ...), class-body defaults and decorated
    functions (`@property`): numbers +-1, comparisons (`<` <-> `<=`, `==` <-> `!=`, ...), arithmetic
    (`+` <-> `-`, `*` <-> `/`, `//` -> `/`) and `and` <-> `or`;
runs the estimator tests (mutmut's pytest_add_cli_args_test_selection in pyproject.toml) against each
mutant in a private copy of the repository - the real files are never edited - and prints
killed / total and the survivors, also written to .mutation/.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".mutation"
YAML_FILES = ("data/precisions.yaml",)
CODE_GLOB = "generator/estimate/*.py"
COPY_IGNORE = shutil.ignore_patterns(".git", "mutants", ".mutation", "node_modules", "site", ".site-*",
                                     "__pycache__", ".pytest_cache", ".hypothesis")


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository root
    line: int
    what: str
    make: Callable[[], str]  # the mutated file's text


# --- data/precisions.yaml -------------------------------------------------------------------------

_FRACTION = re.compile(r"(\d+)/(\d+)")


def _numbers(value: str, tag: str) -> list[str]:
    if tag.endswith(":int"):
        n = int(value)
        return [str(n + 1), str(n - 1)]
    if tag.endswith(":float"):
        x = float(value)
        return [repr(x + 1), repr(x - 1)]
    if m := _FRACTION.fullmatch(value):
        a, b = int(m[1]), int(m[2])
        return [f"{a + 1}/{b}", f"{a - 1}/{b}"]
    return []


def yaml_mutants(rel: str) -> Iterator[Mutant]:
    """Numbers anywhere in the file; rules, their keys and list items under precisions.*.rules."""
    root = yaml.compose((ROOT / rel).read_text(encoding="utf-8"))

    def line(node: yaml.Node) -> int:
        return node.start_mark.line + 1

    def mutant(node: yaml.Node, what: str, edit: Callable[[], Callable[[], None]]) -> Mutant:
        def make() -> str:
            undo = edit()
            try:
                return yaml.serialize(root)
            finally:
                undo()
        return Mutant(rel, line(node), what, make)

    def replace(node: yaml.ScalarNode, new: str) -> Callable[[], Callable[[], None]]:
        def edit() -> Callable[[], None]:
            old, node.value = node.value, new
            return lambda: setattr(node, "value", old)
        return edit

    def remove(items: list[Any], i: int) -> Callable[[], Callable[[], None]]:  # sequence items or mapping pairs
        def edit() -> Callable[[], None]:
            item = items.pop(i)
            return lambda: items.insert(i, item)
        return edit

    def numbers(node: yaml.Node, where: str) -> Iterator[Mutant]:
        if isinstance(node, yaml.ScalarNode):
            for new in _numbers(node.value, node.tag):
                yield mutant(node, f"{where}: {node.value} -> {new}", replace(node, new))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                yield from numbers(item, f"{where}[{i}]")
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                yield from numbers(value, f"{where}.{key.value}".lstrip("."))

    def get(node: yaml.Node, key: str) -> Any:  # a mapping node's value node, or None
        return next((v for k, v in node.value if k.value == key), None)

    assert isinstance(root, yaml.MappingNode), f"{rel} is not a mapping"
    yield from numbers(root, "")
    for pid_node, spec in get(root, "precisions").value:
        rules = get(spec, "rules")
        for i, rule in enumerate(rules.value if rules is not None else []):
            where = f"precisions.{pid_node.value}.rules[{i}]"
            flow = yaml.serialize(rule, width=10**6).strip()
            yield mutant(rule, f"{where} deleted: {flow}", remove(rules.value, i))
            for j, (key, value) in enumerate(rule.value):
                if key.value == "type":
                    continue
                yield mutant(key, f"{where}.{key.value} deleted", remove(rule.value, j))
                # Deleting the only item of a list is the same as deleting the key.
                if isinstance(value, yaml.SequenceNode) and len(value.value) > 1:
                    for k, item in enumerate(value.value):
                        yield mutant(item, f"{where}.{key.value}[{k}] deleted: {item.value}", remove(value.value, k))


# --- generator/estimate/*.py: what mutmut does not mutate -----------------------------------------

_SWAP: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.And: ast.Or, ast.Or: ast.And,
}


def _mutmut_mutates(stmt: ast.stmt) -> bool:
    """mutmut 3 mutates only functions and methods without decorators (other than static/classmethod)."""
    return isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and all(
        isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod") for d in stmt.decorator_list)


def _outside_mutmut(tree: ast.Module) -> Iterator[ast.stmt]:
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            yield from (s for s in stmt.body if not _mutmut_mutates(s))
        elif not _mutmut_mutates(stmt) and not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt


def _nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node`, skipping annotations and decorators (evaluated, but never numbers here)."""
    yield node
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns", "decorator_list"):
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield from _nodes(child)


def _number(node: ast.AST) -> int | float | None:
    """The value of a numeric literal (True and False are not numbers here)."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return cast("int | float", node.value)
    return None


def code_mutants(rel: str) -> Iterator[Mutant]:
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))

    def change(node: ast.AST, attr: str, new: object, index: int | None = None) -> Callable[[], str]:
        def make() -> str:
            old = getattr(node, attr)
            setattr(node, attr, old[:index] + [new] + old[index + 1:] if index is not None else new)
            try:
                return ast.unparse(tree) + "\n"
            finally:
                setattr(node, attr, old)
        return make

    for stmt in _outside_mutmut(tree):
        for node in _nodes(stmt):
            line = getattr(node, "lineno", stmt.lineno)
            if (value := _number(node)) is not None:
                for new in (value + 1, value - 1):
                    yield Mutant(rel, line, f"{value!r} -> {new!r}", change(node, "value", new))
            elif isinstance(node, ast.Compare):
                for i, op in enumerate(node.ops):
                    new_op = _SWAP[type(op)]()
                    yield Mutant(rel, line, f"{_snippet(node)}: {_op(op)} -> {_op(new_op)}",
                                 change(node, "ops", new_op, i))
            elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in _SWAP:
                new_op = _SWAP[type(node.op)]()
                yield Mutant(rel, line, f"{_snippet(node)}: {_op(node.op)} -> {_op(new_op)}",
                             change(node, "op", new_op))


_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
            ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.And: "and", ast.Or: "or"}


def _op(op: ast.AST) -> str:
    return _OP_TEXT[type(op)]


def _snippet(node: ast.AST, width: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= width else text[:width - 3] + "..."


def all_mutants() -> list[Mutant]:
    mutants = [m for rel in YAML_FILES for m in yaml_mutants(rel)]
    for path in sorted(ROOT.glob(CODE_GLOB)):
        mutants += code_mutants(path.relative_to(ROOT).as_posix())
    return mutants


# --- running --------------------------------------------------------------------------------------

def pytest_command() -> list[str]:
    """The estimator tests, as mutmut selects them (one place to change: pyproject.toml)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    selection = config["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    return [sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:cacheprovider", *selection]


def run_pytest(workdir: Path, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc of a mutant, ever, in the copies
    return subprocess.run(pytest_command(), cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def outcome(workdir: Path, timeout: float) -> str:
    try:
        return "survived" if run_pytest(workdir, timeout).returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        return "timeout"


def run(args: argparse.Namespace) -> int:
    mutants = [m for m in all_mutants() if args.match in f"{m.path}:{m.line}: {m.what}"]
    if args.list:
        for m in mutants:
            print(f"{m.path}:{m.line}: {m.what}")
        print(f"{len(mutants)} mutants")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        workdirs: queue.Queue[Path] = queue.Queue()
        for i in range(args.jobs):
            shutil.copytree(ROOT, Path(tmp) / str(i), ignore=COPY_IGNORE)
            workdirs.put(Path(tmp) / str(i))
        start = time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:  # every copy must pass before any mutant is tried
            clean = list(pool.map(run_pytest, list(workdirs.queue)))
        baseline = time.monotonic() - start
        if failed := next((c for c in clean if c.returncode != 0), None):
            print(failed.stdout[-3000:], failed.stderr[-3000:], "the tests fail without any mutant", sep="\n")
            return 2
        timeout = args.timeout or max(30.0, 5 * baseline)
        print(f"{len(mutants)} mutants; clean run {baseline:.1f} s; timeout {timeout:.0f} s; {args.jobs} workers")

        make_lock = threading.Lock()  # the YAML mutants edit and serialise one shared node tree

        def one(m: Mutant) -> str:
            workdir = workdirs.get()
            target = workdir / m.path
            original = target.read_text(encoding="utf-8")
            try:
                with make_lock:
                    text = m.make()
                target.write_text(text, encoding="utf-8")
                return outcome(workdir, timeout)
            finally:
                target.write_text(original, encoding="utf-8")
                workdirs.put(workdir)

        start = time.monotonic()
        outcomes: list[str] = []
        with ThreadPoolExecutor(args.jobs) as pool:
            for m, result in zip(mutants, pool.map(one, mutants)):
                outcomes.append(result)
                if result == "survived":
                    print(f"survived  {m.path}:{m.line}: {m.what}", flush=True)
                if len(outcomes) % 25 == 0:
                    print(f"  {len(outcomes)}/{len(mutants)} done, {time.monotonic() - start:.0f} s", flush=True)
        elapsed = time.monotonic() - start
    survivors = [f"{m.path}:{m.line}: {m.what}" for m, o in zip(mutants, outcomes) if o == "survived"]
    killed = len(mutants) - len(survivors)
    timeouts = outcomes.count("timeout")
    score = f"killed {killed} / {len(mutants)} ({timeouts} by timeout); {len(survivors)} survived"
    return _write("survivors-data.txt", score, survivors,
                  f"{elapsed:.0f} s, {elapsed * args.jobs / max(len(mutants), 1):.1f} s per mutant per worker")


def _write(name: str, score: str, survivors: list[str], timing: str = "") -> int:
    OUT.mkdir(exist_ok=True)
    (OUT / name).write_text("\n".join([score, *survivors]) + "\n", encoding="utf-8")
    print("\n".join(["", *survivors, "", score + (f" in {timing}" if timing else ""), f"survivors: {OUT / name}"]))
    return 1 if survivors else 0


# --- mutmut's results, readable -------------------------------------------------------------------

_KILLED = {1, 3, 24, -24, 36, 37, 152, 255}  # mutmut's exit codes for killed, timeout, caught by type check
_KEY = re.compile(r"x(?:_|ǁ(?P<cls>\w+)ǁ)(?P<func>\w+?)__mutmut_\d+")


def report(_: argparse.Namespace) -> int:
    """Score and survivors (file:line, the mutated line) of the last `mutmut run`."""
    results: dict[str, tuple[str, int | None]] = {}  # mutant -> (file, mutmut's exit code; None: not run)
    for path in sorted(ROOT.glob(CODE_GLOB)):
        meta = ROOT / "mutants" / path.relative_to(ROOT).with_name(path.name + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
            results |= {key: (path.relative_to(ROOT).as_posix(), code) for key, code in codes.items()}
    if not results:
        print("no mutmut results: run `mutmut run --max-children 2` first")
        return 2
    checked = {k: (rel, code) for k, (rel, code) in results.items() if code is not None and code != 34}  # 34: skipped
    survivors = [_describe(key, rel, code) for key, (rel, code) in sorted(checked.items()) if code not in _KILLED]
    killed = len(checked) - len(survivors)
    score = (f"killed {killed} / {len(checked)} (mutmut; {len(results) - len(checked)} not run); "
             f"{len(survivors)} survived")
    return _write("survivors-mutmut.txt", score, survivors)


def _describe(key: str, rel: str, code: int) -> str:
    status = {0: "survived", 5: "no test", 33: "no test"}.get(code, f"exit {code}")
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant  # mutmut's own `mutmut show`
        diff = get_diff_for_mutant(key, path=rel).splitlines()[2:]
    except Exception:  # an internal API of mutmut; fall back to the name
        return f"{rel}: {key} ({status})"
    removed = next((line[1:].strip() for line in diff if line.startswith("-")), "")
    added = next((line[1:].strip() for line in diff if line.startswith("+")), "")
    return f"{rel}:{_line_of(rel, key, removed)}: {removed}  ->  {added}  [{status}; {key.rpartition('.')[2]}]"


def _line_of(rel: str, key: str, text: str) -> int | str:
    """The line of `text` inside the mutated function of the original file."""
    m = _KEY.fullmatch(key.rpartition(".")[2])
    if not m or not text:
        return "?"
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
    scope = tree.body
    if m["cls"]:
        scope = next((n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == m["cls"]), [])
    func = next((n for n in scope if isinstance(n, ast.FunctionDef) and n.name == m["func"]), None)
    if func is None:
        return "?"
    lines = (ROOT / rel).read_text(encoding="utf-8").splitlines()
    hits = [i + 1 for i in range(func.lineno - 1, func.end_lineno or func.lineno) if lines[i].strip() == text]
    return hits[0] if len(hits) == 1 else (f"{hits[0]}?" if hits else f"{func.lineno}+")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="mutate data/precisions.yaml and the module-level code mutmut skips")
    p.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")
    p.add_argument("--timeout", type=float, default=0, help="seconds per mutant (default: 5x the clean run, >= 30)")
    p.add_argument("--match", default="", help="only mutants whose 'path:line: mutation' contains this text")
    p.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    p.set_defaults(func=run)
    sub.add_parser("report", help="summarise the last `mutmut run`").set_defaults(func=report)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
