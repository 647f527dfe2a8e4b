"""Estimates against PyTorch's own accounting: the committed traces (data/traces/) and the estimate of the same
question. One mapping from a trace's conditions to a Scenario serves the test that guards the error and the
site's Validation page."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .estimate.architecture import Architecture
from .estimate.precision import PrecisionCatalog
from .estimate.scenario import Estimate, Scenario, estimate

TOLERANCE = 0.10  # every committed trace is within ±10 % of its estimate (tests/test_traces.py)
RUNTIME = "transformers"  # what a trace runs: transformers' models, generate's prefill, peft, torch optimizers


def scenario_for_trace(conditions: Mapping[str, Any]) -> Scenario:
    """The estimate's question for a trace's conditions: the transformers runtime, no overhead (a trace holds
    tensors only: no CUDA context, workspaces or allocator slack)."""
    c = conditions
    workload = c["workload"]
    common: dict[str, Any] = dict(workload=workload, context=c["context"], batch=c["batch"],
                                  flash_attention=c["attention"] == "sdpa", runtime=RUNTIME, overhead_bytes=0)
    if workload == "inference":
        return Scenario(precision=c.get("dtype") or "bf16", all_logits=bool(c.get("all_logits")), **common)
    training: dict[str, Any] = dict(optimizer=c["optimizer"], checkpointing=c["checkpointing"])
    if workload == "train":
        recipe = c["recipe"]
        return Scenario(precision="fp32" if recipe == "fp32" else "bf16", recipe=recipe, **training, **common)
    return Scenario(precision=c.get("dtype") or "bf16", lora_rank=c["lora_rank"],
                    lora_targets=tuple(c["lora_targets"]), adapter_dtype=c["adapter_dtype"], **training, **common)


@dataclass(frozen=True)
class Comparison:
    traced_bytes: int
    estimate: Estimate

    @property
    def estimated_bytes(self) -> int:
        return self.estimate.total_bytes

    @property
    def error(self) -> float:
        """(estimate - trace) / trace."""
        return (self.estimated_bytes - self.traced_bytes) / self.traced_bytes

    @property
    def within_tolerance(self) -> bool:
        return abs(self.error) <= TOLERANCE


def compare(arch: Architecture, conditions: Mapping[str, Any], traced_bytes: int,
            catalog: PrecisionCatalog) -> Comparison:
    return Comparison(traced_bytes, estimate(arch, scenario_for_trace(conditions), catalog))
