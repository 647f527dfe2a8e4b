"""Model states of training: weights, gradients, optimizer states, ZeRO partitioning, LoRA adapters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from .architecture import ATTENTION, EXPERTS, MLP, Architecture, Tensor, memo

@dataclass(frozen=True)
class Optimizer:
    """An optimizer as Hugging Face's TrainingArguments.optim names it.

    kind: "adam" (two moments), "momentum" (one buffer), "factored" (Adafactor's row and column second
    moments), "adam8bit" (bitsandbytes' blockwise 8-bit moments).
    state_bytes: bytes of one state value; None = the dtype of the tensor it updates (PyTorch creates its
    states with zeros_like(param)).
    step_temporaries: parameter-sized temporaries the step allocates, in the state dtype.
    """

    id: str
    kind: str
    state_bytes: int | None
    step_temporaries: int
    note: str


# PyTorch AdamW (torch/optim/adam.py at 5c48869, L177-L184): exp_avg and exp_avg_sq are zeros_like(p), so
#   they take the parameter's dtype. foreach (adamw_torch, the CUDA default) allocates
#   exp_avg_sq_sqrt = torch._foreach_sqrt(...) (L782-L799), one parameter-sized list; fused=True
#   (adamw_torch_fused, the Trainer's default with torch >= 2.8) updates in one kernel without it.
# bitsandbytes AdamW8bit: both moments as uint8 with one fp32 absmax per 256-value block (Dettmers et al.
#   2022, "8-bit Optimizers via Block-wise Quantization"); its kernels update in place. paged_adamw_8bit
#   keeps the same states in paged (unified) memory that can spill to the host under pressure.
# SGD with momentum: one momentum buffer (torch.optim.SGD); the foreach step adds one temporary.
# Lion (bitsandbytes Lion32bit, lion_32bit): one fp32 momentum buffer, updated in place (Chen et al. 2023).
# Adafactor (Shazeer & Stern 2018, beta1=None default): a matrix r x c keeps r + c values, a vector keeps n.
OPTIMIZER_SPECS: dict[str, Optimizer] = {o.id: o for o in (
    Optimizer("adamw_torch_fused", "adam", None, 0, "PyTorch AdamW, fused=True: no step temporary"),
    Optimizer("adamw_torch", "adam", None, 1, "PyTorch AdamW, foreach: one parameter-sized step temporary"),
    Optimizer("adamw_bnb_8bit", "adam8bit", 1, 0, "bitsandbytes 8-bit AdamW, blockwise quantised states"),
    Optimizer("paged_adamw_8bit", "adam8bit", 1, 0, "bitsandbytes paged 8-bit AdamW (states may spill to the host)"),
    Optimizer("adafactor", "factored", None, 1, "Adafactor, factored second moment, no first moment"),
    Optimizer("sgd", "momentum", None, 1, "SGD with momentum, foreach"),
    Optimizer("lion_32bit", "momentum", 4, 0, "bitsandbytes 32-bit Lion, one fp32 momentum buffer"),
)}
# The ids this project used before, kept as aliases.
OPTIMIZER_ALIASES = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "lion": "lion_32bit"}
OPTIMIZERS = (*OPTIMIZER_SPECS, *OPTIMIZER_ALIASES)
ADAM8BIT_BYTES = 2 + Fraction(2 * 4, 256)  # two uint8 moments + two fp32 absmax per 256 values


def optimizer_spec(name: str) -> Optimizer:
    try:
        return OPTIMIZER_SPECS[OPTIMIZER_ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}") from None


def optimizer_state_bytes(optimizer: str, tensors: Iterable[Tensor] | None = None, params: int = 0,
                          param_bytes: int = 4) -> int:
    """Optimizer state for the given trainable tensors (or a bare parameter count) whose values the
    optimizer updates in `param_bytes`-byte floats (the fp32 master copy, or the parameters themselves)."""
    spec = optimizer_spec(optimizer)
    value = spec.state_bytes if spec.state_bytes is not None else param_bytes
    if spec.kind == "factored":
        if tensors is None:
            return 0  # a bare count has no shapes; factored states are negligible for matrices
        total = 0
        for t in tensors:
            if t.is_matrix:
                mats = t.numel // (t.shape[-1] * t.shape[-2])
                total += mats * (t.shape[-1] + t.shape[-2]) * value
            else:
                total += t.numel * value
        return total
    n = params if tensors is None else sum(t.numel for t in tensors)
    per = {"adam": Fraction(2 * value), "momentum": Fraction(value), "adam8bit": ADAM8BIT_BYTES}[spec.kind]
    return int(-(-(per * n) // 1))


def step_temporary_bytes(optimizer: str, trainable_params: int, master_bytes: int) -> int:
    """Parameter-sized temporaries of one step, in the dtype the update runs in."""
    return optimizer_spec(optimizer).step_temporaries * trainable_params * master_bytes


# Training recipes: bytes per parameter of the weights the model holds, of their gradients, of an fp32
# master copy, and the dtype the optimizer updates in.
#   amp: Trainer bf16=True over a model loaded in fp32 - fp32 weights, gradients and states; autocast makes
#        16-bit copies of the weights for the forward pass.
#   mixed: DeepSpeed / Megatron and the ZeRO paper - 16-bit weights and gradients, fp32 master weights and
#        states, (2 + 2 + 12) bytes per parameter with Adam.
#   pure: everything in the 16-bit type (a model loaded in bf16 and trained as is).
#   fp32: everything in fp32.
@dataclass(frozen=True)
class Recipe:
    id: str
    weights: int
    gradients: int
    master: int
    update: int  # bytes of the values the optimizer updates (its states follow this dtype)
    autocast_copies: bool


RECIPE_SPECS = {r.id: r for r in (
    Recipe("amp", 4, 4, 0, 4, True),
    Recipe("mixed", 2, 2, 4, 4, False),
    Recipe("pure", 2, 2, 0, 2, False),
    Recipe("fp32", 4, 4, 0, 4, False),
)}


@dataclass(frozen=True)
class ModelStates:
    """Per-GPU bytes of the model states (Rajbhandari et al. 2019, ZeRO, section 3 and figure 1)."""

    weights: int
    gradients: int
    master_weights: int
    optimizer: int
    step_temporary: int

    @property
    def optimizer_total(self) -> int:
        return self.master_weights + self.optimizer


def zero_share(nbytes: int, stage: int, zero: int, gpus: int) -> int:
    """Per-GPU bytes of a state that ZeRO partitions from `stage` on (1: optimizer states and master
    weights, 2: gradients, 3: parameters), under ZeRO stage `zero` over `gpus` GPUs."""
    return -(-nbytes // gpus) if zero >= stage else nbytes


def full_training_states(params: int, optimizer: str, *, mixed_precision: bool = True, zero: int, gpus: int,
                         tensors: Iterable[Tensor] | None = None, weight_bytes: int = 2,
                         recipe: str | None = None) -> ModelStates:
    """Weights, gradients, optimizer states for full training, partitioned by ZeRO stage `zero` over `gpus`.

    The recipe (amp | mixed | pure | fp32; by default mixed, or fp32 when not mixed_precision) sets the
    bytes of weights, gradients and master weights and the dtype of the optimizer's states. Mixed precision
    (ZeRO's recipe): 16-bit weights and gradients, fp32 master weights, fp32 Adam moments: (2 + 2 + 12)
    bytes per parameter. Stage 1 partitions optimizer states (incl. master weights), stage 2 also
    gradients, stage 3 also weights: per GPU 4Psi + 12Psi/N, 2Psi + 14Psi/N, 16Psi/N for mixed-precision Adam.
    """
    r = RECIPE_SPECS[recipe or ("mixed" if mixed_precision else "fp32")]
    w = weight_bytes if r.weights == 2 else 4
    master = r.master * params
    opt = optimizer_state_bytes(optimizer, tensors, params, param_bytes=r.update)
    temp = step_temporary_bytes(optimizer, params, r.update)
    return ModelStates(
        weights=zero_share(w * params, 3, zero, gpus), gradients=zero_share(w * params, 2, zero, gpus),
        master_weights=zero_share(master, 1, zero, gpus), optimizer=zero_share(opt, 1, zero, gpus),
        step_temporary=zero_share(temp, 1, zero, gpus),
    )


# --------------------------------------------------------------------------------------------------
# LoRA (Hu et al. 2021): W + B A with A (r x d_in), B (d_out x r) on each targeted linear layer.

LORA_DEFAULT_GROUPS = (ATTENTION, MLP, EXPERTS)


def lora_targets(arch: Architecture, groups: Iterable[str] = LORA_DEFAULT_GROUPS) -> tuple[Tensor, ...]:
    """The linear layers LoRA adapts: every weight matrix of attention and the MLP (PEFT's
    "all-linear"), per expert for MoE models whose experts are nn.Linear modules. gpt-oss stores its
    experts as fused 3-D parameters, which PEFT's LoRA layers do not wrap."""
    groups = tuple(groups)
    return memo(arch, ("lora_targets", groups), lambda: _lora_targets(arch, groups))


def _lora_targets(arch: Architecture, groups: tuple[str, ...]) -> tuple[Tensor, ...]:
    out = []
    for t in arch.tensors:
        if not t.is_matrix or t.group not in groups or not t.name.endswith(".weight"):
            continue
        if t.group == EXPERTS and arch.model_type == "gpt_oss":
            continue
        out.append(t)
    return tuple(out)


def lora_parameters(arch: Architecture, rank: int, groups: Iterable[str] = LORA_DEFAULT_GROUPS) -> int:
    """Exact adapter parameters: r x (d_in + d_out) per targeted matrix (per expert when stacked)."""
    total = 0
    for t in lora_targets(arch, groups):
        mats = t.numel // (t.shape[-1] * t.shape[-2])
        total += mats * rank * (t.shape[-1] + t.shape[-2])
    return total


def lora_modules_per_layer(arch: Architecture, groups: Iterable[str] = LORA_DEFAULT_GROUPS) -> int:
    targets = lora_targets(arch, groups)
    if not targets:
        return 0
    per_layer = [0] * arch.num_layers
    for t in targets:
        if t.layer is not None and t.layer < arch.num_layers:
            # Routed experts: each token passes through experts_per_token of them.
            per_layer[t.layer] += arch.experts_per_token if t.group == EXPERTS else 1
    return max(per_layer)


def lora_saved_bytes(arch: Architecture, rank: int, groups: Iterable[str], tokens: int, adapter_bytes: int,
                     a: int = 2) -> int:
    """Bytes one layer's LoRA adapters save for backward (the largest layer), for `tokens` tokens.

    peft's lora.Linear.forward (tuners/lora/layer.py at 5d602fd, L1049-L1074) casts the layer input to the
    adapter dtype (`_cast_input_dtype`; a no-op when the dtypes already match) and computes
    lora_B(lora_A(x)): lora_A saves its input, lora_B saves the rank-r projection. With fp32 adapters over a
    16-bit base that is a float32 copy of the input (tokens x d_in x 4) per adapted matrix (q, k and v each
    make their own) plus tokens x r x 4; with adapters in the activation dtype the input is the one the base
    layer already saves, and only tokens x r x `a` is new. Stacked (3-D) expert weights are adapted whole: their
    merged weights are saved instead."""
    per_layer = [0] * arch.num_layers
    for t in lora_targets(arch, tuple(groups)):
        if t.layer is None or t.layer >= arch.num_layers:
            continue
        if t.group == EXPERTS and len(t.shape) == 3:
            # Stacked experts are one 3-D parameter (transformers' fused experts), which peft adapts through
            # target_parameters: ParamWrapper parametrizes the weight as W + (B A) x scaling (tuners/lora/layer.py
            # at 5d602fd, ParamWrapper.get_delta_weight and _activate_lora), so every adapted expert weight is
            # materialised merged, in the base dtype, and saved by the grouped matmul for backward.
            per_layer[t.layer] += t.numel * a
            continue
        rows = tokens * arch.experts_per_token if t.group == EXPERTS else tokens
        copy = rows * t.shape[-1] * adapter_bytes if adapter_bytes != a else 0
        per_layer[t.layer] += copy + rows * rank * adapter_bytes
    return max(per_layer, default=0)
