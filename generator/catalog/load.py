"""Read and validate the whole catalog under data/, collecting every problem before failing.

Layout: data/models/ORG--NAME.yaml, data/gpus/ID.yaml, data/precisions.yaml, data/runtimes.yaml,
data/workloads.yaml.
In data/models and data/gpus, dotfiles and Markdown files (README.md) are ignored; any other file
that is not ``.yaml`` (a ``.yml``, a ``.json``, a folder) is reported, so nothing is silently skipped.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import markdown
from pydantic import BaseModel, ValidationError

from ..estimate.architecture import Architecture, ConfigError, ParamCounts, count_parameters, parse_architecture
from ..estimate.precision import CONDITIONS, PrecisionCatalog, PrecisionError, parse_precision_catalog
from ..estimate.runtime import Runtime, parse_runtime_catalog
from ..trace.spec import config_sha256
from .schema import (
    GPU_ID, MODEL_ID, GpuFile, ModelFile, PrecisionsFile, RuntimesFile, TraceFile, Workload, WorkloadsFile,
)
from .yamlsafe import DataPath, Document, Problem, YamlProblem, read_yaml

SCHEMA_LINE = "# yaml-language-server: $schema={}"
PARAMS_TOLERANCE = 0.005
_ModelT = TypeVar("_ModelT", bound=BaseModel)  # the schema a file is validated against


class CatalogError(Exception):
    """The catalog has problems; ``problems`` lists every one, sorted by file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column))
        super().__init__(f"{len(self.problems)} problem(s) in the catalog")


@dataclass(frozen=True)
class Model:
    file: ModelFile
    architecture: Architecture
    params: ParamCounts
    path: Path

    @property
    def id(self) -> str:
        return self.file.id


@dataclass(frozen=True)
class Gpu:
    file: GpuFile
    path: Path

    @property
    def id(self) -> str:
        return self.file.id

    @property
    def usable_bytes(self) -> int:
        return self.file.memory.usable.mib * 2**20

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.file.bandwidth.gb_per_s * 1e9

    @property
    def reported_bytes(self) -> int:
        return self.file.memory.reported.mib * 2**20


@dataclass(frozen=True)
class Precisions:
    catalog: PrecisionCatalog
    file: PrecisionsFile  # labels, descriptions and sources as written
    path: Path


@dataclass(frozen=True)
class Catalog:
    models: dict[str, Model]
    gpus: dict[str, Gpu]
    precisions: Precisions
    workloads: list[Workload]
    traces: list[Trace] = field(default_factory=list)


def display_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


@dataclass
class _Reporter:
    problems: list[Problem] = field(default_factory=list)

    def at(self, path: Path, doc: Document | None, where: DataPath, message: str) -> None:
        line, col = doc.position(where) if doc is not None else (1, 1)
        self.problems.append(Problem(display_path(path), line, col, message))


# --------------------------------------------------------------------------------------------------
# Schema errors in words


def _flatten(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _flatten(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [x for a in get_args(tp) for x in _flatten(a)]
    return [tp]


def _fields_at(model: type[BaseModel], path: DataPath) -> list[str]:
    """The keys the schema allows in the mapping at `path`, for did-you-mean hints."""
    candidates: list[Any] = [model]
    for part in path:
        nxt: list[Any] = []
        for tp in candidates:
            origin = get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
                nxt += _flatten(tp.model_fields[part].annotation)
            elif origin is list and isinstance(part, int):
                nxt += _flatten(get_args(tp)[0])
            elif origin is dict and isinstance(part, str):
                nxt += _flatten(get_args(tp)[1])
        candidates = nxt
    return [f for tp in candidates if isinstance(tp, type) and issubclass(tp, BaseModel) for f in tp.model_fields]


def _data_prefix(data: Any, loc: tuple[Any, ...]) -> DataPath:
    """The part of a pydantic error location that names real data (union member tags dropped)."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and isinstance(part, str) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            break
        out.append(part)
    return tuple(out)


def _dotted(path: DataPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(file)"


def _schema_problems(model: type[BaseModel], doc: Document, exc: ValidationError,
                     skip: set[DataPath]) -> list[tuple[DataPath, str]]:
    """(data path, message) for each schema error, one per path, with did-you-mean hints."""
    found: dict[tuple[DataPath, str], list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = _data_prefix(doc.data, loc)
        if where in skip:
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(where[-1])
            hint = difflib.get_close_matches(key, _fields_at(model, where[:-1]), n=1, cutoff=0.6)
            msg = f"unknown key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
            if where[:-1]:
                msg += f" (in {_dotted(where[:-1])})"
        elif kind == "missing":
            missing = loc[len(where)] if len(loc) > len(where) else "?"
            msg = f"missing required key {missing!r}" + (f" in {_dotted(where)}" if where else "")
        else:
            text = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) or value is None else ""
            msg = f"{_dotted(where)}: {text}" + ("" if repr(value) in text else shown)
        found.setdefault((where, kind if kind in ("extra_forbidden", "missing") else "value"), []).append(msg)
    out = []
    for (where, _), msgs in found.items():
        unique = list(dict.fromkeys(msgs))
        out.append((where, unique[0] if len(unique) == 1 else unique[0] + "; or " + "; or ".join(
            m.split(": ", 1)[-1] for m in unique[1:])))
    return out


def _todos(data: Any, path: DataPath = ()) -> list[DataPath]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _todos(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _todos(v, (*path, i))]
    return [path] if isinstance(data, str) and data.lstrip().startswith("TODO") else []


def _get(data: Any, path: DataPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _raw_html(text: str) -> list[str]:
    """Raw HTML tags, comments and entities in Markdown, as Python-Markdown itself finds them."""
    md = markdown.Markdown()
    md.convert(text)
    return [str(h).strip() for h in md.htmlStash.rawHtmlBlocks]


# --------------------------------------------------------------------------------------------------
# One file


class _Loader:
    def __init__(self, data_dir: Path):
        self.dir = data_dir
        self.report = _Reporter()

    def read(self, path: Path, schema_ref: str, model: type[_ModelT]) -> tuple[Document | None, _ModelT | None]:
        """Parse, check the schema line, TODOs and the schema; return (document, model or None)."""
        try:
            doc = read_yaml(path)
        except YamlProblem as p:
            self.report.problems.append(Problem(display_path(path), p.line, p.column, p.message))
            return None, None
        expected = SCHEMA_LINE.format(schema_ref)
        if doc.first_line != expected:
            self.report.at(path, None, (), f"the first line must be exactly {expected!r}")
        if not isinstance(doc.data, dict):
            self.report.at(path, doc, (), f"the file must be a mapping of keys, not a {type(doc.data).__name__}")
            return doc, None
        todos = set(_todos(doc.data))
        for where in sorted(todos, key=doc.position):
            self.report.at(path, doc, where, f"{_dotted(where)}: unfilled placeholder {_get(doc.data, where)!r}; "
                           "replace it with a sourced value before submitting")
        try:
            return doc, model.model_validate(doc.data)
        except ValidationError as exc:
            for where, msg in _schema_problems(model, doc, exc, todos):
                self.report.at(path, doc, where, msg)
            return doc, None

    def notes(self, path: Path, doc: Document) -> None:
        html = _raw_html(doc.data["notes"]) if isinstance(doc.data.get("notes"), str) else []
        if html:
            shown = ", ".join(repr(h[:40]) for h in dict.fromkeys(html))
            self.report.at(path, doc, ("notes",), f"notes: raw HTML is not allowed, write plain Markdown (found {shown})")

    def file_id(self, path: Path, doc: Document, pattern: str) -> str | None:
        """The file's id when it is well formed, after checking that the file is named after it."""
        value = doc.data.get("id")
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            return None
        expected = value.replace("/", "--") + ".yaml"
        if path.name != expected:
            self.report.at(path, doc, ("id",), f"file name must be {expected!r} to match the id")
        return value

    def duplicates(self, docs: dict[Path, tuple[Document, str]], what: str) -> None:
        by_id: dict[str, list[Path]] = {}
        for path, (_, ident) in docs.items():
            by_id.setdefault(ident.lower(), []).append(path)
        for paths in by_id.values():
            for path in paths if len(paths) > 1 else []:
                others = ", ".join(display_path(p) for p in paths if p != path)
                doc, ident = docs[path]
                self.report.at(path, doc, ("id",), f"duplicate {what} id {ident!r} (compared ignoring case), "
                               f"also in {others}")

    def files(self, folder: Path) -> list[Path]:
        if not folder.is_dir():
            self.report.at(folder, None, (), "folder is missing")
            return []
        out = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or (entry.suffix.lower() == ".md" and entry.is_file()):
                continue
            if entry.suffix == ".yaml" and entry.is_file():
                out.append(entry)
            else:
                self.report.at(entry, None, (), "only .yaml files belong in this folder (rename .yml to .yaml)")
        return out

    # ----------------------------------------------------------------------------------------------

    def models(self) -> dict[str, Model]:
        out: dict[str, Model] = {}
        ids: dict[Path, tuple[Document, str]] = {}
        for path in self.files(self.dir / "models"):
            doc, mf = self.read(path, "../../schemas/model.schema.json", ModelFile)
            if doc is None or not isinstance(doc.data, dict):
                continue
            self.notes(path, doc)
            model_id = self.file_id(path, doc, MODEL_ID)
            if model_id:
                ids[path] = (doc, model_id)
            arch = self.architecture(path, doc)
            if arch is None:
                continue
            counts = count_parameters(arch)
            if mf is not None and mf.declared_params is not None:
                declared = mf.declared_params.value
                off = abs(declared - counts.total) / counts.total
                if off > PARAMS_TOLERANCE:
                    self.report.at(path, doc, ("declared_params", "value"),
                                   f"declared_params.value {declared:,} differs by {off:.2%} from the "
                                   f"{counts.total:,} parameters derived from the architecture (tolerance 0.5%)")
            if mf is not None:
                out.setdefault(mf.id, Model(mf, arch, counts, path))
        self.duplicates(ids, "model")
        return out

    def architecture(self, path: Path, doc: Document) -> Architecture | None:
        block = doc.data.get("architecture")
        if not isinstance(block, dict):
            return None
        try:
            return parse_architecture(block)
        except ConfigError as exc:
            where = ("architecture", *exc.field.split("."))
            self.report.at(path, doc, where, f"architecture.{exc.field}: {exc.message}")
        except Exception as exc:  # an estimator bug must not become a traceback for a contributor
            self.report.at(path, doc, ("architecture",),
                           f"architecture: internal error in the estimator ({type(exc).__name__}: {exc}); "
                           "please report it")
        return None

    def gpus(self) -> dict[str, Gpu]:
        out: dict[str, Gpu] = {}
        ids: dict[Path, tuple[Document, str]] = {}
        for path in self.files(self.dir / "gpus"):
            doc, gf = self.read(path, "../../schemas/gpu.schema.json", GpuFile)
            if doc is None or not isinstance(doc.data, dict):
                continue
            self.notes(path, doc)
            gpu_id = self.file_id(path, doc, GPU_ID)
            if gpu_id:
                ids[path] = (doc, gpu_id)
            if gf is None:
                continue
            if gf.memory.usable.mib > gf.memory.reported.mib:
                self.report.at(path, doc, ("memory", "usable", "mib"),
                               f"memory.usable.mib {gf.memory.usable.mib} exceeds memory.reported.mib "
                               f"{gf.memory.reported.mib}")
            out.setdefault(gf.id, Gpu(gf, path))
        self.duplicates(ids, "GPU")
        return out

    def precisions(self) -> Precisions | None:
        path = self.dir / "precisions.yaml"
        doc, pf = self.read(path, "../schemas/precisions.schema.json", PrecisionsFile)
        if doc is None or pf is None:
            return None
        bad = False
        types_ = pf.storage_types
        for tid, st in types_.items():
            if st.fallback is not None and st.fallback not in types_:
                bad = True
                self.report.at(path, doc, ("storage_types", tid, "fallback"),
                               f"storage_types.{tid}.fallback: unknown storage type {st.fallback!r}")
        for pid, prec in pf.precisions.items():
            refs: list[tuple[DataPath, str]] = [(("precisions", pid, "default"), prec.default)]
            refs += [(("precisions", pid, "rules", i, "type"), r.type) for i, r in enumerate(prec.rules)]
            for where, tid in refs:
                if tid not in types_:
                    bad = True
                    self.report.at(path, doc, where, f"{_dotted(where)}: unknown storage type {tid!r}; "
                                   f"choose one of: {', '.join(types_)}")
            for i, rule in enumerate(prec.rules):
                for cond in rule.when or []:
                    if cond not in CONDITIONS:
                        bad = True
                        self.report.at(path, doc, ("precisions", pid, "rules", i, "when"),
                                       f"precisions.{pid}.rules[{i}].when: unknown condition {cond!r}; "
                                       f"choose from: {', '.join(CONDITIONS)}")
        if bad:
            return None
        try:
            catalog = parse_precision_catalog(doc.data)
        except PrecisionError as exc:
            self.report.at(path, doc, ("precisions",), str(exc))
            return None
        return Precisions(catalog, pf, path)

    def workloads(self, precisions: Precisions | None) -> list[Workload]:
        path = self.dir / "workloads.yaml"
        doc, wf = self.read(path, "../schemas/workloads.schema.json", WorkloadsFile)
        if doc is None or wf is None:
            return []
        seen: set[str] = set()
        for i, w in enumerate(wf.workloads):
            here = ("workloads", i)
            if w.id in seen:
                self.report.at(path, doc, (*here, "id"), f"duplicate workload id {w.id!r}")
            seen.add(w.id)
            if w.workload in ("lora", "qlora") and w.lora_rank is None:
                self.report.at(path, doc, here, f"workload {w.id!r}: a {w.workload} workload needs lora_rank")
            if precisions is None:
                continue
            if w.kv_precision not in precisions.catalog.kv_types:
                self.report.at(path, doc, (*here, "kv_precision"),
                               f"kv_precision {w.kv_precision!r} is not one of the kv_cache_types in "
                               f"precisions.yaml: {', '.join(precisions.catalog.kv_types)}")
            if w.runtime is not None and w.runtime not in precisions.catalog.runtimes:
                self.report.at(path, doc, (*here, "runtime"),
                               f"runtime {w.runtime!r} is not defined in runtimes.yaml")
            elif w.runtime is not None and w.workload not in precisions.catalog.runtimes[w.runtime].workloads:
                self.report.at(path, doc, (*here, "runtime"),
                               f"runtime {w.runtime!r} does not run {w.workload} workloads")
            if w.precision is not None and w.precision not in precisions.catalog.precisions:
                self.report.at(path, doc, (*here, "precision"),
                               f"precision {w.precision!r} is not defined in precisions.yaml")
        return wf.workloads


def _runtimes(loader: _Loader, precisions: Precisions | None) -> dict[str, Runtime]:
    path = loader.dir / "runtimes.yaml"
    doc, rf = loader.read(path, "../schemas/runtimes.schema.json", RuntimesFile)
    if doc is None or rf is None:
        return {}
    for rid, profile in rf.runtimes.items():
        if precisions is not None and profile.kv_cache.default_type not in precisions.catalog.kv_types:
            loader.report.at(path, doc, ("runtimes", rid, "kv_cache", "default_type"),
                             f"kv_cache.default_type {profile.kv_cache.default_type!r} is not one of the "
                             f"kv_cache_types in precisions.yaml: {', '.join(precisions.catalog.kv_types)}")
        training = [w for w in profile.workloads if w != "inference"]
        if training and profile.training is None:
            loader.report.at(path, doc, ("runtimes", rid, "workloads"),
                             f"runtime {rid!r} runs {', '.join(training)} but has no training: defaults")
    return parse_runtime_catalog(doc.data)


@dataclass(frozen=True)
class Trace:
    file: TraceFile
    path: Path


def _traces(loader: _Loader, models: dict[str, Model]) -> list[Trace]:
    """data/traces/*.yaml (optional): each names a catalog model whose architecture it was traced with."""
    folder = loader.dir / "traces"
    if not folder.is_dir():
        return []
    out = []
    for path in loader.files(folder):
        doc, tf = loader.read(path, "../../schemas/trace.schema.json", TraceFile)
        if doc is None or tf is None:
            continue
        if tf.model is None:
            loader.report.at(path, doc, ("model",), "a committed trace must name the catalog model it traced")
            continue
        model = models.get(tf.model)
        if model is None:
            loader.report.at(path, doc, ("model",), f"model {tf.model!r} is not in the catalog")
            continue
        block: BaseModel = model.file.architecture
        current = config_sha256(block.model_dump(exclude_unset=True))
        if tf.config_sha256 != current:
            loader.report.at(path, doc, ("config_sha256",),
                             f"config_sha256 does not match {display_path(model.path)}'s architecture: the "
                             "model changed since this trace; rerun llm-memory trace")
            continue
        out.append(Trace(tf, path))
    return out


def load_catalog(data_dir: Path) -> Catalog:
    """Load and validate everything under `data_dir`; raise CatalogError listing every problem."""
    loader = _Loader(Path(data_dir))
    if not loader.dir.is_dir():
        raise CatalogError([Problem(display_path(loader.dir), 1, 1, "data directory not found")])
    models = loader.models()
    gpus = loader.gpus()
    precisions = loader.precisions()
    runtimes = _runtimes(loader, precisions)
    if precisions is not None:
        precisions = replace(precisions, catalog=replace(precisions.catalog, runtimes=runtimes))
    workloads = loader.workloads(precisions)
    traces = _traces(loader, models)
    if loader.report.problems or precisions is None:
        raise CatalogError(loader.report.problems)
    return Catalog(models=models, gpus=gpus, precisions=precisions, workloads=workloads, traces=traces)

