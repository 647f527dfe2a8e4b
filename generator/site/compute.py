"""Everything the site shows, computed before anything is rendered: model x precision x workload
estimates, their fit against every device, and the searches shown on model pages.

Results are plain dataclasses of numbers; formatting for display lives in views.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from ..catalog.load import Catalog, Gpu, Model
from ..catalog.schema import Workload
from ..estimate import fit
from ..estimate.precision import PrecisionCatalog, PrecisionError
from ..estimate.scenario import Estimate, Scenario, ScenarioError
from ..estimate.scenario import estimate
from ..validation import Comparison, compare

# "Best" precision on a device: the first that fits, highest fidelity first. FP32 and FP16 are left
# out (BF16 fits wherever they do); precisions not listed here follow, in catalog order.
PREFERENCE = ("bf16", "fp8", "q8_0", "int8", "q6_k", "q5_k_m", "q4_k_m", "mxfp4", "int4", "nf4", "iq4_xs",
              "q4_0", "q3_k_m", "q2_k", "iq2_xxs")
NOT_BEST = ("fp32", "fp16")
FOUR_BIT = "q4_k_m"  # the 4-bit format of the index and the per-device tables
CHART_PRECISIONS = ("bf16", "q8_0", "q4_k_m")
GGUF_SHOWN = ("q8_0", "q6_k", "q4_k_m", "q3_k_m", "q2_k")


@dataclass(frozen=True)
class Device:
    id: str
    gpu: Gpu

    @property
    def usable(self) -> int:
        return self.gpu.usable_bytes

    @property
    def bandwidth(self) -> float:
        return self.gpu.bandwidth_bytes_per_s

    @property
    def name(self) -> str:
        return self.gpu.file.name


@dataclass
class Cell:
    """One model x precision x workload estimate, and its fit on every device (by usable bytes)."""

    estimate: Estimate
    scenario: Scenario  # as requested (unresolved: Scenario.resolved() is not idempotent)
    needed: dict[int, int | None] = field(default_factory=dict)  # usable bytes -> devices needed

    @property
    def total(self) -> int:
        return self.estimate.total_bytes

    def verdict(self, usable: int) -> str:
        return fit.verdict(self.total, self.estimate.budget(usable))


def applicable(w: Workload, catalog: PrecisionCatalog) -> list[str]:
    """The precisions a workload is computed in (catalog order)."""
    if w.precision:
        return [w.precision]
    out = []
    for pid, p in catalog.precisions.items():
        if w.workload == "train" and p.family != "float":
            continue
        if w.workload == "qlora" and pid != "nf4":
            continue
        if w.workload == "lora" and p.family == "gguf":
            continue
        out.append(pid)
    return out


def scenario_for(w: Workload, max_context: int | None, precision: str | None,
                 catalog: PrecisionCatalog | None = None) -> Scenario:
    if w.context == "max":
        context = max_context or 4096
    else:
        context = min(w.context, max_context) if (w.context_cap and max_context) else w.context
    inference = w.workload == "inference"
    runtime = w.runtime
    if runtime is not None and catalog is not None and precision is not None and runtime in catalog.runtimes:
        # A format the workload's runtime does not run goes to the runtime that does (GGUF: llama.cpp).
        if catalog.precision(precision).family not in catalog.runtimes[runtime].formats:
            runtime = None
    return Scenario(
        workload=w.workload, precision=precision, context=context, batch=w.batch, kv_precision=w.kv_precision,
        optimizer=None if inference else w.optimizer, checkpointing="none" if inference else w.checkpointing,
        zero=w.zero, gpus=w.gpus, lora_rank=w.lora_rank if w.workload in ("lora", "qlora") else None,
        prefill_chunk=w.prefill_chunk if inference else None, runtime=runtime,
        recipe=w.recipe if w.workload == "train" and precision != "fp32" else None,  # fp32 weights: the fp32 recipe
        adapter_dtype=w.adapter_dtype if w.workload in ("lora", "qlora") else None)


@dataclass
class ModelResult:
    model: Model
    workloads: list[Workload]
    cells: dict[str, dict[str, Cell]]  # workload id -> precision id -> cell
    default_precision: dict[str, str]  # workload id -> the precision its breakdown is shown in

    @property
    def id(self) -> str:
        return self.model.id

    def cell(self, wid: str, pid: str) -> Cell | None:
        return self.cells.get(wid, {}).get(pid)


@dataclass(frozen=True)
class Validation:
    """One committed trace beside the estimate of the same question."""

    model_id: str
    conditions: dict[str, object]
    traced_phase: str
    comparison: Comparison


@dataclass
class SiteData:
    catalog: Catalog
    precisions: PrecisionCatalog
    devices: list[Device]  # by usable memory, then name
    workloads: list[Workload]
    models: list[ModelResult]  # by id
    validations: list[Validation] = field(default_factory=list)  # by model, then file name

    def validations_of(self, model_id: str) -> list[Validation]:
        return [v for v in self.validations if v.model_id == model_id]

    @cached_property
    def usables(self) -> list[int]:
        return sorted({d.usable for d in self.devices})

    def smallest_device(self, cell: Cell | None) -> Device | None:
        if cell is None:
            return None
        return next((d for d in self.devices if cell.verdict(d.usable) != fit.NO_FIT), None)

    def best_precision(self, mr: ModelResult, wid: str, usable: int) -> str | None:
        cells = mr.cells.get(wid, {})
        order = [p for p in PREFERENCE if p in cells] + [p for p in cells if p not in PREFERENCE and p not in NOT_BEST]
        if not order:
            order = list(cells)
        return next((p for p in order if cells[p].verdict(usable) != fit.NO_FIT), None)

    # Searches shown on model pages, computed on demand (the estimator memoises them).

    def longest_context(self, mr: ModelResult, wid: str, pid: str, usable: int) -> int:
        cell = mr.cell(wid, pid)
        if cell is None:
            return 0
        return fit.longest_context(mr.model.architecture, cell.scenario, self.precisions, usable)

    def offload(self, mr: ModelResult, wid: str, pid: str, usable: int) -> fit.Offload | None:
        cell = mr.cell(wid, pid)
        if cell is None:
            return None
        return fit.gguf_offload(mr.model.architecture, cell.scenario, self.precisions, usable)

    def decode(self, mr: ModelResult, wid: str, pid: str, device: Device) -> float | None:
        cell = mr.cell(wid, pid)
        if cell is None or cell.verdict(device.usable) == fit.NO_FIT:
            return None
        return fit.decode_tokens_per_second(mr.model.architecture, cell.estimate, self.precisions, device.bandwidth)

    def context_curve(self, mr: ModelResult, wid: str, pid: str, contexts: list[int]) -> list[int] | None:
        cell = mr.cell(wid, pid)
        if cell is None:
            return None
        s = replace(cell.scenario, batch=1)
        return [estimate(mr.model.architecture, replace(s, context=c), self.precisions).total_bytes for c in contexts]


def compute(catalog: Catalog, progress: Callable[[int, int, str], None] | None = None) -> SiteData:
    """The full cross product, with devices-needed for every cell and every distinct usable size."""
    precisions = catalog.precisions.catalog
    devices = sorted((Device(g.id, g) for g in catalog.gpus.values()), key=lambda d: (d.usable, d.name, d.id))
    usables = sorted({d.usable for d in devices})
    results = []
    ids = sorted(catalog.models)
    for i, mid in enumerate(ids):
        model = catalog.models[mid]
        arch = model.architecture
        cells: dict[str, dict[str, Cell]] = {}
        defaults: dict[str, str] = {}
        for w in catalog.workloads:
            row: dict[str, Cell] = {}
            for pid in applicable(w, precisions):
                sc = scenario_for(w, arch.max_context, pid, precisions)
                try:
                    est = estimate(arch, sc, precisions)
                except (ScenarioError, PrecisionError):
                    continue
                cell = Cell(est, sc)
                for u in usables:
                    cell.needed[u] = 1 if cell.total <= est.budget(u) else fit.devices_needed(arch, sc, precisions, u)
                row[pid] = cell
            if not row:
                continue
            cells[w.id] = row
            try:
                default = estimate(arch, scenario_for(w, arch.max_context, w.precision, precisions),
                                   precisions).scenario.precision
            except (ScenarioError, PrecisionError):
                default = None
            defaults[w.id] = default if default in row else next(iter(row))
        results.append(ModelResult(model, list(catalog.workloads), cells, defaults))
        if progress:
            progress(i + 1, len(ids), mid)
    validations = []
    for tr in sorted(catalog.traces, key=lambda t: (t.file.model or "", t.path.name)):
        f = tr.file
        assert f.model is not None  # the loader refuses traces without a catalog model
        conditions = f.conditions.model_dump(exclude_none=True)
        comparison = compare(catalog.models[f.model].architecture, conditions, f.peak_bytes, precisions)
        validations.append(Validation(f.model, conditions, f.peak_phase, comparison))
    return SiteData(catalog, precisions, devices, list(catalog.workloads), results, validations)
