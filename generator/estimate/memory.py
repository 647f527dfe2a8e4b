"""KV cache and activation memory. Pure functions of an Architecture; bytes as int."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .architecture import Architecture

ACT_BYTES = 2  # activations in bf16/fp16 under mixed precision or 16-bit inference


def kv_heads_per_gpu(kv_heads: int, tp: int) -> int:
    """Tensor parallelism splits KV heads across GPUs but never below one head per GPU."""
    return max(1, math.ceil(kv_heads / tp))


def kv_cache_bytes(arch: Architecture, context: int, batch: int, bytes_per_element: Fraction,
                   tp: int = 1, full_window: bool = False) -> int:
    """KV cache per GPU: for each layer 2 x kv_heads x head_dim x tokens x bytes (K and V), where a
    sliding-window layer holds at most its window; MLA layers hold one latent of
    kv_lora_rank + qk_rope_head_dim elements per token (replicated on every GPU under TP)."""
    elements = 0
    for layer in arch.attention:
        tokens = context if (layer.window is None or full_window) else min(context, layer.window)
        if layer.latent_dim is not None:
            elements += layer.latent_dim * tokens
        else:
            h = kv_heads_per_gpu(layer.kv_heads, tp)
            elements += h * (layer.k_dim + layer.v_dim) * tokens
    return math.ceil(elements * batch * bytes_per_element)


# --------------------------------------------------------------------------------------------------
# Inference: the transient peak of a prefill


@dataclass(frozen=True)
class InferenceActivations:
    layer_peak: int  # largest working set of one layer during the prefill
    logits: int
    attention_scores: int  # part of layer_peak from materialised scores (0 with flash attention)

    @property
    def total(self) -> int:
        return self.layer_peak + self.logits


# Eager attention in PyTorch: softmax(scores, dim=-1, dtype=torch.float32) first converts 16-bit bf16 scores
# to a float32 copy and then writes float32 probabilities, so 2 + 4 + 4 bytes per score are live at once;
# for fp16 on CUDA the kernel reads half and writes float (half_to_float), so 2 + 4 and then the cast back
# 2 more. transformers' eager_attention_forward (modeling_llama.py, v5.24.0, L180-L202) then casts back with
# .to(query.dtype).
EAGER_SCORE_BYTES = {"bf16": 10, "fp16": 8, "fp32": 8}


def inference_activations(arch: Architecture, context: int, batch: int, *, flash_attention: bool = True,
                          all_logits: bool = False, tp: int = 1, prefill_chunk: int | None = None,
                          a: int = ACT_BYTES, compute_dtype: str = "bf16") -> InferenceActivations:
    """Peak transient memory of a prefill of `batch` sequences of `context` tokens.

    Without `prefill_chunk` the whole prompt goes through in one pass (Hugging Face transformers'
    generate). With it, at most `prefill_chunk` tokens go through per forward pass, as chunked prefill
    does (vLLM's max_num_batched_tokens, llama.cpp's n_ubatch); each token still attends to up to
    `context` keys.

    Layers run one after another and free their buffers, so the peak is one layer's working set:
    the residual stream and its normalised copy, plus the larger of the attention phase and the MLP phase.
    Attention: q, k, v, the attention output and the output projection; without flash attention also the
    batch x heads x tokens x context scores at their softmax peak (EAGER_SCORE_BYTES), the 16-bit 4-D
    causal mask, and GQA's repeat_kv copies of k and v. MLP: gate, up and their product for a gated MLP;
    for MoE the fp32 router logits and, per routed token (tokens x top-k), transformers' grouped_mm path
    (integrations/moe.py, v5.24.0, L424-L537): the gathered input (h) with the gate_up output (2I), act(gate)
    (I) and their product (I), or later the down output, its weighted and its un-permuted copies (4h).
    Attention and MLP intermediates are split across `tp` GPUs; the residual stream is not.
    Logits: the lm_head output in the activation dtype for every position when all are kept (scoring),
    else for the last position plus generate's float32 copy of it (generation/utils.py, v5.24.0, L3246).
    """
    t = context * batch if prefill_chunk is None else min(context * batch, prefill_chunk)
    h, hd = arch.hidden_size, arch.head_dim
    residual = 2 * t * h * a
    heads = math.ceil(arch.num_heads / tp)
    kvh = kv_heads_per_gpu(arch.num_kv_heads, tp)
    qkv = t * (heads + 2 * kvh) * hd * a
    attn_out = t * heads * (arch.attention[0].v_dim or hd) * a
    scores = 0
    if not flash_attention:
        # Sliding-window layers still materialise the full s x s matrix in eager attention.
        scores = heads * t * context * EAGER_SCORE_BYTES[compute_dtype]
        scores += t * context * a  # the 4-D float causal mask, shared by the heads
        if kvh < heads:
            scores += 2 * t * heads * hd * a  # repeat_kv copies of k and v
    attn_phase = qkv + attn_out + scores + t * h * a
    inter = math.ceil(arch.intermediate_size / tp)
    if arch.is_moe:
        routed = t * arch.experts_per_token
        mlp_phase = routed * max(h + 4 * inter, 4 * h) * a + t * arch.num_experts * 4
        if arch.shared_expert_intermediate:
            mlp_phase += 3 * t * math.ceil(arch.shared_expert_intermediate / tp) * a
    else:
        mlp_phase = (3 if arch.gated_mlp else 2) * t * inter * a
    logits = math.ceil(t * arch.vocab_size * a / tp) if all_logits else \
        math.ceil(min(batch, t) * arch.vocab_size * (a + 4) / tp)
    return InferenceActivations(layer_peak=residual + max(attn_phase, mlp_phase), logits=logits,
                                attention_scores=scores)


# --------------------------------------------------------------------------------------------------
# Training: activations saved for the backward pass (Korthikanti et al. 2022, generalised)


@dataclass(frozen=True)
class TrainingActivations:
    per_layer: tuple[int, ...]  # bytes saved by each layer for the backward pass
    outside: int  # embedding output, final norm input, logits and loss buffers
    workspace: int  # recomputation / backward working set of one layer (full checkpointing)

    @property
    def total(self) -> int:
        return sum(self.per_layer) + self.outside + self.workspace


def layer_saved_activations(arch: Architecture, seq: int, batch: int, *, flash_attention: bool,
                            dropout: bool, lora_rank: int = 0, lora_modules: int = 0,
                            a: int = ACT_BYTES, extra: int = 0) -> int:
    """Bytes one transformer layer saves for backward (no recomputation).

    Korthikanti et al. 2022, section 4.1, count per layer for GPT (MLP 4h, multi-head attention,
    dropout, 16-bit): sbh(34 + 5as/h). Term by term, with T = s*b tokens:
      norm inputs 2*T*h*a; QKV input T*h*a; Q, K, V T*(n_q + 2*n_kv)*d*a; attention output T*n_q*d*a;
      MLP input T*h*a; MLP intermediates 2*T*I*a (gelu: fc output and gelu output) or 4*T*I*a
      (gated: gate, up, act(gate), act(gate)*up); dropout masks 2*T*h bytes when dropout is on;
      eager attention b*n_q*s^2*(a + 1 + a) (softmax output, dropout mask, dropout output; without
      dropout only the softmax output), flash attention only a fp32 log-sum-exp b*n_q*s*4.
    With h = n_q*d, I = 4h, dropout on and eager attention this is exactly sbh(34 + 5as/h) for a=2.
    MoE layers save the router logits (fp32) and, per routed token, the expert input and its
    intermediates; LoRA adds T*r*a per adapted module.
    """
    t = seq * batch
    h, d = arch.hidden_size, arch.head_dim
    nq, nkv = arch.num_heads, arch.num_kv_heads
    v_dim = arch.attention[0].v_dim or d
    k_dim = arch.attention[0].k_dim if arch.attention[0].latent_dim is None else d
    saved = 2 * t * h * a  # inputs of the two norms
    saved += t * h * a  # QKV projection input (normalised)
    saved += t * (nq * k_dim + nkv * k_dim + nkv * v_dim) * a if arch.attention[0].latent_dim is None \
        else t * (nq * d + nq * d + nq * v_dim) * a  # MLA decompresses per-head K and V
    saved += t * nq * v_dim * a  # attention output = o_proj input
    if flash_attention:
        saved += batch * nq * seq * 4
    else:
        saved += batch * nq * seq * seq * ((2 * a + 1) if dropout else a)
    saved += t * h * a  # MLP input (normalised)
    mult = 4 if arch.gated_mlp else 2
    if arch.is_moe:
        routed = t * arch.experts_per_token
        saved += t * arch.num_experts * 4  # router logits, fp32
        saved += routed * h * a + mult * routed * arch.intermediate_size * a
        if arch.shared_expert_intermediate:
            saved += mult * t * arch.shared_expert_intermediate * a
    else:
        saved += mult * t * arch.intermediate_size * a
    if dropout:
        saved += 2 * t * h
    saved += lora_modules * t * lora_rank * a
    return saved + extra


def training_activations(arch: Architecture, seq: int, batch: int, *, checkpointing: str = "none",
                         flash_attention: bool = True, dropout: bool | None = None, lora_rank: int = 0,
                         lora_modules_per_layer: int = 0, a: int = ACT_BYTES,
                         extra_per_layer: int = 0) -> TrainingActivations:
    """Activation memory of a training step, per layer x layers, plus what lies outside the layers.

    checkpointing: none (all saved), selective (Korthikanti's selective recomputation: the attention
    core is recomputed, so no s^2 term), full (each layer keeps only its input, 2sbh in 16 bit, and one
    layer's activations are rebuilt at a time during backward).
    Outside the layers: the embedding output and final-norm input (T*h*a each) and the logits path of a
    causal-LM loss: 16-bit logits, their fp32 upcast and the fp32 log-softmax saved by cross entropy,
    T*V*(a + 8).
    """
    if dropout is None:
        dropout = arch.model_type in ("gpt2", "falcon")  # configs with non-zero dropout by default
    if checkpointing not in ("none", "selective", "full"):
        raise ValueError(f"checkpointing must be none, selective or full, not {checkpointing!r}")
    t = seq * batch
    # Selective recomputation rebuilds the attention core (scores, softmax, its dropout) in backward,
    # which leaves what flash attention saves; the other dropout masks stay (Korthikanti: 34sbh).
    full = layer_saved_activations(arch, seq, batch, flash_attention=flash_attention or checkpointing == "selective",
                                   dropout=dropout, lora_rank=lora_rank, lora_modules=lora_modules_per_layer, a=a,
                                   extra=extra_per_layer)
    workspace = 0
    if checkpointing == "full":
        per_layer = tuple(t * arch.hidden_size * a for _ in range(arch.num_layers))
        workspace = full
    else:
        per_layer = tuple(full for _ in range(arch.num_layers))
    outside = 2 * t * arch.hidden_size * a + t * arch.vocab_size * (a + 8)
    return TrainingActivations(per_layer=per_layer, outside=outside, workspace=workspace)


__all__ = [
    "ACT_BYTES", "InferenceActivations", "TrainingActivations", "inference_activations", "kv_cache_bytes",
    "kv_heads_per_gpu", "layer_saved_activations", "training_activations",
]
