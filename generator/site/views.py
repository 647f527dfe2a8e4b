"""View models: what each template shows, as strings and simple records. No HTML here, and no
arithmetic in the templates: every figure, percentage and coordinate is computed in this module."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..estimate import fit
from ..estimate.rules import rules_of_thumb
from ..estimate.scenario import Scenario
from . import charts
from .compute import CHART_PRECISIONS, FOUR_BIT, GGUF_SHOWN, Device, ModelResult, SiteData
from .fmt import GIB, gib, model_slug, params, pct, safe_url, short_device, slug, tokens

VERDICT_CLASS = {fit.FITS: "fits", fit.TIGHT: "tight", fit.NO_FIT: "nofit"}
VERDICT_MARK = {fit.FITS: "✓", fit.TIGHT: "!", fit.NO_FIT: "✗"}
SIZE_CLASSES = (("under-3b", "Under 3B parameters", 0, 3 * 10**9), ("3b-10b", "3B to 10B", 3 * 10**9, 10**10),
                ("10b-40b", "10B to 40B", 10**10, 4 * 10**10), ("40b-100b", "40B to 100B", 4 * 10**10, 10**11),
                ("over-100b", "Over 100B", 10**11, 10**15))
SORTS = (("name", "Model", "ascending"), ("size", "Parameters", "descending"),
         ("memory", "Chat, BF16", "ascending"), ("release", "Released", "descending"))


def model_href(model_id: str) -> str:
    return f"models/{model_slug(model_id)}/index.html"


def device_href(device_id: str) -> str:
    return f"devices/{device_id}.html"


def family_href(family: str) -> str:
    return f"families/{slug(family)}.html"


def sort_href(key: str, direction: str) -> str:
    return "index.html" if (key, direction) == ("name", "ascending") else f"sort/{key}-{direction[:-6]}.html"


def size_class(total: int) -> tuple[str, str]:
    for sid, label, lo, hi in SIZE_CLASSES:
        if lo <= total < hi:
            return sid, label
    return SIZE_CLASSES[-1][:2]


@dataclass
class Link:
    text: str
    href: str  # root-relative; templates prefix the page's root
    note: str = ""


# --------------------------------------------------------------------------------------------------
# Index and list pages


@dataclass
class IndexRow:
    name: str
    href: str
    model_id: str
    family: Link
    total: str
    active: str
    context: str
    chat_bf16: str
    chat_4bit: str
    smallest_bf16: Link | None
    smallest_4bit: Link | None
    released: str
    sort_keys: dict[str, Any] = field(default_factory=dict)


def index_rows(data: SiteData) -> list[IndexRow]:
    chat = data.workloads[0].id
    rows = []
    for mr in data.models:
        f = mr.model.file
        p = mr.model.params
        bf = mr.cell(chat, "bf16")
        q4 = mr.cell(chat, FOUR_BIT)
        d_bf, d_q4 = data.smallest_device(bf), data.smallest_device(q4)
        arch = mr.model.architecture
        rows.append(IndexRow(
            name=f.name, href=model_href(mr.id), model_id=mr.id, family=Link(f.family, family_href(f.family)),
            total=params(p.total), active=params(p.active) if p.active != p.total else "same",
            context=tokens(arch.max_context) if arch.max_context else "—",
            chat_bf16=gib(bf.total) if bf else "—", chat_4bit=gib(q4.total) if q4 else "—",
            smallest_bf16=Link(d_bf.name, device_href(d_bf.id)) if d_bf else None,
            smallest_4bit=Link(d_q4.name, device_href(d_q4.id)) if d_q4 else None,
            released=f.released.isoformat(),
            sort_keys={"name": (f.name.lower(), mr.id), "size": (p.total, mr.id),
                       "memory": (bf.total if bf else 0, mr.id), "release": (f.released.isoformat(), mr.id)}))
    return rows


@dataclass
class SortHeader:
    label: str
    href: str
    aria_sort: str | None
    arrow: str


def sorted_rows(rows: list[IndexRow], key: str, direction: str) -> list[IndexRow]:
    return sorted(rows, key=lambda r: r.sort_keys[key], reverse=direction == "descending")


def sort_headers(key: str, direction: str) -> dict[str, SortHeader]:
    out = {}
    for k, label, default in SORTS:
        if k == key:
            flip = "descending" if direction == "ascending" else "ascending"
            out[k] = SortHeader(label, sort_href(k, flip), direction, "▲" if direction == "ascending" else "▼")
        else:
            out[k] = SortHeader(label, sort_href(k, default), None, "")
    return out


def groups(data: SiteData) -> tuple[dict[str, tuple[str, list[str]]], dict[str, tuple[str, list[str]]]]:
    """Family slug -> (family, model ids) and size class -> (label, model ids)."""
    fam: dict[str, tuple[str, list[str]]] = {}
    size: dict[str, tuple[str, list[str]]] = {}
    for mr in data.models:
        f = mr.model.file.family
        fam.setdefault(slug(f), (f, []))[1].append(mr.id)
        sid, label = size_class(mr.model.params.total)
        size.setdefault(sid, (label, []))[1].append(mr.id)
    order = [s[0] for s in SIZE_CLASSES]
    return dict(sorted(fam.items())), {k: size[k] for k in order if k in size}


# --------------------------------------------------------------------------------------------------
# Fit tables


@dataclass
class FitCell:
    total: str
    verdict: str
    css: str
    mark: str
    needed: str


@dataclass
class FitColumn:
    heading: str
    devices: list[Link]  # the first few, shown
    more: list[Link]  # the rest, behind a <details>


@dataclass
class FitRow:
    label: str
    precision: str
    total: str
    cells: list[FitCell]


@dataclass
class FitTable:
    workload_id: str
    workload_label: str
    description: str
    columns: list[FitColumn]
    rows: list[FitRow]


def _needed_text(n: int | None, workload: str) -> str:
    if n is None:
        return "more than 64 devices"
    if n == 1:
        return "1 device"
    return f"needs {n}"


def fit_table(data: SiteData, mr: ModelResult, wid: str) -> FitTable | None:
    cells = mr.cells.get(wid)
    if not cells:
        return None
    w = next(x for x in data.workloads if x.id == wid)
    # Columns: devices by usable memory; neighbours whose verdicts and device counts coincide merge.
    sig_groups: list[tuple[tuple[tuple[str, int | None], ...], list[Device]]] = []
    for d in data.devices:
        sig = tuple((c.verdict(d.usable), c.needed.get(d.usable)) for c in cells.values())
        if sig_groups and sig_groups[-1][0] == sig:
            sig_groups[-1][1].append(d)
        else:
            sig_groups.append((sig, [d]))
    columns = []
    for _, devs in sig_groups:
        lo, hi = devs[0].usable, devs[-1].usable
        heading = gib(lo) if gib(lo) == gib(hi) else f"{gib(lo)} – {gib(hi)}"
        links = [Link(short_device(d.name), device_href(d.id)) for d in devs]
        cut = 3 if len(links) <= 3 else 2
        columns.append(FitColumn(heading, links[:cut], links[cut:]))
    rows = []
    for pid, c in cells.items():
        row = []
        for _, devs in sig_groups:
            d = devs[0]
            v = c.verdict(d.usable)
            row.append(FitCell(gib(c.total), v, VERDICT_CLASS[v], VERDICT_MARK[v],
                               _needed_text(c.needed.get(d.usable), w.workload)))
        rows.append(FitRow(data.precisions.precision(pid).label, pid, gib(c.total), row))
    return FitTable(w.id, w.label, w.description, columns, rows)


# --------------------------------------------------------------------------------------------------
# Model page


@dataclass
class Breakdown:
    workload_id: str
    label: str
    description: str
    precision: str
    scenario: str
    total: str
    peak_phase: str
    segments: list[charts.Segment]
    svg_title: str
    svg_desc: str
    assumptions: list[str] = field(default_factory=list)


@dataclass
class Fact:
    label: str
    value: str
    href: str | None = None


def _scenario_text(s: Scenario) -> str:
    bits = [f"runtime {s.runtime}"] if s.runtime else []
    bits += [f"context {tokens(s.context)}", f"batch {s.batch}"]
    if s.workload == "inference":
        bits.append(f"KV cache {s.kv_precision}")
    else:
        bits.append((f"recipe {s.recipe}, " if s.recipe else "")
                    + (f"{s.adapter_dtype} adapters, " if s.adapter_dtype else "")
                    + f"{s.optimizer}, checkpointing {s.checkpointing}")
    if s.gpus > 1:
        bits.append(f"{s.gpus} GPUs" + (f", ZeRO-{s.zero}" if s.zero else "") + ", per GPU")
    return ", ".join(bits)


def breakdowns(data: SiteData, mr: ModelResult) -> list[Breakdown]:
    out = []
    cells = [(w, mr.cell(w.id, mr.default_precision[w.id])) for w in data.workloads if w.id in mr.cells]
    scale = max(c.total for _, c in cells if c)
    for w, c in cells:
        assert c is not None
        est = c.estimate
        assert est.scenario.precision is not None  # an estimate's scenario is resolved
        parts = dict(est.peak.parts)
        segs = charts.stacked_bar(parts, scale)
        plabel = data.precisions.precision(est.scenario.precision).label
        desc = "; ".join(f"{s.label} {s.value} ({s.share})" for s in segs)
        out.append(Breakdown(w.id, w.label, w.description, plabel, _scenario_text(est.scenario), gib(est.total_bytes),
                             est.peak_phase.replace("_", " "), segs,
                             f"{mr.model.file.name}, {w.label}, {plabel}: {gib(est.total_bytes)}",
                             f"Memory at the peak ({est.peak_phase.replace('_', ' ')}): {desc}.",
                             list(est.assumptions)))
    return out


@dataclass
class DeviceRow:
    device: Link
    usable: str
    values: list[str]


def _capacity_groups(data: SiteData) -> list[tuple[int, list[Device]]]:
    out: list[tuple[int, list[Device]]] = []
    for d in data.devices:
        if out and out[-1][0] == d.usable:
            out[-1][1].append(d)
        else:
            out.append((d.usable, [d]))
    return out


def per_device_table(data: SiteData, mr: ModelResult) -> tuple[list[str], list[DeviceRow]]:
    """Longest context (batch 1) and decode tokens/s upper bound per device, in BF16 and 4-bit."""
    chat = data.workloads[0].id
    long_w = next((w.id for w in data.workloads if w.context == "max" and w.workload == "inference"), chat)
    shown = [p for p in ("bf16", FOUR_BIT) if mr.cell(long_w, p) and mr.cell(chat, p)]
    heads = []
    for p in shown:
        heads.append(f"Longest context, {data.precisions.precision(p).label}")
    for p in shown:
        heads.append(f"Decode tokens/s bound, {data.precisions.precision(p).label}")
    rows = []
    cache: dict[tuple[str, int], int] = {}
    for d in data.devices:
        vals = []
        for p in shown:
            key = (p, d.usable)
            if key not in cache:
                cache[key] = data.longest_context(mr, long_w, p, d.usable)
            n = cache[key]
            vals.append(f"{n:,}" if n else "does not fit")
        for p in shown:
            tps = data.decode(mr, chat, p, d)
            vals.append(f"{tps:,.0f}" if tps is not None and tps >= 10 else f"{tps:.1f}" if tps is not None else "—")
        rows.append(DeviceRow(Link(d.name, device_href(d.id)), gib(d.usable), vals))
    return heads, rows


def offload_table(data: SiteData, mr: ModelResult) -> tuple[list[str], list[DeviceRow]]:
    """GGUF partial offload (llama.cpp -ngl) on devices where a shown GGUF format does not fit whole."""
    chat = data.workloads[0].id
    chat_cells = mr.cells.get(chat, {})
    shown = {p: chat_cells[p] for p in GGUF_SHOWN if p in chat_cells}  # precision -> cell
    rows = []
    for d in data.devices:
        if all(c.verdict(d.usable) != fit.NO_FIT for c in shown.values()):
            continue
        vals = []
        for p, c in shown.items():
            if c.verdict(d.usable) != fit.NO_FIT:
                vals.append("all layers")
                continue
            off = data.offload(mr, chat, p, d.usable)
            assert off is not None
            vals.append(f"{off.layers_on_gpu} of {off.total_layers}" + (f" ({gib(off.cpu_bytes)} in RAM)"
                                                                       if off.layers_on_gpu else ""))
        rows.append(DeviceRow(Link(d.name, device_href(d.id)), gib(d.usable), vals))
    return [data.precisions.precision(p).label for p in shown], rows


@dataclass
class TrainingSummary:
    label: str
    total: str
    fits_on: list[Link]
    fits_count: str
    largest: str


def training_summaries(data: SiteData, mr: ModelResult) -> list[TrainingSummary]:
    out = []
    biggest = data.devices[-1]
    for w in data.workloads:
        if w.workload != "train" or w.id not in mr.cells:
            continue
        c = mr.cell(w.id, mr.default_precision[w.id])
        assert c is not None
        fits = [d for d in data.devices if c.verdict(d.usable) != fit.NO_FIT]
        n = c.needed.get(biggest.usable)
        per = " per GPU" if c.estimate.scenario.gpus > 1 else ""
        out.append(TrainingSummary(
            w.label, gib(c.total) + per, [Link(d.name, device_href(d.id)) for d in fits[:6]],
            f"{len(fits)} of {len(data.devices)} devices",
            f"{biggest.name}: {_needed_text(n, w.workload)}"))
    return out


@dataclass
class RuleRow:
    label: str
    value: str
    ratio: str
    source: Link | None


@dataclass
class RuleBlock:
    heading: str
    detailed: str
    rows: list[RuleRow]


def rule_blocks(data: SiteData, mr: ModelResult) -> list[RuleBlock]:
    out: list[RuleBlock] = []
    for w in data.workloads:
        if w.id not in mr.cells or w.workload not in ("inference", "train") or w.gpus > 1:
            continue
        if any(b.heading.startswith(w.workload) for b in out):
            continue
        c = mr.cell(w.id, mr.default_precision[w.id])
        assert c is not None and c.estimate.scenario.precision is not None
        prec = data.precisions.precision(c.estimate.scenario.precision)
        rows = []
        for r in rules_of_thumb(mr.model.params.total, prec.bytes_per_param_nominal, w.workload):
            text, _, url = r.source.rpartition(": ")
            value = gib(r.low_bytes) if r.low_bytes == r.high_bytes else f"{gib(r.low_bytes)} – {gib(r.high_bytes)}"
            mid = (r.low_bytes + r.high_bytes) / 2
            rows.append(RuleRow(r.label, value, f"{mid / c.total * 100:.0f}% of the detailed estimate",
                                Link(text or url, url) if safe_url(url) else None))
        out.append(RuleBlock(f"{w.workload}: {w.label}, {prec.label}", gib(c.total), rows))
    return out


@dataclass
class ChartView:
    chart: charts.LineChart
    title: str
    desc: str
    table_heads: list[str]
    table_rows: list[list[str]]


def context_chart(data: SiteData, mr: ModelResult) -> ChartView | None:
    chat = data.workloads[0].id
    arch = mr.model.architecture
    if not arch.max_context:
        return None
    pts = charts.context_points(arch.max_context)
    series = []
    for p in CHART_PRECISIONS:
        vals = data.context_curve(mr, chat, p, pts)
        if vals:
            series.append((p, data.precisions.precision(p).label, vals))
    if not series or len(pts) < 2:
        return None
    caps = [(u, short_device(devs[0].name) + (f" +{len(devs) - 1}" if len(devs) > 1 else ""))
            for u, devs in _capacity_groups(data)]
    chart = charts.line_chart(pts, series, caps)
    heads = ["Context"] + [label for _, label, _ in series]
    rows = [[f"{c:,}"] + [gib(vals[i]) for _, _, vals in series] for i, c in enumerate(pts)]
    desc = "; ".join(f"{label}: {gib(vals[0])} at {tokens(pts[0])} tokens, {gib(vals[-1])} at {tokens(pts[-1])}"
                     for _, label, vals in series)
    return ChartView(chart, f"Memory against context length for {mr.model.file.name}",
                     f"Chat inference at batch 1. {desc}. Horizontal lines mark device capacities.", heads, rows)


def model_facts(data: SiteData, mr: ModelResult) -> tuple[list[Fact], list[Fact]]:
    f = mr.model.file
    arch = mr.model.architecture
    facts = [Fact("Hugging Face id", f.id, safe_url(f.links.model_card)), Fact("Organization", f.organization),
             Fact("Family", f.family), Fact("Released", f.released.isoformat(), safe_url(f.sources.released)),
             Fact("License", f.license), Fact("Architecture", arch.model_type, safe_url(f.sources.architecture)),
             Fact("config.json", "source", safe_url(f.links.config)),
             Fact("Layers", str(arch.num_layers)), Fact("Hidden size", f"{arch.hidden_size:,}"),
             Fact("Attention heads", f"{arch.num_heads} query, {arch.num_kv_heads} key/value"),
             Fact("Maximum context", f"{arch.max_context:,} tokens" if arch.max_context else "—"),
             Fact("Vocabulary", f"{arch.vocab_size:,}")]
    if arch.is_moe:
        facts.append(Fact("Experts", f"{arch.num_experts} routed, {arch.experts_per_token} per token"))
    if f.tags:
        facts.append(Fact("Tags", ", ".join(f.tags)))
    p = mr.model.params
    pfacts = [Fact("Derived from the architecture", f"{p.total:,} ({params(p.total)})")]
    if p.active != p.total:
        pfacts.append(Fact("Active per token", f"{p.active:,} ({params(p.active)})"))
    if f.declared_params:
        d = f.declared_params.value
        diff = (p.total - d) / d
        pfacts.append(Fact("Declared", f"{d:,} ({params(d)}); derived differs by {diff * 100:+.2f}%",
                           safe_url(f.declared_params.source)))
    else:
        pfacts.append(Fact("Declared", "none in the catalog"))
    for g, n in p.by_group.items():
        if n:
            pfacts.append(Fact(f"… {g.replace('_', ' ')}", f"{n:,} ({pct(n / p.total)})"))
    return facts, pfacts


# --------------------------------------------------------------------------------------------------
# Downloads


CSV_FIELDS = ("model", "workload_id", "precision", "workload", "runtime", "recipe", "optimizer", "adapter_dtype",
              "context", "batch", "gpus", "zero", "kv_precision",
              "weights_bytes", "kv_cache_bytes", "activation_bytes", "gradient_bytes", "optimizer_bytes",
              "overhead_bytes", "total_bytes", "peak_phase")


def downloads(data: SiteData, mr: ModelResult) -> tuple[str, str]:
    doc: dict[str, Any] = {"model": mr.id, "name": mr.model.file.name, "params": mr.model.params.total,
                           "active_params": mr.model.params.active, "workloads": {}}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for w in data.workloads:
        for pid, c in mr.cells.get(w.id, {}).items():
            d = c.estimate.to_dict()
            doc["workloads"].setdefault(w.id, {})[pid] = d
            writer.writerow({"model": mr.id, "workload_id": w.id, **d, "precision": pid})
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n", buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Device page


@dataclass
class DeviceFitRow:
    model: Link
    precision: str
    total: str
    share: str
    verdict: str
    css: str
    mark: str


@dataclass
class DeviceWorkload:
    id: str
    label: str
    description: str
    rows: list[DeviceFitRow]
    misses: list[Link]


def device_workloads(data: SiteData, d: Device) -> list[DeviceWorkload]:
    out = []
    for w in data.workloads:
        rows, misses = [], []
        for mr in sorted(data.models, key=lambda m: (m.model.params.total, m.id)):
            if w.id not in mr.cells:
                continue
            link = Link(mr.model.file.name, model_href(mr.id))
            p = data.best_precision(mr, w.id, d.usable)
            if p is None:
                misses.append(link)
                continue
            c = mr.cells[w.id][p]
            v = c.verdict(d.usable)
            rows.append(DeviceFitRow(link, data.precisions.precision(p).label, gib(c.total), pct(c.total / d.usable),
                                     v, VERDICT_CLASS[v], VERDICT_MARK[v]))
        out.append(DeviceWorkload(w.id, w.label, w.description, rows, misses))
    return out


def device_facts(d: Device) -> list[Fact]:
    f = d.gpu.file
    m = f.memory
    out = [Fact("Vendor", f.vendor), Fact("Kind", f.kind), Fact("Released", f.released or "—"),
           Fact("Memory type", f.memory_type),
           Fact("Marketed memory", f"{m.marketed.value:g} {m.marketed.unit}", safe_url(m.marketed.source)),
           Fact("Reported memory", f"{m.reported.mib:,} MiB ({gib(d.gpu.reported_bytes)}), {m.reported.tool}",
                safe_url(m.reported.source)),
           Fact("Usable memory", f"{m.usable.mib:,} MiB ({gib(d.usable)}): {m.usable.reason}", safe_url(m.usable.source)),
           Fact("Memory bandwidth", f"{f.bandwidth.gb_per_s:,g} GB/s", safe_url(f.bandwidth.source))]
    if f.bf16_dense_tflops:
        out.append(Fact("BF16 dense", f"{f.bf16_dense_tflops.value:,g} TFLOPS", safe_url(f.bf16_dense_tflops.source)))
    return out


__all__ = ["GIB"]


# --------------------------------------------------------------------------------------------------
# Validation: estimates beside PyTorch's own accounting


@dataclass
class ValidationRow:
    model: Link
    question: str
    traced: str
    estimated: str
    error: str
    within: bool
    traced_phase: str
    estimated_phase: str


def _trace_question(c: dict[str, Any]) -> str:
    attention = "SDPA" if c["attention"] == "sdpa" else "eager attention"
    head = f"{tokens(int(c['context']))} tokens x {c['batch']}, {attention}"
    if c["workload"] == "inference":
        return f"Inference, {c.get('dtype', 'bf16')}, {head}" + (", all logits" if c.get("all_logits") else "")
    states = f"{c['optimizer']}, checkpointing {c['checkpointing']}"
    if c["workload"] == "train":
        return f"Full fine-tuning, recipe {c['recipe']}, {states}, {head}"
    return (f"LoRA r{c['lora_rank']} on {'+'.join(c['lora_targets'])}, {c['adapter_dtype']} adapters over "
            f"{c.get('dtype', 'bf16')}, {states}, {head}")


def validation_rows(data: SiteData, model_id: str | None = None) -> list[ValidationRow]:
    rows = []
    for v in data.validations if model_id is None else data.validations_of(model_id):
        cmp = v.comparison
        name = data.catalog.models[v.model_id].file.name
        rows.append(ValidationRow(
            model=Link(name, model_href(v.model_id)), question=_trace_question(v.conditions),
            traced=gib(cmp.traced_bytes), estimated=gib(cmp.estimated_bytes), error=f"{cmp.error * 100:+.1f}%",
            within=cmp.within_tolerance, traced_phase=v.traced_phase,
            estimated_phase=cmp.estimate.peak_phase.replace("_", " ")))
    return rows
