"""What one trace runs (its conditions), its file name, and its record; no torch here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

WORKLOADS = ("inference", "train", "lora")
ATTENTIONS = ("sdpa", "eager")
RECIPES = ("amp", "pure", "fp32")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "sgd", "adafactor")
CHECKPOINTING = ("none", "full")
DTYPES = ("bf16", "fp16", "fp32")
ADAPTER_DTYPES = ("fp32", "bf16")
LORA_GROUPS = ("attention", "mlp", "experts")

METHOD = ("FakeTensorMode on CPU (no weights, no GPU); peak of live tensor storage bytes from "
          "torch.distributed._tools.mem_tracker.MemTracker (global peak), cross-checked by a TorchDispatchMode "
          "storage counter; the autograd engine's gradient sums counted in place as in an untraced run; excludes the CUDA context, cuBLAS/NCCL workspaces, scratch inside kernels, allocator "
          "rounding and fragmentation, torch.compile fusion, fused loss kernels and weight-loading transients; "
          "kernels and autocast op lists are the CPU's")


class SpecError(ValueError):
    """A combination of options that does not describe a trace (an option that does not apply, a bad number)."""


@dataclass(frozen=True)
class TraceSpec:
    workload: str = "inference"
    context: int = 2048
    batch: int = 1
    attention: str = "sdpa"
    dtype: str = "bf16"  # inference weights; the frozen LoRA base
    all_logits: bool = False  # inference only
    recipe: str = "amp"  # train only
    optimizer: str = "adamw_torch_fused"  # train, lora
    checkpointing: str = "none"  # train, lora
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("attention", "mlp")
    adapter_dtype: str = "fp32"
    steps: int = 2

    def __post_init__(self) -> None:
        choices: list[tuple[str, str, tuple[str, ...]]] = [
            ("workload", self.workload, WORKLOADS), ("attention", self.attention, ATTENTIONS),
            ("dtype", self.dtype, DTYPES), ("recipe", self.recipe, RECIPES), ("optimizer", self.optimizer, OPTIMIZERS),
            ("checkpointing", self.checkpointing, CHECKPOINTING), ("adapter_dtype", self.adapter_dtype, ADAPTER_DTYPES)]
        for name, choice, allowed in choices:
            if choice not in allowed:
                raise SpecError(f"{name} must be one of {', '.join(allowed)}, not {choice!r}")
        ranges: list[tuple[str, int, int, int]] = [
            ("context", self.context, 1, 2**21), ("batch", self.batch, 1, 4096), ("lora_rank", self.lora_rank, 1, 4096),
            ("steps", self.steps, 1, 10)]
        for name, number, low, high in ranges:
            if not low <= number <= high:
                raise SpecError(f"{name} must be between {low} and {high}, not {number}")
        if not self.lora_targets or any(g not in LORA_GROUPS for g in self.lora_targets) \
                or len(set(self.lora_targets)) != len(self.lora_targets):
            raise SpecError(f"lora targets must be distinct groups among {', '.join(LORA_GROUPS)}, "
                            f"not {','.join(self.lora_targets) or 'nothing'}")

    @property
    def training(self) -> bool:
        return self.workload != "inference"

    @property
    def lora_alpha(self) -> int:
        """Twice the rank, the common choice; alpha scales the adapter output and changes no byte."""
        return 2 * self.lora_rank

    def conditions(self) -> dict[str, Any]:
        """Every condition that applies to the workload, in a fixed order; nothing that does not apply."""
        c: dict[str, Any] = {"workload": self.workload, "context": self.context, "batch": self.batch,
                             "attention": self.attention}
        if self.workload == "inference":
            c.update(dtype=self.dtype, all_logits=self.all_logits)
            return c
        if self.workload == "train":
            c["recipe"] = self.recipe
        else:
            c["dtype"] = self.dtype
        c.update(optimizer=self.optimizer, checkpointing=self.checkpointing)
        if self.workload == "lora":
            c.update(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=0.0,
                     lora_targets=list(self.lora_targets), adapter_dtype=self.adapter_dtype)
        c["steps"] = self.steps
        return c

    def slug(self) -> str:
        """The conditions as a file-name part; two different condition sets never share one."""
        tail = f"{self.attention}-c{self.context}-b{self.batch}"
        if self.workload == "inference":
            return f"inference-{tail}-{self.dtype}" + ("-all-logits" if self.all_logits else "")
        states = f"{self.optimizer}-ckpt_{self.checkpointing}-{tail}-s{self.steps}"
        if self.workload == "train":
            return f"train-{self.recipe}-{states}"
        return (f"lora-r{self.lora_rank}-{'_'.join(self.lora_targets)}-{self.adapter_dtype}-{states}"
                f"-{self.dtype}")


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of a config mapping."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_slug(model_id: str | None, config: Mapping[str, Any]) -> str:
    """ORG--NAME for a catalog model (its data/models file name), config-<hash prefix> for a bare config."""
    if model_id is not None:
        return model_id.replace("/", "--")
    return f"config-{config_sha256(config)[:12]}"


def file_name(model_id: str | None, config: Mapping[str, Any], spec: TraceSpec) -> str:
    return f"{model_slug(model_id, config)}--{spec.slug()}.yaml"
