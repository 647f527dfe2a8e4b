"""Weight storage per precision, tensor by tensor.

A *storage type* says how one tensor is laid out in memory (f16, q4_K blocks, NF4 with double
quantisation, ...). A *precision* (what users pick: ``bf16``, ``q4_k_m``, ``nf4``) is a default storage
type plus ordered rules that choose another type for some tensors — the way llama.cpp's
``llama_tensor_get_type`` keeps the output matrix in q6_K, or bitsandbytes leaves embeddings in 16 bit.
Both live in ``data/precisions.yaml``; this module only interprets them. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .architecture import Architecture, Tensor, memo, memo_key
from .runtime import Runtime


class PrecisionError(ValueError):
    pass


@dataclass(frozen=True)
class StorageType:
    id: str
    label: str
    # Block formats (ggml, MXFP4): `block` weights along a row take `block_bytes`; the row length
    # must be a multiple of `block`, otherwise `fallback` is used (llama.cpp's fallback table).
    block: int = 1
    block_bytes: Fraction = Fraction(0)
    fallback: str | None = None
    # Group formats (bitsandbytes, GPTQ, FP8): payload bits per weight plus overheads.
    bits: int = 0
    per_group: tuple[tuple[int, Fraction], ...] = ()  # (weights per group, bytes per group), flattened
    per_row_group: tuple[int, Fraction] | None = None  # groups of k inputs within each output row
    per_row: Fraction = Fraction(0)  # bytes per output row (e.g. LLM.int8's fp32 row scale)
    per_input: Fraction = Fraction(0)  # bytes per input column (e.g. GPTQ's int32 g_idx)
    per_tile: tuple[int, int, Fraction] | None = None  # (rows, cols, bytes): 2-D block scales
    per_tensor: int = 0  # fixed bytes per tensor (e.g. bitsandbytes' quantisation maps)

    @property
    def is_block(self) -> bool:
        return self.block > 1 and self.block_bytes > 0

    def fits(self, t: Tensor) -> bool:
        return not self.is_block or t.row_length % self.block == 0

    def bytes_for(self, t: Tensor) -> int:
        n = t.numel
        if self.is_block:
            return int(n // self.block * self.block_bytes)
        total = Fraction(n * self.bits, 8)
        for size, b in self.per_group:
            total += -(-n // size) * b
        if t.is_matrix:
            rows = n // t.row_length
            if self.per_row_group:
                k, b = self.per_row_group
                total += rows * -(-t.row_length // k) * b
            total += rows * self.per_row
            # One per-input-column entry per matrix (per expert for stacked experts).
            mats = n // (t.shape[-1] * t.shape[-2])
            total += mats * t.row_length * self.per_input
            if self.per_tile:
                tr, tc, b = self.per_tile
                total += mats * -(-t.shape[-2] // tr) * -(-t.row_length // tc) * b
            total += self.per_tensor
        return int(-(-total // 1))  # ceil to whole bytes


@dataclass(frozen=True)
class Rule:
    type: str
    names: tuple[str, ...] = ()  # substrings of the tensor name, as llama.cpp matches them
    groups: tuple[str, ...] = ()
    dims: str | None = None  # "matrix" or "vector"
    when: tuple[str, ...] = ()  # named conditions, all must hold (see CONDITIONS)


@dataclass(frozen=True)
class Precision:
    id: str
    label: str
    family: str  # float | gguf | bitsandbytes | gptq | fp8 | mxfp4
    default: str
    rules: tuple[Rule, ...]
    description: str = ""
    source: str = ""
    bytes_per_param_nominal: Fraction = Fraction(2)  # for the rules of thumb: bits/8 of the headline type


@dataclass(frozen=True)
class PrecisionCatalog:
    types: Mapping[str, StorageType]
    precisions: Mapping[str, Precision]
    kv_types: Mapping[str, Fraction]  # bytes per cached element
    kv_labels: Mapping[str, str] = field(default_factory=dict)
    # Runtime profiles (data/runtimes.yaml). Without them the estimator uses generic assumptions: the whole
    # prompt in one pass, bf16 KV (f16 for GGUF), mixed-precision AdamW with a foreach step, 1 GiB overhead.
    runtimes: Mapping[str, Runtime] = field(default_factory=dict)

    def precision(self, pid: str) -> Precision:
        try:
            return self.precisions[pid]
        except KeyError:
            raise PrecisionError(f"unknown precision {pid!r}; choose one of: {', '.join(self.precisions)}") from None

    def kv_bytes_per_element(self, kid: str) -> Fraction:
        try:
            return self.kv_types[kid]
        except KeyError:
            raise PrecisionError(f"unknown KV-cache precision {kid!r}; choose one of: {', '.join(self.kv_types)}") from None


def _frac(value: Any, where: str) -> Fraction:
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise PrecisionError(f"{where}: {value!r} is not a number") from None


def parse_precision_catalog(data: Mapping[str, Any]) -> PrecisionCatalog:
    """Interpret the parsed data/precisions.yaml (already schema-checked by the catalog loader)."""
    types: dict[str, StorageType] = {}
    for tid, spec in data["storage_types"].items():
        per_group = tuple((int(g["weights"]), _frac(g["bytes"], tid)) for g in spec.get("per_group", []))
        prg = spec.get("per_row_group")
        tile = spec.get("per_tile")
        types[tid] = StorageType(
            id=tid, label=spec.get("label", tid), block=int(spec.get("block", 1)),
            block_bytes=_frac(spec.get("block_bytes", 0), tid), fallback=spec.get("fallback"),
            bits=int(spec.get("bits", 0)), per_group=per_group,
            per_row_group=(int(prg["inputs"]), _frac(prg["bytes"], tid)) if prg else None,
            per_row=_frac(spec.get("per_row", 0), tid), per_input=_frac(spec.get("per_input", 0), tid),
            per_tile=(int(tile["rows"]), int(tile["cols"]), _frac(tile["bytes"], tid)) if tile else None,
            per_tensor=int(spec.get("per_tensor", 0)),
        )
    precisions: dict[str, Precision] = {}
    for pid, spec in data["precisions"].items():
        rules = tuple(
            Rule(type=r["type"], names=tuple(r.get("names", ())), groups=tuple(r.get("groups", ())),
                 dims=r.get("dims"), when=tuple(r.get("when", ())))
            for r in spec.get("rules", [])
        )
        for tid in [spec["default"], *(r.type for r in rules)]:
            if tid not in types:
                raise PrecisionError(f"precision {pid}: unknown storage type {tid!r}")
        for r in rules:
            for cond in r.when:
                if cond not in CONDITIONS:
                    raise PrecisionError(f"precision {pid}: unknown condition {cond!r}")
        default = types[spec["default"]]
        nominal = (default.block_bytes * 8 / default.block) if default.is_block else Fraction(default.bits)
        precisions[pid] = Precision(
            id=pid, label=spec["label"], family=spec["family"], default=spec["default"], rules=rules,
            description=spec.get("description", ""), source=spec.get("source", ""),
            bytes_per_param_nominal=Fraction(spec.get("nominal_bits", nominal)) / 8,
        )
    kv = {k: _frac(v["bytes_per_element"], k) for k, v in data["kv_cache_types"].items()}
    kv_labels = {k: v.get("label", k) for k, v in data["kv_cache_types"].items()}
    return PrecisionCatalog(types=types, precisions=precisions, kv_types=kv, kv_labels=kv_labels)


# --------------------------------------------------------------------------------------------------
# Conditions of llama.cpp's llama_tensor_get_type, evaluated per tensor.


@dataclass(frozen=True)
class _Ctx:
    arch: Architecture
    index: int  # llama.cpp's running counter (i_attention_wv / layer of ffn_down)
    count: int  # n_attention_wv / n_layer


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _is_70b(arch: Architecture) -> bool:
    # llama.cpp's LLM_TYPE_70B: an 80-layer llama (with GQA) or qwen2.
    return arch.num_layers == 80 and (
        arch.model_type == "qwen2"
        or (arch.model_type in ("llama", "mistral") and arch.num_kv_heads != arch.num_heads))


CONDITIONS: dict[str, Callable[[_Ctx], bool]] = {
    "use_more_bits": lambda c: _use_more_bits(c.index, c.count),
    "first_eighth": lambda c: c.index < c.count // 8,
    "first_sixteenth": lambda c: c.index < c.count // 16,
    "first_two": lambda c: c.index < 2,
    "first_four": lambda c: c.index < 4,
    "gqa_at_least_4": lambda c: c.arch.num_heads // c.arch.num_kv_heads >= 4,
    "experts_eq_8": lambda c: c.arch.num_experts == 8,
    "experts_at_least_4": lambda c: c.arch.num_experts >= 4,
    "falcon": lambda c: c.arch.model_type == "falcon",
    "not_falcon": lambda c: c.arch.model_type != "falcon",
    "llama_70b": lambda c: _is_70b(c.arch),
}


def _output_tensor(arch: Architecture) -> str:
    return "token_embd.weight" if arch.tied_embeddings else "output.weight"


def _matches(rule: Rule, t: Tensor, arch: Architecture, ctx: _Ctx) -> bool:
    if rule.dims == "matrix" and not t.is_matrix:
        return False
    if rule.dims == "vector" and t.is_matrix:
        return False
    if rule.groups and t.group not in rule.groups:
        return False
    if rule.names:
        name = t.name
        hit = False
        for pattern in rule.names:
            if pattern == "output":  # the output matrix; the token embedding when they are tied
                hit = name == _output_tensor(arch)
            elif pattern == "token_embd":  # the token embedding only when it is not also the output
                hit = name == "token_embd.weight" and not arch.tied_embeddings
            else:
                hit = pattern in name
            if hit:
                break
        if not hit:
            return False
    return all(CONDITIONS[c](ctx) for c in rule.when)


@dataclass(frozen=True)
class WeightBreakdown:
    total: int
    by_group: Mapping[str, int]
    by_type: Mapping[str, int]  # bytes per storage type
    params_by_type: Mapping[str, int]
    per_layer: Sequence[int]  # bytes of each repeated block (for partial GPU offload)
    outside_layers: int  # embeddings, output, final norm


def assign_types(arch: Architecture, precision: Precision, catalog: PrecisionCatalog) -> list[tuple[Tensor, StorageType]]:
    """The storage type of every tensor, following the precision's rules in order (first match wins)."""
    n_wv = sum(1 for t in arch.tensors if any(p in t.name for p in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")))
    i_wv = 0
    i_down = 0
    out = []
    for t in arch.tensors:
        if "attn_v.weight" in t.name:
            ctx = _Ctx(arch, i_wv, n_wv)
            i_wv += 1
        elif "ffn_down" in t.name and t.is_matrix:
            # llama.cpp: for MoE models the layer comes from the tensor name, else a running counter.
            idx = t.layer if arch.is_moe and t.layer is not None else i_down
            ctx = _Ctx(arch, idx, arch.num_layers)
            i_down += 1
        else:
            ctx = _Ctx(arch, t.layer or 0, arch.num_layers)
        tid = precision.default
        for rule in precision.rules:
            if _matches(rule, t, arch, ctx):
                tid = rule.type
                break
        st = catalog.types[tid]
        seen = set()
        while not st.fits(t):  # llama.cpp's fallback for rows not divisible by the block size
            if st.fallback is None or st.id in seen:
                raise PrecisionError(f"{precision.id}: tensor {t.name} has rows of {t.row_length}, "
                                     f"not a multiple of {st.block}, and {st.id} has no fallback")
            seen.add(st.id)
            st = catalog.types[st.fallback]
        out.append((t, st))
    return out


def weight_bytes(arch: Architecture, precision: Precision, catalog: PrecisionCatalog) -> WeightBreakdown:
    """Bytes of every tensor in its storage type, by group, by type and per layer (memoised)."""
    return memo(arch, ("weights", precision, memo_key(arch, catalog)), lambda: _weight_bytes(arch, precision, catalog))


def _weight_bytes(arch: Architecture, precision: Precision, catalog: PrecisionCatalog) -> WeightBreakdown:
    by_group: dict[str, int] = {}
    by_type: dict[str, int] = {}
    params_by_type: dict[str, int] = {}
    per_layer = [0] * arch.num_layers
    outside = 0
    for t, st in assign_types(arch, precision, catalog):
        b = st.bytes_for(t)
        by_group[t.group] = by_group.get(t.group, 0) + b
        by_type[st.id] = by_type.get(st.id, 0) + b
        params_by_type[st.id] = params_by_type.get(st.id, 0) + t.numel
        if t.layer is not None and t.layer < arch.num_layers:
            per_layer[t.layer] += b
        else:
            outside += b
    return WeightBreakdown(total=sum(by_group.values()), by_group=by_group, by_type=by_type,
                           params_by_type=params_by_type, per_layer=per_layer, outside_layers=outside)
