"""Run one trace under fake tensors. Imports torch, transformers and peft: import this module lazily.

Sources this follows (torch 2.13, transformers 5.23, peft 0.21):
- torch/_subclasses/fake_tensor.py (FakeTensorMode), torch/distributed/_tools/mem_tracker.py (MemTracker),
  torch/optim/adamw.py (fused / foreach AdamW), torch/utils/checkpoint.py (use_reentrant=False);
- transformers/masking_utils.py (find_packed_sequence_indices), transformers/generation/utils.py (generate runs
  under torch.no_grad() and asks the prefill for logits_to_keep=1), transformers/trainer.py (compute_loss keeps
  only outputs["loss"]), transformers/training_args.py (lr 5e-5, weight decay 0.0, betas 0.9/0.999, eps 1e-8);
- peft/mapping_func.py (get_peft_model, autocast_adapter_dtype).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _MemRefType
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .spec import TraceSpec

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CATEGORIES = {"Parameter": "parameter", "Buffer": "buffer", "Gradient": "gradient", "Activation": "activation",
              "Temp": "temp", "Optstate": "optstate", "Other": "other"}
# config.json keys the trace does not pass to transformers: the checkpoint dtype (the trace chooses its own) and
# quantisation (a trace runs the model at the traced dtype; quantised kernels have no fake implementation).
DROPPED_KEYS = ("model_type", "torch_dtype", "dtype", "quantization_config")

# LoRA target module names per model type and group, as a user writes them. peft matches a target name against the
# end of a module's qualified name (peft/tuners/tuners_utils.py, check_target_module_exists), so "attn.c_proj" picks
# GPT-2's attention output and not its MLP's c_proj. transformers 5 fuses MoE experts into 3-D parameters; for the
# model types it knows, peft maps the transformers-4 expert names onto them (gate_proj, up_proj, down_proj; w1, w2,
# w3 for Mixtral) in peft/utils/transformers_weight_conversion.py, _convert_peft_config_moe.
_LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_TARGETS = {"attention": _LLAMA_ATTENTION, "mlp": ("gate_proj", "up_proj", "down_proj")}
LORA_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "phi3": {"attention": ("qkv_proj", "o_proj"), "mlp": ("gate_up_proj", "down_proj")},
    "gpt2": {"attention": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_proj")},
    "falcon": {"attention": ("self_attention.query_key_value", "self_attention.dense"),
               "mlp": ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")},
    # MLA: queries through a low-rank pair when q_lora_rank is set (q_a_proj, q_b_proj), else q_proj.
    "deepseek_v3": {"attention": ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),
                    "mlp": ("gate_proj", "up_proj", "down_proj")},
    "mixtral": {"attention": _LLAMA_ATTENTION, "mlp": ("w1", "w2", "w3")},
}


class TraceError(Exception):
    """The model or workload cannot be traced; the message says why."""


@dataclass
class TraceResult:
    model_type: str
    parameters: int
    trainable_parameters: int
    peak_bytes: int
    crosscheck_peak_bytes: int
    peak_phase: str
    peak_module: str
    by_category: dict[str, int]
    step_peak_bytes: list[int]
    lora_modules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def versions() -> dict[str, str]:
    import transformers

    out = {"torch": str(torch.__version__), "transformers": str(transformers.__version__)}
    try:
        import peft

        out["peft"] = str(peft.__version__)
    except ImportError:  # only LoRA needs peft
        pass
    return out


# --------------------------------------------------------------------------------------------------
# Trackers


def _innermost(parents: set[str]) -> str:
    """The deepest module name among ModTracker's active parents, without the root class name."""
    names = [p for p in parents if p != "Global"]
    if not names:
        return ""
    deepest = max(names, key=lambda n: (n.count("."), n))
    return deepest.split(".", 1)[1] if "." in deepest else deepest


class EngineSums:
    """Tells when the autograd engine itself sums two gradients of one tensor (a tied weight, a tensor used twice).

    The engine sums them in place, into the buffer it holds the last reference to, unless a tensor is
    "subclass-like" (torch/csrc/autograd/input_buffer.cpp, accumulate and can_accumulate_inplace), and every
    tensor is subclass-like while any TorchDispatchMode is active (aten/src/ATen/TensorSubclassLikeUtils.h,
    isTensorSubclassLike). So under a tracker the engine writes `old + new` into a third tensor that an untraced
    run never allocates: for tied embeddings, a vocab x hidden gradient at the end of the backward. The sums run
    between one node's post-hooks and the next node's pre-hooks (torch/csrc/autograd/engine.cpp,
    evaluate_function), so hooks on every node of the graph bracket them; the trackers then count such an
    `aten.add.Tensor` as in place when one of its inputs, of the output's size, dies before the next op."""

    def __init__(self) -> None:
        self.watching = False
        self.in_node = False

    @contextlib.contextmanager
    def watch(self, root: torch.Tensor) -> Iterator[None]:
        handles: list[Any] = []
        seen: set[int] = set()
        todo = [root.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            handles.append(node.register_prehook(self._enter))
            handles.append(node.register_hook(self._leave))
            todo.extend(fn for fn, _ in node.next_functions)
        self.watching, self.in_node = True, False
        try:
            yield
        finally:
            self.watching = False
            for h in handles:
                h.remove()

    def _enter(self, grad_outputs: Any) -> None:
        self.in_node = True

    def _leave(self, grad_inputs: Any, grad_outputs: Any) -> None:
        self.in_node = False

    def is_sum(self, func: Any) -> bool:
        return self.watching and not self.in_node and func is torch.ops.aten.add.Tensor


def _storages(tensors: Any) -> list[tuple[weakref.ref, int]]:
    return [(weakref.ref(t.untyped_storage()), t.untyped_storage().nbytes())
            for t in tree_leaves(tensors) if isinstance(t, torch.Tensor)]


def _summed_in_place(inputs: list[tuple[weakref.ref, int]], out_bytes: int) -> bool:
    """An engine sum an untraced run does in place: an input as large as the output is gone already."""
    return any(ref() is None and n == out_bytes for ref, n in inputs)


class PeakTracker(MemTracker):
    """MemTracker keeping only the global peak, labelled with the workload phase running when it was reached.

    Upstream `_update_peak_stats` also walks every module's statistics on every op to keep per-module peaks; that
    is quadratic-ish in the module count (minutes for a LoRA model) and the global peak is computed the same way
    without it. Gradient hooks go only on parameters that can receive a gradient: upstream hooks every parameter,
    and `register_hook` raises on a frozen one (a LoRA base). The autograd engine's own gradient sums are settled
    as an untraced run does them (EngineSums)."""

    def __init__(self, sums: EngineSums | None = None) -> None:
        super().__init__()
        self.sums = sums
        self.phase = "setup"
        self.peak_phase = ""
        self.peak_module = ""
        self._summing = False
        self._pending: dict[str, Any] | None = None

    def _consider(self, snaps: Mapping[Any, Mapping[Any, int]], phase: str, module: str) -> None:
        for dev, snap in snaps.items():
            if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                self._peak_mem[dev] = snap[_TOTAL_KEY]
                self._peak_mem_snap[dev] = dict(snap)
                self.peak_phase = phase
                self.peak_module = module

    def _update_peak_stats(self, peak_state: Any) -> None:
        if self._summing:  # settled at the next op, once we know whether an input died
            self._pending = {"snaps": {d: dict(s) for d, s in self._curr_mem_snap.items()}, "phase": self.phase}
            return
        # ModTracker's parents are exact in the forward; in the backward they lag, so name no module there.
        module = _innermost(self._mod_tracker.parents) if self.phase.endswith("forward") else ""
        self._consider(self._curr_mem_snap, self.phase, module)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.settle()
        self._summing = self.sums is not None and self.sums.is_sum(func)
        try:
            res = super().__torch_dispatch__(func, types, args, kwargs)
        finally:
            summing, self._summing = self._summing, False
        if summing and self._pending is not None and isinstance(res, torch.Tensor):
            st = res.untyped_storage()
            winfo, _ = self._WINFO.get(st, (None, None))
            self._pending.update(out_bytes=st.nbytes(), reftype=winfo.reftype if winfo else None,
                                 device=res.device, inputs=_storages((args, kwargs)))
        return res

    def settle(self) -> None:
        """Count the pending engine sum, in place when an untraced run would have done it in place."""
        p, self._pending = self._pending, None
        if p is None:
            return
        snaps = p["snaps"]
        if "out_bytes" in p and p["reftype"] is not None and _summed_in_place(p["inputs"], p["out_bytes"]):
            snap = snaps[p["device"]]
            snap[p["reftype"]] -= p["out_bytes"]
            snap[_TOTAL_KEY] -= p["out_bytes"]
        self._consider(snaps, p["phase"], "")

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True) -> tuple[int, int]:
        mems = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
        if install_grad_hooks:
            def grad_hook(grad: torch.Tensor) -> None:
                self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

            for param in module.parameters():
                if param.requires_grad and self._param_to_grad_hook_handles.get(param, None) is None:
                    self._param_to_grad_hook_handles[param] = (
                        param.register_hook(grad_hook),
                        param.register_post_accumulate_grad_hook(lambda p: grad_hook(p.grad)))
        return mems

    def restart_peak(self) -> None:
        """Forget the peak so far: the next one is that of what runs from now on."""
        self.settle()
        self._peak_mem_snap = self.get_tracker_snapshot()
        self._peak_mem = {dev: snap[_TOTAL_KEY] for dev, snap in self._peak_mem_snap.items()}
        self.peak_phase = self.phase
        self.peak_module = ""

    @property
    def peak(self) -> int:
        return sum(self._peak_mem.values())

    def peak_by_category(self) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES.values(), 0)
        for snap in self._peak_mem_snap.values():
            for key, value in snap.items():
                if key != _TOTAL_KEY:
                    out[CATEGORIES[str(key.value if hasattr(key, "value") else key)]] += value
        return out


class StorageTracker(TorchDispatchMode):
    """The cross-check: the sum of the bytes of every live storage that an op returned or that was registered.

    A storage is counted once, when it is first seen, at its `nbytes()`, and uncounted by a `weakref.finalize` on
    the storage object when it is freed; a storage seen again with another size is re-counted at the new size.
    The autograd engine's own gradient sums are settled as an untraced run does them (EngineSums)."""

    def __init__(self, sums: EngineSums | None = None) -> None:
        super().__init__()
        self.sums = sums
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self.phase = "setup"
        self.peak_phase = ""
        self._pending: tuple[int, int, list[tuple[weakref.ref, int]], str] | None = None

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key)

    def _consider(self, live: int, phase: str) -> None:
        if live > self.peak:
            self.peak = live
            self.peak_phase = phase

    def add(self, t: Any, consider: bool = True) -> None:
        if not isinstance(t, torch.Tensor):
            return
        st = t.untyped_storage()
        key, n = id(st), st.nbytes()
        old = self.sizes.get(key)
        if old is None:
            self.sizes[key] = n
            weakref.finalize(st, self._free, key)
            self.live += n
        elif old != n:
            self.sizes[key] = n
            self.live += n - old
        if consider:
            self._consider(self.live, self.phase)

    def register(self, *objs: Any) -> None:
        for obj in objs:
            if isinstance(obj, nn.Module):
                for t in [*obj.parameters(), *obj.buffers()]:
                    self.add(t)
            else:
                self.add(obj)

    def settle(self) -> None:
        p, self._pending = self._pending, None
        if p is not None:
            live, out_bytes, inputs, phase = p
            self._consider(live - out_bytes if _summed_in_place(inputs, out_bytes) else live, phase)

    def restart_peak(self) -> None:
        self.settle()
        self.peak = self.live
        self.peak_phase = self.phase

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.settle()
        out = func(*args, **(kwargs or {}))
        summing = self.sums is not None and self.sums.is_sum(func) and isinstance(out, torch.Tensor)
        for t in tree_leaves(out):
            self.add(t, consider=not summing)
        if summing:
            self._pending = (self.live, out.untyped_storage().nbytes(), _storages((args, kwargs)), self.phase)
        return out


# --------------------------------------------------------------------------------------------------
# Traps of tracing transformers under fake tensors


@contextlib.contextmanager
def unpacked_batches() -> Iterator[None]:
    """transformers.masking_utils.find_packed_sequence_indices decides whether a batch packs several sequences.
    On a real unpacked batch it returns None; under fake tensors it cannot look at the values and returns the
    mask, which makes every layer build an s x s mask and leave SDPA's causal fast path. Our inputs are unpacked
    (position ids 0..s-1), so run the function (same transient tensors) and answer None as a real run would."""
    import transformers.masking_utils as mu

    original = getattr(mu, "find_packed_sequence_indices", None)
    if original is None:  # the function moved or went: nothing to patch, and the caller records that
        yield
        return

    def unpacked(position_ids: torch.Tensor) -> None:
        original(position_ids)
        return None

    mu.find_packed_sequence_indices = unpacked
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = original


@contextlib.contextmanager
def grouped_mm_or_fallback(notes: list[str]) -> Iterator[None]:
    """transformers runs MoE experts with grouped_mm (transformers/integrations/moe.py, _grouped_mm), whose checks
    accept only bf16 operands (torch/_meta_registrations.py, _meta_grouped_mm_common, mirroring CUDA's
    _grouped_mm_cuda). Experts with fp32 weights (the amp and fp32 recipes) go through transformers' own
    grouped_mm_fallback custom op instead, which has the same operands and outputs; the record says so."""
    try:
        import transformers.integrations.moe as moe
    except ImportError:
        yield
        return
    original = getattr(moe, "_can_use_grouped_mm", None)
    if original is None:
        yield
        return

    def can_use(input: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> bool:
        if weight.dtype != torch.bfloat16:
            note = (f"experts with {str(weight.dtype).removeprefix('torch.')} weights: grouped_mm takes bf16 only, "
                    "traced through transformers' grouped_mm_fallback op (same operands and outputs)")
            if note not in notes:
                notes.append(note)
            return False
        return bool(original(input, weight, offs))

    moe._can_use_grouped_mm = can_use
    try:
        yield
    finally:
        moe._can_use_grouped_mm = original


@contextlib.contextmanager
def swappable_fake_parameters(fake_mode: FakeTensorMode) -> Iterator[None]:
    """nn.Module._apply swaps fake parameters with torch.utils.swap_tensors (torch/nn/modules/module.py), and
    swap_tensors refuses a tensor that has weak references (torch/utils/__init__.py). The fake-tensor converter's
    memo (FakeTensorConverter.tensor_memo, a WeakValueDictionary in torch/_subclasses/fake_tensor.py) holds one
    on every fake parameter, so peft's adapter casts (`.to(device, dtype)`) fail with "Couldn't swap
    Linear.weight". The memo is a conversion cache only: dropping the two tensors' entries just before a swap
    changes no tensor and no byte."""
    import torch.utils

    memo = fake_mode.fake_tensor_converter.tensor_memo
    original = torch.utils.swap_tensors

    def forget(t: torch.Tensor) -> None:
        for ref in weakref.getweakrefs(t):
            key = getattr(ref, "key", None)
            if key is not None and memo.data.get(key) is ref:
                del memo.data[key]

    def swap_tensors(t1: torch.Tensor, t2: torch.Tensor) -> None:
        forget(t1)
        forget(t2)
        original(t1, t2)

    torch.utils.swap_tensors = swap_tensors
    try:
        yield
    finally:
        torch.utils.swap_tensors = original


@contextlib.contextmanager
def _quiet_fake_logs() -> Iterator[None]:
    """FakeTensorMode logs a traceback at ERROR for an op whose checks fail; the trace reports that error itself."""
    import logging

    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


# --------------------------------------------------------------------------------------------------
# Building the model


def build_config(architecture: Mapping[str, Any]) -> tuple[Any, str, list[str]]:
    """A transformers config from a config.json mapping: (config, model_type built, notes)."""
    from transformers import AutoConfig

    notes: list[str] = []
    # transformers edits nested dicts in place (it adds rope_theta to rope_scaling): work on a copy, so that the
    # caller's config, and its hash in the record, stay as read.
    architecture = copy.deepcopy(dict(architecture))
    model_type = architecture.get("model_type")
    if not isinstance(model_type, str):
        raise TraceError("the config has no model_type")
    fields = dict(architecture)
    if "quantization_config" in fields:
        notes.append("quantization_config ignored: the weights are traced at the traced dtype")
    if model_type == "gemma3":
        text = fields.get("text_config")
        if not isinstance(text, Mapping):
            raise TraceError("a gemma3 config must carry its language model under text_config")
        fields, model_type = dict(text), "gemma3_text"
        notes.append("multimodal gemma3: traces the text decoder (text_config) only, without the vision tower")
    fields = {k: v for k, v in fields.items() if k not in DROPPED_KEYS}
    try:
        return AutoConfig.for_model(model_type, **fields), model_type, notes
    except (ValueError, KeyError, TypeError) as e:
        raise TraceError(f"transformers cannot build a {model_type!r} config: {e}") from None


def _expert_weights(model: nn.Module) -> list[str]:
    """The fused 3-D expert weights as peft's target_parameters names them: experts.gate_up_proj, ..."""
    return sorted({f"experts.{n.rsplit('.', 1)[1]}" for n, p in model.named_parameters()
                   if p.dim() == 3 and n.rsplit(".", 2)[-2] == "experts"})


def lora_targets(model: nn.Module, model_type: str, groups: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(target_modules, target_parameters) for peft's LoraConfig, as a user writes them: module names for attention
    and mlp, and for "experts" the fused 3-D expert weights (LoraConfig.target_parameters)."""
    table = LORA_MODULES.get(model_type, _LLAMA_TARGETS)
    modules = [t for g in groups if g != "experts" for t in table[g]]
    weights = _expert_weights(model) if "experts" in groups else []
    if "experts" in groups and not weights:
        raise TraceError(f"LoRA group 'experts' matches nothing: this {model_type} model has no fused expert weights")
    return modules, weights


def lora_adapted(peft_model: nn.Module, model_type: str, groups: tuple[str, ...], asked_weights: list[str],
                 has_experts: bool) -> tuple[list[str], list[str]]:
    """What peft adapted, by short name (q_proj, experts.gate_up_proj, ...), and notes on what it changed.
    Raises TraceError when a requested group adapted nothing."""
    tuner = peft_model.base_model
    table = LORA_MODULES.get(model_type, _LLAMA_TARGETS)
    params = list(getattr(tuner, "targeted_parameter_names", None) or [])
    containers = {p.rsplit(".", 1)[0] for p in params}
    known = [t for g in groups if g != "experts" for t in table[g]]
    modules: list[str] = []
    for name in getattr(tuner, "targeted_module_names", None) or []:
        if name in containers:
            continue
        short = next((t for t in known if name == t or name.endswith("." + t)), name.rsplit(".", 1)[-1])
        if short not in modules:
            modules.append(short)
    weights = sorted({".".join(p.rsplit(".", 2)[-2:]) for p in params})
    for group in groups:
        if group == "experts":
            hit = bool(weights)
        else:
            hit = any(m in table[group] for m in modules) or (group == "mlp" and bool(weights)
                                                               and "experts" not in groups)
        if not hit:
            hint = ("; its experts are fused 3-D weights peft does not map from module names: use the experts group"
                    if group == "mlp" and has_experts else "")
            raise TraceError(f"LoRA group {group!r} adapted nothing in this {model_type} model (looked for "
                             f"{', '.join(table.get(group, ('fused experts.* weights',)))}){hint}")
    notes = []
    cfg = peft_model.peft_config["default"]
    converted = sorted(set(cfg.target_parameters or ()) - set(asked_weights))
    if converted:
        # rank_pattern keys are regular expressions such as r".*\.gate_up_proj"
        ranks = ", ".join(f"rank {r} on {k.split('.')[-1]}" for k, r in (cfg.rank_pattern or {}).items())
        notes.append(f"peft mapped the transformers-4 expert names onto the fused {', '.join(converted)}"
                     + (f" ({ranks})" if ranks else ""))
    return modules + weights, notes


def standard_lora_groups(model: nn.Module, model_type: str) -> tuple[str, ...]:
    """The LoRA groups a standard trace adapts: attention and the MLP of a dense model; attention and the fused
    experts (peft's target_parameters, at the given rank, as peft's LoraConfig documents for MoE) of an MoE one."""
    if _expert_weights(model):
        return ("attention", "experts")
    table = LORA_MODULES.get(model_type, _LLAMA_TARGETS)
    names = [n for n, _ in model.named_modules()]
    dense = any(n == t or n.endswith("." + t) for n in names for t in table["mlp"])
    return ("attention", "mlp") if dense else ("attention",)


def model_facts(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """What a set of traces needs to know before choosing its conditions: whether transformers runs the model with
    SDPA (gemma2 and gpt_oss refuse it and run eager by default) and which LoRA groups it has."""
    from transformers import AutoModelForCausalLM

    cfg, model_type, _ = build_config(architecture)
    with FakeTensorMode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="eager")
        return {"sdpa": bool(getattr(type(model), "_supports_sdpa", False)),
                "lora_targets": standard_lora_groups(model, model_type)}


def _optimizer(name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    # Hugging Face TrainingArguments defaults: lr 5e-5, weight_decay 0.0, betas (0.9, 0.999), eps 1e-8.
    if name == "adamw_torch_fused":
        return torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0, fused=True)
    if name == "adamw_torch":  # PyTorch's default on CUDA is foreach; on the CPU it is a for-loop: force it
        return torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=5e-5, momentum=0.9, foreach=True)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=5e-5, scale_parameter=False, relative_step=False, warmup_init=False)
    raise TraceError(f"unknown optimizer {name!r}")


def _parameter_count(model: nn.Module, trainable: bool = False) -> int:
    seen: set[int] = set()
    n = 0
    for p in model.parameters():  # parameters() already yields a tied weight once
        if id(p) not in seen and (p.requires_grad or not trainable):
            seen.add(id(p))
            n += p.numel()
    return n


# --------------------------------------------------------------------------------------------------
# The trace


def run_trace(architecture: Mapping[str, Any], spec: TraceSpec) -> TraceResult:
    """Trace one workload on one model config; raise TraceError when it cannot be traced."""
    from transformers import AutoModelForCausalLM

    cfg, model_type, notes = build_config(architecture)
    import transformers.masking_utils as mu

    if not hasattr(mu, "find_packed_sequence_indices"):
        notes.append("transformers.masking_utils.find_packed_sequence_indices is gone: packed-batch guard not "
                     "applied; check the attention mask path")
    if spec.workload == "inference":
        dtype = TORCH_DTYPES[spec.dtype]
    elif spec.workload == "train":
        dtype = torch.bfloat16 if spec.recipe == "pure" else torch.float32
    else:
        dtype = TORCH_DTYPES[spec.dtype]

    fake_mode = FakeTensorMode()
    sums = EngineSums()
    mt, cc = PeakTracker(sums), StorageTracker(sums)

    def phase(name: str) -> None:
        mt.phase = cc.phase = name

    # transformers and peft announce renames (gradient -> activation checkpointing) as FutureWarnings: not ours.
    with fake_mode, unpacked_batches(), grouped_mm_or_fallback(notes), warnings.catch_warnings(), _quiet_fake_logs():
        warnings.simplefilter("ignore", FutureWarning)
        # MemTracker warns when autograd calls a module hook after the module is gone; it skips that hook only.
        warnings.filterwarnings("ignore", message="Module is None")
        # peft checks its fused-expert rank_pattern against modules, not parameters, and warns though it applies it.
        warnings.filterwarnings("ignore", message="The following (rank|alpha)_pattern keys did not match")
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=spec.attention)
        except (ValueError, ImportError, NotImplementedError) as e:
            raise TraceError(f"transformers cannot build {model_type} with attention {spec.attention!r}: "
                             f"{' '.join(str(e).split())[:300]}") from None
        v_dim = getattr(cfg, "v_head_dim", None)
        qk_dim = getattr(cfg, "qk_head_dim", None) or (
            (getattr(cfg, "qk_nope_head_dim", 0) or 0) + (getattr(cfg, "qk_rope_head_dim", 0) or 0))
        if spec.attention == "sdpa" and v_dim and qk_dim and v_dim != qk_dim:
            notes.append(f"query/key heads of {qk_dim} and value heads of {v_dim}: the CPU's SDPA takes its math "
                         "kernel, which materialises the scores; an upper bound for CUDA's fused kernels")
        experts = getattr(model.config, "_experts_implementation", None)
        if experts not in (None, "grouped_mm") and any("experts" in n for n, _ in model.named_modules()):
            notes.append(f"experts run with {experts!r}")
        parameters = _parameter_count(model)
        input_ids = torch.zeros((spec.batch, spec.context), dtype=torch.long)
        targets: list[str] = []
        opt: torch.optim.Optimizer | None = None
        if spec.training:
            if spec.checkpointing == "full":
                # transformers 5.x renamed gradient_checkpointing_enable (kept, deprecated) to this.
                enable = getattr(model, "activation_checkpointing_enable", None)
                if enable is not None:
                    enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if spec.workload == "lora":
                from peft import LoraConfig, get_peft_model

                modules, weights = lora_targets(model, model_type, spec.lora_targets)
                has_experts = bool(_expert_weights(model))
                lcfg = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0,
                                  target_modules=modules or None, target_parameters=weights or None,
                                  task_type="CAUSAL_LM")
                try:
                    with swappable_fake_parameters(fake_mode):
                        model = get_peft_model(model, lcfg, autocast_adapter_dtype=spec.adapter_dtype == "fp32")
                except ValueError as e:  # peft: no target found, or a fused target named only in part
                    raise TraceError(f"peft cannot adapt {', '.join(spec.lora_targets)} in this {model_type} model: "
                                     f"{' '.join(str(e).split())[:300]}") from None
                targets, peft_notes = lora_adapted(model, model_type, spec.lora_targets, weights, has_experts)
                notes.extend(peft_notes)
            model.train()
            trainable = [p for p in model.parameters() if p.requires_grad]
            opt = _optimizer(spec.optimizer, trainable)
        else:
            model.eval()
        trainable_parameters = _parameter_count(model, trainable=True) if spec.training else 0

        mt.track_external(model, input_ids, *( [opt] if opt is not None else []))
        cc.register(model, input_ids)
        step_peaks: list[int] = []
        try:
            with cc, mt:
                if not spec.training:
                    phase("forward")
                    with torch.no_grad():
                        out = model(input_ids, use_cache=True, logits_to_keep=0 if spec.all_logits else 1)
                    del out
                    step_peaks.append(mt.peak)
                else:
                    _train(model, opt, input_ids, spec, phase, mt, cc, sums, step_peaks)
        except (RuntimeError, NotImplementedError, TypeError, ValueError, AssertionError) as e:
            text = " ".join(str(e).split())
            if "data-dependent" in text or "DataDependentOutputException" in type(e).__name__ or ".item()" in text:
                raise TraceError(f"{model_type} does not trace under fake tensors: its {phase_name(mt)} needs "
                                 f"tensor values ({type(e).__name__}: {text[:200]})") from None
            raise TraceError(f"{model_type} failed during {phase_name(mt)}: {type(e).__name__}: {text[:300]}") \
                from None

    if mt.peak != cc.peak:
        notes.append(f"the trackers disagree: MemTracker {mt.peak} bytes, cross-check {cc.peak} bytes")
    return TraceResult(model_type=model_type, parameters=parameters, trainable_parameters=trainable_parameters,
                       peak_bytes=mt.peak, crosscheck_peak_bytes=cc.peak, peak_phase=mt.peak_phase,
                       peak_module=mt.peak_module, by_category=mt.peak_by_category(),
                       step_peak_bytes=step_peaks if spec.training else [], lora_modules=targets, notes=notes)


def phase_name(mt: PeakTracker) -> str:
    return mt.phase


def _train(model: nn.Module, opt: torch.optim.Optimizer | None, input_ids: torch.Tensor, spec: TraceSpec,
           phase: Callable[[str], None], mt: PeakTracker, cc: StorageTracker, sums: EngineSums,
           step_peaks: list[int]) -> None:
    """Trainer-style steps: forward with the loss (only the loss is kept), backward, step, zero_grad(None)."""
    assert opt is not None
    amp = spec.workload == "train" and spec.recipe == "amp"
    for step in range(1, spec.steps + 1):
        if step > 1:
            step_peaks.append(mt.peak)
            mt.restart_peak()
            cc.restart_peak()
        phase(f"step {step} forward")
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with autocast:
            loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        phase(f"step {step} backward")
        with sums.watch(loss):
            loss.backward()
        del loss
        phase(f"step {step} optimizer")
        opt.step()
        phase(f"step {step} zero_grad")
        opt.zero_grad(set_to_none=True)
        mt.reset_mod_stats()
    mt.settle()
    cc.settle()
    step_peaks.append(mt.peak)
