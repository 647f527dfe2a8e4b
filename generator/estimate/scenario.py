"""One estimate: an architecture, a precision and a workload in, a per-GPU memory breakdown out.

Inference total = weights + KV cache + transient prefill activations + runtime overhead.
Training total = the largest of three phases (end of forward, during backward, optimizer step), since
activations are freed while gradients grow and gradients are set to None after each step.
Pure functions; every number is bytes (int).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from .architecture import ATTENTION, EXPERTS, MLP, NORMS, ROUTER, Architecture, ParamCounts, count_parameters, memo, memo_key
from .memory import inference_activations, kv_cache_bytes, training_activations
from .precision import Precision, PrecisionCatalog, weight_bytes
from .runtime import RECIPES, Runtime
from .training import (
    LORA_DEFAULT_GROUPS, OPTIMIZER_ALIASES, OPTIMIZERS, RECIPE_SPECS, full_training_states, lora_modules_per_layer,
    lora_parameters, lora_saved_bytes, lora_targets, optimizer_spec, optimizer_state_bytes, step_temporary_bytes,
    zero_share,
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
ADAPTER_DTYPES = {"fp32": 4, "bf16": 2}
# The activation dtype an inference runs in, by weight precision: fp16 checkpoints and the fp16-based
# quantised formats compute in fp16, fp32 in fp32, everything else in bf16.
_COMPUTE_DTYPE = {"fp16": "fp16", "fp32": "fp32", "int8": "fp16", "int4": "fp16"}


def default_runtime(workload: str, family: str, zero: int, runtimes: Mapping[str, Runtime]) -> str | None:
    """The first runtime of the catalog that runs this workload in this format (and ZeRO, when asked)."""
    for rid, rt in runtimes.items():
        if workload in rt.workloads and family in rt.formats and (not zero or rt.zero):
            return rid
    return None


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
    prefill_chunk: int | None = None  # tokens per prefill pass; default: the runtime's (None = whole prompt)
    overhead_bytes: int | None = None  # default: the runtime's, else DEFAULT_OVERHEAD_BYTES
    gradient_accumulation: int = 1
    runtime: str | None = None  # default: the first runtime that runs the workload in the precision's format
    recipe: str | None = None  # full training: amp | mixed | pure | fp32; default: the runtime's
    adapter_dtype: str | None = None  # LoRA adapters: fp32 (peft's default) | bf16; bf16 for qlora

    def resolved(self, catalog: PrecisionCatalog) -> Scenario:
        """Fill defaults and reject combinations that make no sense."""
        if self.workload not in WORKLOADS:
            raise ScenarioError(f"unknown workload {self.workload!r}; choose one of: {', '.join(WORKLOADS)}")
        qlora = self.workload == "qlora"
        training = self.workload != "inference"
        lora = self.workload in ("lora", "qlora")
        precision = self.precision or ("nf4" if qlora else "bf16")
        prec = catalog.precision(precision)
        if self.workload == "train" and precision not in FLOAT_TRAINING_PRECISIONS:
            raise ScenarioError(f"full training needs --precision bf16, fp16 or fp32, not {precision!r}; "
                                "for a quantized base use --workload qlora or lora")
        if qlora and precision != "nf4":
            raise ScenarioError(f"QLoRA uses an NF4 base; --precision {precision} does not apply "
                                "(use --workload lora for another base precision)")
        if self.zero not in (0, 1, 2, 3):
            raise ScenarioError(f"--zero must be 0, 1, 2 or 3, got {self.zero}")
        rt: Runtime | None = None
        runtime = self.runtime
        if catalog.runtimes:
            runtime = runtime or default_runtime(self.workload, prec.family, self.zero, catalog.runtimes)
            if runtime is None or runtime not in catalog.runtimes:
                raise ScenarioError(f"unknown runtime {self.runtime!r}; choose one of: {', '.join(catalog.runtimes)}"
                                    if self.runtime else f"no runtime in the catalog runs {self.workload} in "
                                    f"{prec.label}")
            rt = catalog.runtimes[runtime]
            if self.workload not in rt.workloads:
                raise ScenarioError(f"{rt.label} does not run {self.workload} workloads "
                                    f"(it runs: {', '.join(rt.workloads)})")
            if prec.family not in rt.formats:
                raise ScenarioError(f"{rt.label} does not run {prec.label} ({prec.family}) weights "
                                    f"(it runs: {', '.join(rt.formats)})")
            if self.zero and not rt.zero:
                raise ScenarioError(f"{rt.label} does not partition training states with ZeRO; "
                                    "use --runtime deepspeed")
        elif runtime is not None:
            raise ScenarioError(f"unknown runtime {runtime!r}: no runtime catalog is loaded")
        kv = self.kv_precision or (rt.kv_default if rt else ("f16" if prec.family == "gguf" else "bf16"))
        catalog.kv_bytes_per_element(kv)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ScenarioError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if qlora:
            default_optimizer = "paged_adamw_8bit"  # Dettmers et al. 2023: paged 8-bit AdamW
        else:
            default_optimizer = (rt.default_optimizer if rt and rt.default_optimizer else "adamw_torch")
        optimizer = OPTIMIZER_ALIASES.get(self.optimizer or default_optimizer, self.optimizer or default_optimizer)
        optimizer_spec(optimizer)
        if self.checkpointing not in CHECKPOINTING:
            raise ScenarioError(f"--checkpointing must be one of {', '.join(CHECKPOINTING)}")
        for name, value, top in (("context", self.context, 10_000_000), ("batch", self.batch, 1_000_000),
                                 ("gpus", self.gpus, 100_000), ("gradient accumulation",
                                                                self.gradient_accumulation, 1_000_000)):
            if value < 1 or value > top:
                raise ScenarioError(f"--{name} must be between 1 and {top:,}, got {value}")
        prefill_chunk = self.prefill_chunk
        if prefill_chunk is not None:
            if training:
                raise ScenarioError("--prefill-chunk applies to inference")
            if not 1 <= prefill_chunk <= 10_000_000:
                raise ScenarioError(f"--prefill-chunk must be between 1 and 10,000,000, got {prefill_chunk}")
        elif rt is not None and not training:
            prefill_chunk = rt.prefill_chunk
        if self.zero and self.workload == "inference":
            raise ScenarioError("--zero applies to training; inference over several GPUs uses tensor parallelism (--gpus)")
        if self.zero and self.gpus == 1:
            raise ScenarioError("--zero partitions states over several GPUs; give --gpus N with N > 1")
        rank = self.lora_rank if self.lora_rank is not None else (64 if qlora else 16)
        if lora:
            if not 1 <= rank <= 65_536:
                raise ScenarioError(f"--lora-rank must be between 1 and 65536, got {rank}")
            bad = [g for g in self.lora_targets if g not in LORA_DEFAULT_GROUPS]
            if bad or not self.lora_targets:
                raise ScenarioError(f"--lora-targets takes a comma-separated subset of {', '.join(LORA_DEFAULT_GROUPS)}")
        elif self.lora_rank is not None:
            raise ScenarioError("--lora-rank applies only to --workload lora or qlora")
        adapter = None
        if lora:
            # peft casts adapters to fp32 (autocast_adapter_dtype=True); QLoRA's own script (qlora.py) casts
            # the LoRA layers to bf16.
            adapter = self.adapter_dtype or ("bf16" if qlora else "fp32")
            if adapter not in ADAPTER_DTYPES:
                raise ScenarioError(f"--adapter-dtype must be one of {', '.join(ADAPTER_DTYPES)}, got {adapter!r}")
        elif self.adapter_dtype is not None:
            raise ScenarioError("--adapter-dtype applies only to --workload lora or qlora")
        recipe = None
        if self.workload == "train":
            if self.recipe is not None and self.recipe not in RECIPES:
                raise ScenarioError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
            if precision == "fp32":
                if self.recipe not in (None, "fp32"):
                    raise ScenarioError(f"--recipe {self.recipe} trains in 16 bit; use --precision bf16 or fp16")
                recipe = "fp32"
            else:
                recipe = self.recipe or ("mixed" if self.zero else (rt.default_recipe if rt and rt.default_recipe
                                                                     else "mixed"))
                if recipe == "fp32":
                    raise ScenarioError("--recipe fp32 needs --precision fp32")
        elif self.recipe is not None:
            raise ScenarioError("--recipe applies to full training (--workload train); LoRA's base is frozen")
        if self.workload == "inference" and (self.optimizer or self.checkpointing != "none"):
            raise ScenarioError("--optimizer and --checkpointing apply to training workloads, not inference")
        overhead = self.overhead_bytes if self.overhead_bytes is not None else (
            rt.overhead_bytes if rt else DEFAULT_OVERHEAD_BYTES)
        if overhead < 0 or overhead > 1024 * GIB:
            raise ScenarioError("the runtime overhead must be between 0 and 1024 GiB")
        return replace(self, precision=precision, kv_precision=kv, optimizer=optimizer if training else None,
                       lora_rank=rank if lora else None, runtime=runtime, recipe=recipe, adapter_dtype=adapter,
                       prefill_chunk=prefill_chunk, overhead_bytes=overhead)


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
    memory_fraction: Fraction = Fraction(1)  # share of a device's memory the runtime uses

    def budget(self, usable_bytes: int) -> int:
        """What this estimate may use of a device with `usable_bytes` (vLLM keeps 1 - gpu_memory_utilization)."""
        return int(usable_bytes * self.memory_fraction)

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
            "flash_attention": s.flash_attention, "runtime": s.runtime,
            "recipe": s.recipe if s.workload == "train" else None,
            "adapter_dtype": s.adapter_dtype if s.workload in ("lora", "qlora") else None,
            "prefill_chunk": s.prefill_chunk if s.workload == "inference" else None,
            "all_logits": s.all_logits if s.workload == "inference" else None,
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
    # resolved() always fills the precision, the KV-cache type and the overhead (and rejects unknown ones).
    assert s.precision is not None and s.kv_precision is not None and s.overhead_bytes is not None
    prec = catalog.precision(s.precision)
    counts = count_parameters(arch)
    kv_bpe = catalog.kv_bytes_per_element(s.kv_precision)
    rt = catalog.runtimes.get(s.runtime) if s.runtime else None
    assumptions = [
        f"Runtime: {rt.label} ({rt.description.rstrip('.')})." if rt else
        "Runtime: none named (generic assumptions: the whole prompt in one pass, mixed-precision training).",
        f"Weights stored as {prec.label}: {prec.description}".strip(),
        f"Runtime overhead {s.overhead_bytes / GIB:.2f} GiB (CUDA context, kernels, workspaces, allocator slack).",
        *arch.notes,
    ]
    if s.workload == "inference":
        return _inference(arch, s, prec, catalog, counts, kv_bpe, assumptions, rt)
    return _training(arch, s, prec, catalog, counts, assumptions)


def _inference(arch: Architecture, s: Scenario, prec: Precision, catalog: PrecisionCatalog, counts: ParamCounts,
               kv_bpe: Fraction, assumptions: list[str], rt: Runtime | None) -> Estimate:
    assert s.kv_precision is not None and s.overhead_bytes is not None  # `s` is resolved
    weights, by_type = _weights_per_gpu(arch, prec, catalog, s.gpus)
    kv_tokens = rt.kv_tokens(s.context) if rt else s.context
    # transformers' sliding-window cache keeps the whole prompt's keys and values alive through a one-pass
    # prefill; a chunked prefill only ever holds the window plus one chunk.
    prompt_held = rt is not None and rt.sliding_window_prefill == "prompt" and s.prefill_chunk is None
    kv = kv_cache_bytes(arch, kv_tokens, s.batch, kv_bpe, tp=s.gpus, full_window=prompt_held)
    compute = _COMPUTE_DTYPE.get(s.precision or "", "bf16")
    act = inference_activations(arch, s.context, s.batch, flash_attention=s.flash_attention,
                                all_logits=s.all_logits, tp=s.gpus, prefill_chunk=s.prefill_chunk,
                                a=4 if compute == "fp32" else 2, compute_dtype=compute)
    assumptions += [
        f"KV cache in {catalog.kv_labels.get(s.kv_precision, s.kv_precision)} for {s.batch} x {kv_tokens:,} "
        "positions" + (f" ({s.context:,} tokens rounded up to the runtime's {rt.kv_block_tokens}-token blocks)"
                       if kv_tokens != s.context and rt else "")
        + (f", KV heads split over {s.gpus} GPUs (at least one per GPU)" if s.gpus > 1 else "") + "."
        + (" Sliding-window layers hold the whole prompt during its one-pass prefill." if prompt_held
           and any(layer.window for layer in arch.attention) else ""),
        ("Prefill of the whole prompt in one pass; " if s.prefill_chunk is None else
         f"Chunked prefill, at most {s.prefill_chunk:,} tokens per forward pass; ") + (
            "flash attention (no s^2 score matrix)." if s.flash_attention else
            "eager attention materialises heads x tokens x context scores with their float32 softmax."),
        "Logits kept for " + ("every position." if s.all_logits else "the last position only (generation)."),
    ]
    if s.gpus > 1:
        assumptions.append(f"Tensor parallelism over {s.gpus} GPUs; norms and routers replicated; figures are per GPU.")
    if rt is not None and rt.memory_fraction != 1:
        assumptions.append(f"{rt.label} uses {float(rt.memory_fraction):.0%} of the device's memory "
                           "(gpu_memory_utilization); the fit is judged against that share.")
    phase = Phase("inference", {"weights": weights, "kv_cache": kv, "activations": act.total,
                                "overhead": s.overhead_bytes})
    return Estimate(
        scenario=s, params=counts.total, active_params=counts.active, trainable_params=0,
        weights_bytes=weights, kv_cache_bytes=kv, activation_bytes=act.total, gradient_bytes=0,
        optimizer_bytes=0, overhead_bytes=s.overhead_bytes, phases=(phase,), weights_by_type=by_type,
        assumptions=tuple(assumptions), memory_fraction=rt.memory_fraction if rt else Fraction(1),
    )


def _matrix_params_by_layer(arch: Architecture) -> tuple[list[int], int]:
    """Parameters of the matrices a linear layer multiplies with (what autocast casts to 16 bit), per layer,
    and outside the layers (the output head: lm_head, or the tied embedding used as one)."""
    def compute() -> tuple[list[int], int]:
        per_layer = [0] * arch.num_layers
        for t in arch.tensors:
            if t.is_matrix and t.group in (ATTENTION, MLP, EXPERTS) and t.layer is not None \
                    and t.layer < arch.num_layers:
                per_layer[t.layer] += t.numel
        return per_layer, arch.vocab_size * arch.hidden_size
    return memo(arch, "matrix_params_by_layer", compute)


def _training(arch: Architecture, s: Scenario, prec: Precision, catalog: PrecisionCatalog, counts: ParamCounts,
              assumptions: list[str]) -> Estimate:
    assert s.optimizer is not None and s.overhead_bytes is not None  # `s` is resolved
    lora = s.workload in ("lora", "qlora")
    n = s.gpus if s.zero else 1
    base, by_type = _weights_per_gpu(arch, prec, catalog, 1)
    opt_spec = optimizer_spec(s.optimizer)
    autocast = 0  # bytes of 16-bit weight copies autocast makes (amp), per layer below
    tied_grad_sum = 0  # a tied embedding's two gradient contributions, summed at the end of backward
    if lora:
        assert s.lora_rank is not None and s.adapter_dtype is not None  # `s` is resolved
        targets = lora_targets(arch, s.lora_targets)
        trainable = lora_parameters(arch, s.lora_rank, s.lora_targets)
        if not trainable:
            raise ScenarioError("this architecture has no linear layers LoRA can adapt")
        ab = ADAPTER_DTYPES[s.adapter_dtype]
        # The adapters are trained as they are stored: gradients and optimizer states in their dtype, no
        # master copy (PyTorch's AdamW states are zeros_like(param)).
        weights = zero_share(base, 3, s.zero, n) + zero_share(ab * trainable, 3, s.zero, n)
        grads = zero_share(ab * trainable, 2, s.zero, n)
        master = 0
        opt = zero_share(optimizer_state_bytes(s.optimizer, params=trainable, param_bytes=ab), 1, s.zero, n)
        temp = zero_share(step_temporary_bytes(s.optimizer, trainable, ab), 1, s.zero, n)
        extra = lora_saved_bytes(arch, s.lora_rank, s.lora_targets, s.context * s.batch, ab)
        acts = training_activations(arch, s.context, s.batch, checkpointing=s.checkpointing,
                                    flash_attention=s.flash_attention, extra_per_layer=extra)
        assumptions += [
            f"LoRA rank {s.lora_rank} on {len(targets)} weight matrices (the linear layers of "
            f"{', '.join(s.lora_targets)}): "
            f"{trainable:,} trainable parameters, r x (d_in + d_out) each, in {s.adapter_dtype}.",
            "Frozen base; gradients and optimizer states for the adapters only; activations still flow "
            "through every frozen layer.",
            "fp32 adapters (peft's autocast_adapter_dtype=True): each adapted layer saves a float32 copy of its "
            "input and of the rank-r projection." if ab == 4 else
            "16-bit adapters: each adapted layer saves its rank-r projection; its input is shared with the base.",
        ]
        if s.workload == "qlora":
            assumptions.append("QLoRA: NF4 base with double quantization, as in Dettmers et al. 2023.")
        layer_params = [0] * arch.num_layers
        for t in targets:
            if t.layer is not None and t.layer < arch.num_layers:
                layer_params[t.layer] += 1
        share_total = trainable
    else:
        assert s.recipe is not None
        recipe = RECIPE_SPECS[s.recipe]
        trainable = counts.total
        st = full_training_states(trainable, s.optimizer, zero=s.zero, gpus=n, tensors=arch.tensors,
                                  weight_bytes=2, recipe=s.recipe)
        weights, grads, master, opt, temp = st.weights, st.gradients, st.master_weights, st.optimizer, st.step_temporary
        per_layer_matrices, head = _matrix_params_by_layer(arch)
        if recipe.autocast_copies:
            # autocast keeps a 16-bit copy of each weight a matmul uses, cached for the forward pass and
            # saved for backward; per layer, plus the output head (the tied embedding when tied).
            autocast = 2
        extra = 0 if s.checkpointing == "full" else autocast * max(per_layer_matrices, default=0)
        acts = training_activations(arch, s.context, s.batch, checkpointing=s.checkpointing,
                                    flash_attention=s.flash_attention, extra_per_layer=extra)
        if arch.tied_embeddings:
            # The tied matrix gets one gradient from the output head and one from the embedding lookup; they
            # are summed into a third tensor at the end of backward.
            tied_grad_sum = zero_share(recipe.gradients * arch.vocab_size * arch.hidden_size, 2, s.zero, n)
        assumptions.append({
            "amp": f"Automatic mixed precision (Trainer bf16=True over fp32 weights): fp32 weights, gradients and "
                   f"optimizer states; autocast holds {s.precision} copies of the weights during the forward pass.",
            "mixed": f"Mixed precision ({s.precision} weights and gradients, fp32 master weights and optimizer "
                     "states), as in ZeRO's (2 + 2 + K) bytes per parameter.",
            "pure": f"Pure {s.precision}: weights, gradients and optimizer states all in {s.precision}.",
            "fp32": "Pure fp32 training: 4-byte weights, gradients and optimizer states, no master copy.",
        }[s.recipe])
        by_type = {prec.default if recipe.weights == 2 else "f32": weights}
        layer_params = [0] * arch.num_layers
        for t in arch.tensors:
            if t.layer is not None and t.layer < arch.num_layers:
                layer_params[t.layer] += t.numel
        share_total = trainable
    if s.zero:
        assumptions.append(f"ZeRO stage {s.zero} over {n} GPUs: "
                           + {1: "optimizer states", 2: "optimizer states and gradients",
                              3: "optimizer states, gradients and parameters"}[s.zero]
                           + " partitioned; activations are per GPU (each GPU runs its own micro-batch).")
    elif s.gpus > 1:
        assumptions.append(f"Data parallelism over {s.gpus} GPUs without ZeRO: every GPU holds the full model "
                           "states and its own micro-batch's activations; figures are per GPU.")
    assumptions += [
        f"Activations for a micro-batch of {s.batch} x {s.context:,} tokens, gradient checkpointing "
        f"'{s.checkpointing}', " + ("flash attention" if s.flash_attention else "eager attention") + ".",
        f"Optimizer {s.optimizer} ({opt_spec.note}); gradients are set to None after each step; the peak is the "
        "steady state from the second step on, with the optimizer states already allocated.",
    ]
    zero3_gather = 0
    if s.zero >= 3 and not lora:
        # ZeRO-3 gathers one layer's full 16-bit parameters at a time for compute.
        zero3_gather = max(layer_params, default=0) * 2
    per_layer_matrices, head = _matrix_params_by_layer(arch)
    cast_all = autocast * (sum(per_layer_matrices) + head)
    cast_layer = autocast * max(per_layer_matrices, default=0)
    act_layers = list(acts.per_layer)
    # Gradients per layer, proportional to that layer's share of the trainable parameters.
    if lora:
        total_share = sum(layer_params) or 1
        grad_layers = [grads * x // total_share for x in layer_params]
    else:
        grad_layers = [grads * p // max(share_total, 1) for p in layer_params]
    grad_outside = grads - sum(grad_layers)
    held_grads = grads if s.gradient_accumulation > 1 else 0
    # Forward: every layer's saved activations; under amp the 16-bit weight copies (all of them: the cache
    # lives until autocast exits, or each layer saves its own for backward).
    forward_cast = cast_all if s.checkpointing == "full" else autocast * head
    forward = Phase("forward", {"weights": weights, "optimizer": master + opt, "gradients": held_grads,
                                "activations": acts.total - acts.workspace + zero3_gather + forward_cast,
                                "overhead": s.overhead_bytes})
    # Backward: layers run last to first; after k layers, their gradients exist and their activations
    # are freed. The largest point of that walk, plus one layer's recomputation/backward workspace (with
    # its 16-bit weight copies under amp and full checkpointing).
    workspace = acts.workspace + (cast_layer if s.checkpointing == "full" else 0)
    best_grads, best_acts = grad_outside, sum(act_layers) + acts.outside + autocast * head
    done_grads = grad_outside
    remaining = sum(act_layers)
    for i in reversed(range(arch.num_layers)):
        done_grads += grad_layers[i]
        remaining -= act_layers[i]
        cand_acts = remaining + 2 * s.batch * s.context * arch.hidden_size * 2
        if max(done_grads, held_grads) + cand_acts > max(best_grads, held_grads) + best_acts:
            best_grads, best_acts = done_grads, cand_acts
    if max(grads + tied_grad_sum, held_grads) > max(best_grads, held_grads) + best_acts + workspace:
        best_grads, best_acts = grads + tied_grad_sum, 0  # the end of backward, summing a tied gradient
        workspace = 0
    backward = Phase("backward", {"weights": weights, "optimizer": master + opt,
                                  "gradients": max(best_grads, held_grads),
                                  "activations": best_acts + workspace + zero3_gather,
                                  "overhead": s.overhead_bytes})
    step = Phase("optimizer_step", {"weights": weights, "optimizer": master + opt + temp, "gradients": grads,
                                    "activations": 0, "overhead": s.overhead_bytes})
    assumptions.append(f"Optimizer step holds {temp / GIB:.2f} GiB of temporaries "
                       "(PyTorch's foreach implementation: one parameter-sized buffer)."
                       if temp else "Optimizer step needs no parameter-sized temporaries (fused or in-place kernel).")
    return Estimate(
        scenario=s, params=counts.total, active_params=counts.active, trainable_params=trainable,
        weights_bytes=weights, kv_cache_bytes=0, activation_bytes=acts.total + zero3_gather,
        gradient_bytes=grads, optimizer_bytes=master + opt, overhead_bytes=s.overhead_bytes,
        phases=(forward, backward, step), weights_by_type=by_type, assumptions=tuple(assumptions),
    )


__all__ = ["DEFAULT_OVERHEAD_BYTES", "Estimate", "GIB", "Phase", "Scenario", "ScenarioError", "estimate"]
