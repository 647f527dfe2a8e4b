"""One estimate: an architecture, a precision and a workload in, a per-GPU memory breakdown out.

Inference total = weights + KV cache + transient prefill activations + runtime overhead.
Training total = the largest of three phases (end of forward, during backward, optimizer step), since
activations are freed while gradients grow and gradients are set to None after each step.
Pure functions; every number is bytes (int).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from .architecture import NORMS, ROUTER, Architecture, ParamCounts, count_parameters, memo, memo_key
from .memory import inference_activations, kv_cache_bytes, training_activations
from .precision import Precision, PrecisionCatalog, weight_bytes
from .training import (
    LORA_DEFAULT_GROUPS, OPTIMIZERS, full_training_states, lora_modules_per_layer, lora_parameters, lora_targets,
    optimizer_state_bytes, step_temporary_bytes, zero_share,
)

GIB = 2**30

# Runtime overhead before any weight is loaded: the CUDA context and kernel images, cuBLAS/cuDNN
# workspaces and allocator slack. Hugging Face's "model memory anatomy" guide measures 1343 MB for
# the CUDA kernels alone on a V100; vLLM reports 0.05-1.8 GiB of non-torch memory. 1 GiB is a middle
# value; override it with --overhead-gib.
DEFAULT_OVERHEAD_BYTES = 1 * GIB

WORKLOADS = ("inference", "train", "lora", "qlora")
CHECKPOINTING = ("none", "selective", "full")
FLOAT_TRAINING_PRECISIONS = ("bf16", "fp16", "fp32")


class ScenarioError(ValueError):
    """An option that makes no sense for the workload (the CLI reports it as a usage error)."""


@dataclass(frozen=True)
class Scenario:
    workload: str = "inference"
    precision: str | None = None  # default: bf16, and nf4 for qlora
    context: int = 4096
    batch: int = 1
    kv_precision: str | None = None  # default: f16 for GGUF formats (llama.cpp), else bf16
    optimizer: str | None = None  # default: adamw, adamw_8bit for qlora
    checkpointing: str = "none"
    zero: int = 0
    gpus: int = 1
    lora_rank: int | None = None  # default: 16, 64 for qlora
    lora_targets: tuple[str, ...] = LORA_DEFAULT_GROUPS  # tensor groups whose linear layers get adapters
    flash_attention: bool = True
    all_logits: bool = False
    prefill_chunk: int | None = None  # tokens per prefill pass; None = the whole prompt at once
    overhead_bytes: int = DEFAULT_OVERHEAD_BYTES
    gradient_accumulation: int = 1

    def resolved(self, catalog: PrecisionCatalog) -> Scenario:
        """Fill defaults and reject combinations that make no sense."""
        if self.workload not in WORKLOADS:
            raise ScenarioError(f"unknown workload {self.workload!r}; choose one of: {', '.join(WORKLOADS)}")
        qlora = self.workload == "qlora"
        precision = self.precision or ("nf4" if qlora else "bf16")
        prec = catalog.precision(precision)
        if self.workload == "train" and precision not in FLOAT_TRAINING_PRECISIONS:
            raise ScenarioError(f"full training needs --precision bf16, fp16 or fp32, not {precision!r}; "
                                "for a quantized base use --workload qlora or lora")
        if qlora and precision != "nf4":
            raise ScenarioError(f"QLoRA uses an NF4 base; --precision {precision} does not apply "
                                "(use --workload lora for another base precision)")
        kv = self.kv_precision or ("f16" if prec.family == "gguf" else "bf16")
        catalog.kv_bytes_per_element(kv)
        optimizer = self.optimizer or ("adamw_8bit" if qlora else "adamw")
        if optimizer not in OPTIMIZERS:
            raise ScenarioError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.checkpointing not in CHECKPOINTING:
            raise ScenarioError(f"--checkpointing must be one of {', '.join(CHECKPOINTING)}")
        for name, value, top in (("context", self.context, 10_000_000), ("batch", self.batch, 1_000_000),
                                 ("gpus", self.gpus, 100_000), ("gradient accumulation",
                                                                self.gradient_accumulation, 1_000_000)):
            if value < 1 or value > top:
                raise ScenarioError(f"--{name} must be between 1 and {top:,}, got {value}")
        if self.prefill_chunk is not None:
            if self.workload != "inference":
                raise ScenarioError("--prefill-chunk applies to inference")
            if not 1 <= self.prefill_chunk <= 10_000_000:
                raise ScenarioError(f"--prefill-chunk must be between 1 and 10,000,000, got {self.prefill_chunk}")
        if self.zero not in (0, 1, 2, 3):
            raise ScenarioError(f"--zero must be 0, 1, 2 or 3, got {self.zero}")
        if self.zero and self.workload == "inference":
            raise ScenarioError("--zero applies to training; inference over several GPUs uses tensor parallelism (--gpus)")
        if self.zero and self.gpus == 1:
            raise ScenarioError("--zero partitions states over several GPUs; give --gpus N with N > 1")
        if self.workload in ("train", "lora", "qlora") and self.gpus > 1 and not self.zero:
            raise ScenarioError("training on several GPUs needs a ZeRO stage to partition memory (--zero 1, 2 or 3); "
                                "plain data parallelism keeps a full copy on every GPU (use --gpus 1)")
        rank = self.lora_rank if self.lora_rank is not None else (64 if qlora else 16)
        if self.workload in ("lora", "qlora"):
            if not 1 <= rank <= 65_536:
                raise ScenarioError(f"--lora-rank must be between 1 and 65536, got {rank}")
            bad = [g for g in self.lora_targets if g not in LORA_DEFAULT_GROUPS]
            if bad or not self.lora_targets:
                raise ScenarioError(f"--lora-targets takes a comma-separated subset of {', '.join(LORA_DEFAULT_GROUPS)}")
        elif self.lora_rank is not None:
            raise ScenarioError("--lora-rank applies only to --workload lora or qlora")
        if self.workload == "inference" and (self.optimizer or self.checkpointing != "none"):
            raise ScenarioError("--optimizer and --checkpointing apply to training workloads, not inference")
        if self.overhead_bytes < 0 or self.overhead_bytes > 1024 * GIB:
            raise ScenarioError("the runtime overhead must be between 0 and 1024 GiB")
        training = self.workload != "inference"
        return replace(self, precision=precision, kv_precision=kv, optimizer=optimizer if training else None,
                       lora_rank=rank if self.workload in ("lora", "qlora") else None)


@dataclass(frozen=True)
class Phase:
    name: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass(frozen=True)
class Estimate:
    scenario: Scenario
    params: int
    active_params: int
    trainable_params: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    gradient_bytes: int
    optimizer_bytes: int  # fp32 master weights included
    overhead_bytes: int
    phases: tuple[Phase, ...]
    weights_by_type: dict[str, int] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)

    @property
    def total_bytes(self) -> int:
        return self.peak.total

    @property
    def peak_phase(self) -> str:
        return self.peak.name

    def to_dict(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "workload": s.workload, "precision": s.precision, "kv_precision": s.kv_precision,
            "context": s.context, "batch": s.batch, "gpus": s.gpus, "zero": s.zero,
            "optimizer": s.optimizer if s.workload != "inference" else None,
            "checkpointing": s.checkpointing if s.workload != "inference" else None,
            "lora_rank": s.lora_rank if s.workload in ("lora", "qlora") else None,
            "flash_attention": s.flash_attention,
            "params": self.params, "active_params": self.active_params, "trainable_params": self.trainable_params,
            "weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
            "activation_bytes": self.activation_bytes, "gradient_bytes": self.gradient_bytes,
            "optimizer_bytes": self.optimizer_bytes, "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes, "peak_phase": self.peak_phase,
            "phases": {p.name: {**p.parts, "total_bytes": p.total} for p in self.phases},
            "weights_by_type": dict(sorted(self.weights_by_type.items())),
            "assumptions": list(self.assumptions),
        }


def _weights_per_gpu(arch: Architecture, prec: Precision, catalog: PrecisionCatalog, tp: int) -> tuple[int, dict[str, int]]:
    """Weights on each of `tp` tensor-parallel GPUs: norms and routers are replicated, everything else
    (attention and MLP matrices, vocab-parallel embedding and lm_head) is split."""
    wb = weight_bytes(arch, prec, catalog)
    if tp == 1:
        return wb.total, dict(wb.by_type)
    replicated = wb.by_group.get(NORMS, 0) + wb.by_group.get(ROUTER, 0)
    per_gpu = replicated + -(-(wb.total - replicated) // tp)
    return per_gpu, {k: -(-v // tp) for k, v in wb.by_type.items()}


def estimate(arch: Architecture, scenario: Scenario, catalog: PrecisionCatalog) -> Estimate:
    """The estimate of one scenario (memoised per architecture; raises ScenarioError or PrecisionError)."""
    return memo(arch, ("estimate", scenario, memo_key(arch, catalog)), lambda: _estimate(arch, scenario, catalog))


def _estimate(arch: Architecture, scenario: Scenario, catalog: PrecisionCatalog) -> Estimate:
    s = scenario.resolved(catalog)
    # resolved() always fills the precision and the KV-cache type (and rejects unknown ones).
    assert s.precision is not None and s.kv_precision is not None
    prec = catalog.precision(s.precision)
    counts = count_parameters(arch)
    kv_bpe = catalog.kv_bytes_per_element(s.kv_precision)
    assumptions = [
        f"Weights stored as {prec.label}: {prec.description}".strip(),
        f"Runtime overhead {s.overhead_bytes / GIB:.2f} GiB (CUDA context, kernels, workspaces, allocator slack).",
        *arch.notes,
    ]
    if s.workload == "inference":
        return _inference(arch, s, prec, catalog, counts, kv_bpe, assumptions)
    return _training(arch, s, prec, catalog, counts, assumptions)


def _inference(arch: Architecture, s: Scenario, prec: Precision, catalog: PrecisionCatalog, counts: ParamCounts,
               kv_bpe: Fraction, assumptions: list[str]) -> Estimate:
    assert s.kv_precision is not None  # `s` is resolved
    weights, by_type = _weights_per_gpu(arch, prec, catalog, s.gpus)
    kv = kv_cache_bytes(arch, s.context, s.batch, kv_bpe, tp=s.gpus)
    act = inference_activations(arch, s.context, s.batch, flash_attention=s.flash_attention,
                                all_logits=s.all_logits, tp=s.gpus, prefill_chunk=s.prefill_chunk)
    assumptions += [
        f"KV cache in {catalog.kv_labels.get(s.kv_precision, s.kv_precision)} for {s.batch} x {s.context:,} tokens"
        + (f", KV heads split over {s.gpus} GPUs (at least one per GPU)" if s.gpus > 1 else "") + ".",
        ("Prefill of the whole prompt in one pass; " if s.prefill_chunk is None else
         f"Chunked prefill, at most {s.prefill_chunk:,} tokens per forward pass; ") + (
            "flash attention (no s^2 score matrix)." if s.flash_attention else
            "eager attention materialises heads x tokens x context scores plus their fp32 softmax."),
        "Logits kept for " + ("every position." if s.all_logits else "the last position only (generation)."),
    ]
    if s.gpus > 1:
        assumptions.append(f"Tensor parallelism over {s.gpus} GPUs; norms and routers replicated; figures are per GPU.")
    phase = Phase("inference", {"weights": weights, "kv_cache": kv, "activations": act.total,
                                "overhead": s.overhead_bytes})
    return Estimate(
        scenario=s, params=counts.total, active_params=counts.active, trainable_params=0,
        weights_bytes=weights, kv_cache_bytes=kv, activation_bytes=act.total, gradient_bytes=0,
        optimizer_bytes=0, overhead_bytes=s.overhead_bytes, phases=(phase,), weights_by_type=by_type,
        assumptions=tuple(assumptions),
    )


def _training(arch: Architecture, s: Scenario, prec: Precision, catalog: PrecisionCatalog, counts: ParamCounts,
              assumptions: list[str]) -> Estimate:
    assert s.optimizer is not None  # `s` is resolved: training workloads always get an optimizer
    lora = s.workload in ("lora", "qlora")
    mixed = s.precision in ("bf16", "fp16") or lora
    n = s.gpus if s.zero else 1
    base, by_type = _weights_per_gpu(arch, prec, catalog, 1)
    if lora:
        assert s.lora_rank is not None  # `s` is resolved: LoRA workloads always get a rank
        targets = lora_targets(arch, s.lora_targets)
        trainable = lora_parameters(arch, s.lora_rank, s.lora_targets)
        if not trainable:
            raise ScenarioError("this architecture has no linear layers LoRA can adapt")
        # LoRA: 16-bit adapters with fp32 master copies (mixed precision). QLoRA (Dettmers et al. 2023):
        # bf16 adapters trained directly, no fp32 copy, paged 8-bit AdamW.
        master_per = 0 if s.workload == "qlora" else 4
        weights = zero_share(base, 3, s.zero, n) + zero_share(2 * trainable, 3, s.zero, n)
        grads = zero_share(2 * trainable, 2, s.zero, n)
        master = zero_share(master_per * trainable, 1, s.zero, n)
        opt = zero_share(optimizer_state_bytes(s.optimizer, params=trainable), 1, s.zero, n)
        temp = zero_share(step_temporary_bytes(s.optimizer, trainable, 4 if master_per else 2), 1, s.zero, n)
        per_layer_modules = lora_modules_per_layer(arch, s.lora_targets)
        acts = training_activations(arch, s.context, s.batch, checkpointing=s.checkpointing,
                                    flash_attention=s.flash_attention, lora_rank=s.lora_rank,
                                    lora_modules_per_layer=per_layer_modules)
        assumptions += [
            f"LoRA rank {s.lora_rank} on {len(targets)} weight matrices (the linear layers of "
            f"{', '.join(s.lora_targets)}): "
            f"{trainable:,} trainable parameters, r x (d_in + d_out) each.",
            "Frozen base; gradients and optimizer states for the adapters only; activations still flow "
            "through every frozen layer.",
        ]
        if s.workload == "qlora":
            assumptions.append("QLoRA: NF4 base with double quantization, bf16 adapters, paged 8-bit AdamW.")
    else:
        trainable = counts.total
        st = full_training_states(trainable, s.optimizer, mixed_precision=mixed, zero=s.zero, gpus=n,
                                  tensors=arch.tensors, weight_bytes=2)
        weights, grads, master, opt, temp = st.weights, st.gradients, st.master_weights, st.optimizer, st.step_temporary
        acts = training_activations(arch, s.context, s.batch, checkpointing=s.checkpointing,
                                    flash_attention=s.flash_attention)
        if mixed:
            assumptions.append(f"Mixed precision ({s.precision} weights and gradients, fp32 master weights), "
                               "as in ZeRO's (2 + 2 + K) bytes per parameter.")
        else:
            assumptions.append("Pure fp32 training: 4-byte weights and gradients, no master copy.")
        by_type = {prec.default: weights}  # bf16 -> bf16, fp16 -> f16, fp32 -> f32
    if s.zero:
        assumptions.append(f"ZeRO stage {s.zero} over {n} GPUs: "
                           + {1: "optimizer states", 2: "optimizer states and gradients",
                              3: "optimizer states, gradients and parameters"}[s.zero]
                           + " partitioned; activations are per GPU (each GPU runs its own micro-batch).")
    assumptions += [
        f"Activations for a micro-batch of {s.batch} x {s.context:,} tokens, gradient checkpointing "
        f"'{s.checkpointing}', " + ("flash attention" if s.flash_attention else "eager attention") + ".",
        f"Optimizer {s.optimizer}; gradients are set to None after each step.",
    ]
    zero3_gather = 0
    if s.zero >= 3:
        # ZeRO-3 gathers one layer's full 16-bit parameters at a time for compute.
        zero3_gather = max(
            sum(t.numel for t in arch.tensors if t.layer == i) for i in range(arch.num_layers)) * 2
        if lora:
            zero3_gather = 0
    act_layers = list(acts.per_layer)
    # Gradients per layer, proportional to that layer's share of the trainable parameters.
    if lora:
        layer_share = [0] * arch.num_layers
        for t in lora_targets(arch, s.lora_targets):
            if t.layer is not None and t.layer < arch.num_layers:
                layer_share[t.layer] += 1
        total_share = sum(layer_share) or 1
        grad_layers = [grads * x // total_share for x in layer_share]
    else:
        layer_params = [0] * arch.num_layers
        for t in arch.tensors:
            if t.layer is not None and t.layer < arch.num_layers:
                layer_params[t.layer] += t.numel
        grad_layers = [grads * p // max(trainable, 1) for p in layer_params]
    grad_outside = grads - sum(grad_layers)
    held_grads = grads if s.gradient_accumulation > 1 else 0
    forward = Phase("forward", {"weights": weights, "optimizer": master + opt, "gradients": held_grads,
                                "activations": acts.total - acts.workspace + zero3_gather,
                                "overhead": s.overhead_bytes})
    # Backward: layers run last to first; after k layers, their gradients exist and their activations
    # are freed. The largest point of that walk, plus one layer's recomputation/backward workspace.
    best_grads, best_acts = grad_outside, sum(act_layers) + acts.outside
    done_grads = grad_outside
    remaining = sum(act_layers)
    for i in reversed(range(arch.num_layers)):
        done_grads += grad_layers[i]
        remaining -= act_layers[i]
        cand_acts = remaining + 2 * s.batch * s.context * arch.hidden_size * 2
        if max(done_grads, held_grads) + cand_acts > max(best_grads, held_grads) + best_acts:
            best_grads, best_acts = done_grads, cand_acts
    backward = Phase("backward", {"weights": weights, "optimizer": master + opt,
                                  "gradients": max(best_grads, held_grads),
                                  "activations": best_acts + acts.workspace + zero3_gather,
                                  "overhead": s.overhead_bytes})
    step = Phase("optimizer_step", {"weights": weights, "optimizer": master + opt + temp, "gradients": grads,
                                    "activations": 0, "overhead": s.overhead_bytes})
    assumptions.append(f"Optimizer step holds {temp / GIB:.2f} GiB of temporaries "
                       "(PyTorch's foreach implementation: one parameter-sized buffer)."
                       if temp else "Optimizer step needs no parameter-sized temporaries (fused kernel).")
    return Estimate(
        scenario=s, params=counts.total, active_params=counts.active, trainable_params=trainable,
        weights_bytes=weights, kv_cache_bytes=0, activation_bytes=acts.total + zero3_gather,
        gradient_bytes=grads, optimizer_bytes=master + opt, overhead_bytes=s.overhead_bytes,
        phases=(forward, backward, step), weights_by_type=by_type, assumptions=tuple(assumptions),
    )


__all__ = ["DEFAULT_OVERHEAD_BYTES", "Estimate", "GIB", "Phase", "Scenario", "ScenarioError", "estimate"]
