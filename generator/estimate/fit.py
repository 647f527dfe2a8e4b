"""Fit an estimate against a device: verdicts, devices needed, longest context, largest batch,
GGUF partial offload and a bandwidth bound on decode speed. Pure functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

from .architecture import EMBEDDINGS, EXPERTS, Architecture
from .memory import kv_cache_bytes
from .precision import PrecisionCatalog, weight_bytes
from .scenario import Estimate, Scenario, ScenarioError, estimate

TIGHT_FRACTION = Fraction(9, 10)  # over 90 % of usable memory is "tight"
FITS, TIGHT, NO_FIT = "fits", "tight", "does not fit"
DEVICE_COUNTS = (1, 2, 4, 8, 16, 32, 64)


def verdict(total_bytes: int, usable_bytes: int) -> str:
    if total_bytes > usable_bytes:
        return NO_FIT
    if total_bytes > usable_bytes * TIGHT_FRACTION:
        return TIGHT
    return FITS


def _fits(est: Estimate, usable_bytes: int) -> bool:
    return est.total_bytes <= est.budget(usable_bytes)


def _splittable(arch: Architecture, n: int) -> bool:
    """Tensor parallelism needs the attention heads to divide evenly (vLLM's rule)."""
    return arch.num_heads % n == 0


def devices_needed(arch: Architecture, scenario: Scenario, catalog: PrecisionCatalog, usable_bytes: int) -> int | None:
    """Fewest devices (1, 2, 4, ... 64) on which the scenario fits: tensor parallelism for inference,
    ZeRO-3 for training (keeping the scenario's stage if it has one). None if even 64 are not enough."""
    for n in DEVICE_COUNTS:
        if scenario.workload == "inference":
            if n > 1 and not _splittable(arch, n):
                continue
            s = replace(scenario, gpus=n)
        else:
            s = replace(scenario, gpus=n, zero=(scenario.zero or 3) if n > 1 else 0)
        try:
            est = estimate(arch, s, catalog)
            if est.total_bytes <= est.budget(usable_bytes):
                return n
        except ScenarioError:
            continue
    return None


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest x in [lo, hi] with ok(x), assuming ok is monotone decreasing; lo - 1 if none."""
    if not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def longest_context(arch: Architecture, scenario: Scenario, catalog: PrecisionCatalog, usable_bytes: int) -> int:
    """Longest context at batch 1 that fits (0 if none), capped at the model's maximum."""
    cap = arch.max_context or 1_048_576
    base = replace(scenario, batch=1)
    return max(0, _largest(1, cap, lambda c: _fits(estimate(arch, replace(base, context=c), catalog), usable_bytes)))


def largest_batch(arch: Architecture, scenario: Scenario, catalog: PrecisionCatalog, usable_bytes: int,
                  limit: int = 65_536) -> int:
    """Largest batch (concurrent sequences) at the scenario's context that fits (0 if none)."""
    return max(0, _largest(1, limit, lambda b: _fits(estimate(arch, replace(scenario, batch=b), catalog), usable_bytes)))


@dataclass(frozen=True)
class Offload:
    layers_on_gpu: int
    total_layers: int
    gpu_bytes: int
    cpu_bytes: int


def gguf_offload(arch: Architecture, scenario: Scenario, catalog: PrecisionCatalog, usable_bytes: int) -> Offload:
    """llama.cpp's -ngl: how many repeated layers (weights and their KV cache) fit in VRAM next to the
    compute buffer and overhead, the rest in system RAM. The token embedding stays in system RAM as
    llama.cpp keeps it; the output matrix goes to the GPU only when every layer does."""
    est = estimate(arch, scenario, catalog)
    s = est.scenario
    assert s.precision is not None  # an estimate's scenario is resolved
    wb = weight_bytes(arch, catalog.precision(s.precision), catalog)
    kv_total = est.kv_cache_bytes
    kv_layer = -(-kv_total // arch.num_layers)
    fixed = est.activation_bytes + est.overhead_bytes
    budget = usable_bytes - fixed
    used = 0
    k = 0
    for layer_bytes in wb.per_layer:
        if used + layer_bytes + kv_layer > budget:
            break
        used += layer_bytes + kv_layer
        k += 1
    total = wb.total + kv_total
    gpu = used + fixed if k else 0
    return Offload(layers_on_gpu=k, total_layers=arch.num_layers, gpu_bytes=gpu, cpu_bytes=total - used)


def decode_tokens_per_second(arch: Architecture, est: Estimate, catalog: PrecisionCatalog,
                             bandwidth_bytes_per_s: float) -> float:
    """Upper bound on single-sequence decode speed: each new token reads the active weights once (the
    routed experts' share for MoE; one embedding row rather than the whole table) plus the whole KV
    cache. Memory bandwidth / bytes read per token, per GPU (tensor parallel GPUs read in parallel)."""
    s = est.scenario
    assert s.precision is not None and s.kv_precision is not None  # an estimate's scenario is resolved
    wb = weight_bytes(arch, catalog.precision(s.precision), catalog)
    read = wb.total - wb.by_group.get(EMBEDDINGS, 0)
    if arch.is_moe:
        read -= wb.by_group.get(EXPERTS, 0) * (arch.num_experts - arch.experts_per_token) // arch.num_experts
    read = -(-read // s.gpus)
    kv = kv_cache_bytes(arch, s.context, 1, catalog.kv_bytes_per_element(s.kv_precision), tp=s.gpus)
    return bandwidth_bytes_per_s / (read + kv)


__all__ = ["DEVICE_COUNTS", "FITS", "NO_FIT", "TIGHT", "Offload", "TIGHT_FRACTION", "decode_tokens_per_second",
           "devices_needed", "gguf_offload", "largest_batch", "longest_context", "verdict"]
