"""Runtime profiles: how a runtime prefills, holds its KV cache, and what it adds around the tensors.

They live in ``data/runtimes.yaml``; this module only interprets them. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

GIB = 2**30

RECIPES = ("amp", "mixed", "pure", "fp32")
SLIDING_PREFILL = ("window", "prompt")


class RuntimeError_(ValueError):
    """An unknown runtime, or one that cannot run the requested workload or format."""


@dataclass(frozen=True)
class Runtime:
    id: str
    label: str
    workloads: tuple[str, ...]
    formats: tuple[str, ...]  # precision families it executes
    prefill_chunk: int | None  # tokens per prefill pass; None = the whole prompt at once
    kv_default: str  # a kv_cache_types id
    kv_block_tokens: int  # KV allocated per sequence in blocks of this many tokens
    sliding_window_prefill: str  # "window" or "prompt" (the whole prompt's K/V live through prefill)
    memory_fraction: Fraction  # share of device memory the runtime uses (vLLM gpu_memory_utilization)
    overhead_bytes: int
    default_optimizer: str | None = None
    default_recipe: str | None = None
    zero: bool = False  # partitions training states with ZeRO over data-parallel GPUs
    description: str = ""

    def kv_tokens(self, context: int) -> int:
        """Cache positions allocated for one sequence of `context` tokens."""
        return math.ceil(context / self.kv_block_tokens) * self.kv_block_tokens

    def budget(self, usable_bytes: int) -> int:
        """The part of a device's usable memory this runtime lets itself use."""
        return int(usable_bytes * self.memory_fraction)


def parse_runtime_catalog(data: Mapping[str, Any]) -> dict[str, Runtime]:
    """Interpret the parsed data/runtimes.yaml (already schema-checked by the catalog loader)."""
    out: dict[str, Runtime] = {}
    for rid, spec in data["runtimes"].items():
        kv = spec["kv_cache"]
        training = spec.get("training") or {}
        out[rid] = Runtime(
            id=rid, label=spec["label"], workloads=tuple(spec["workloads"]), formats=tuple(spec["formats"]),
            prefill_chunk=spec.get("prefill_chunk"), kv_default=kv["default_type"],
            kv_block_tokens=int(kv.get("block_tokens", 1)), sliding_window_prefill=kv.get("sliding_window_prefill", "window"),
            memory_fraction=Fraction(str(spec.get("memory_fraction", 1))),
            overhead_bytes=int(Fraction(str(spec["overhead_gib"])) * GIB),
            default_optimizer=training.get("default_optimizer"), default_recipe=training.get("default_recipe"),
            zero=bool(training.get("zero", False)), description=spec.get("description", ""),
        )
    return out


__all__ = ["RECIPES", "Runtime", "RuntimeError_", "SLIDING_PREFILL", "parse_runtime_catalog"]
