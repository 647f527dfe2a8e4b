"""Model states of training: weights, gradients, optimizer states, ZeRO partitioning, LoRA adapters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from .architecture import ATTENTION, EXPERTS, MLP, Architecture, Tensor, memo

# Optimizer state bytes per trainable parameter, besides fp32 master weights.
#   adamw: exp_avg + exp_avg_sq in fp32 (8 B) - PyTorch torch.optim.AdamW.
#   adamw_8bit: bitsandbytes AdamW8bit, both moments as uint8 with one fp32 absmax per 256-value block
#     (blockwise quantisation, Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization").
#   sgd: one fp32 momentum buffer (torch.optim.SGD with momentum > 0).
#   lion: one fp32 momentum buffer (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").
#   adafactor: factored second moment, no first moment (Shazeer & Stern 2018, beta1=None default):
#     a matrix r x c keeps r + c fp32 values, a vector keeps n.
OPTIMIZERS = ("adamw", "adamw_8bit", "sgd", "adafactor", "lion")
_PER_PARAM = {
    "adamw": Fraction(8),
    "adamw_8bit": 2 + Fraction(2 * 4, 256),
    "sgd": Fraction(4),
    "lion": Fraction(4),
}
# PyTorch's foreach implementations (the CUDA default for AdamW, SGD and the like) materialise
# intermediate lists the size of the parameters during step(); bitsandbytes' fused 8-bit kernels do not.
# torch.optim docs, "Algorithms": foreach "uses more memory ... roughly the size of the parameters".
_STEP_TEMP_COPIES = {"adamw": 1, "adamw_8bit": 0, "sgd": 1, "lion": 1, "adafactor": 1}


def optimizer_state_bytes(optimizer: str, tensors: Iterable[Tensor] | None = None, params: int = 0) -> int:
    """Optimizer state for the given trainable tensors (or a bare parameter count)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if optimizer == "adafactor":
        if tensors is None:
            return 0  # a bare count has no shapes; factored states are negligible for matrices
        total = 0
        for t in tensors:
            if t.is_matrix:
                mats = t.numel // (t.shape[-1] * t.shape[-2])
                total += mats * (t.shape[-1] + t.shape[-2]) * 4
            else:
                total += t.numel * 4
        return total
    n = params if tensors is None else sum(t.numel for t in tensors)
    return int(-(-(_PER_PARAM[optimizer] * n) // 1))


def step_temporary_bytes(optimizer: str, trainable_params: int, master_bytes: int) -> int:
    return _STEP_TEMP_COPIES[optimizer] * trainable_params * master_bytes


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


def full_training_states(params: int, optimizer: str, *, mixed_precision: bool, zero: int, gpus: int,
                         tensors: Iterable[Tensor] | None = None, weight_bytes: int = 2) -> ModelStates:
    """Weights, gradients, optimizer states for full training, partitioned by ZeRO stage `zero` over `gpus`.

    Mixed precision (ZeRO's recipe): 16-bit weights and gradients, fp32 master weights, fp32 Adam
    moments: (2 + 2 + 12) bytes per parameter for Adam. Pure fp32: 4 + 4 + 8.
    Stage 1 partitions optimizer states (incl. master weights), stage 2 also gradients, stage 3 also
    weights: per GPU 4Psi + 12Psi/N, 2Psi + 14Psi/N, 16Psi/N for mixed-precision Adam.
    """
    w = weight_bytes if mixed_precision else 4
    master = 4 * params if mixed_precision else 0
    opt = optimizer_state_bytes(optimizer, tensors, params)
    # The optimizer step works on fp32 values either way: the master copy, or fp32 parameters.
    temp = step_temporary_bytes(optimizer, params, 4)
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
