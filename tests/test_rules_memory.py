"""Rule tests for generator/estimate/memory.py: the KV cache, the transient activations of a prefill and the
activations a training step saves for backward.

Every expected value is derived by hand in the test body from the config values (tiny synthetic configs, so
the arithmetic can be checked on paper) or taken from a cited publication. Notation: t or T = tokens in the
pass, h = hidden size, d = head dimension, a = bytes per activation element (2: bf16/fp16), V = vocabulary.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.estimate.architecture import Architecture, parse_architecture
from generator.estimate.memory import (
    inference_activations, kv_cache_bytes, kv_heads_per_gpu, layer_saved_activations, training_activations,
)
from generator.estimate.scenario import Scenario, estimate
from generator.estimate.precision import parse_precision_catalog

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = parse_precision_catalog(yaml.safe_load((ROOT / "data/precisions.yaml").read_text()))

# Llama-style, gated MLP. h=64, 8 query heads of d=8, 2 KV heads (GQA), I=160, V=256, 2 layers.
DENSE: dict[str, Any] = {
    "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
}
# Multi-head attention with 8 KV heads and a narrow MLP (I=32), so the attention phase is the larger one.
MHA8: dict[str, Any] = {**DENSE, "num_key_value_heads": 8, "intermediate_size": 32}
# GPT-2-style (gelu MLP, not gated): h=64, 4 heads of d=16 (kv = heads), V=100, I = 4h = 256 by default.
GPT2: dict[str, Any] = {"model_type": "gpt2", "vocab_size": 100, "n_embd": 64, "n_layer": 2, "n_head": 4,
                        "n_positions": 1024}
# Falcon-7B-style: multi-query (1 KV head), gelu MLP of 4h, dropout on by default.
FALCON: dict[str, Any] = {"model_type": "falcon", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "max_position_embeddings": 2048}
# Mixtral-style MoE: 4 experts of I=32, 2 routed per token, attention as DENSE.
MOE: dict[str, Any] = {
    "model_type": "mixtral", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
    "max_position_embeddings": 4096,
}
# DeepSeek-V3-style: MLA (kv_lora_rank 16 + rope 8 cached per token), 4 heads with qk head dim 8 + 8 = 16,
# 4 routed experts of 16, 2 per token, 4 shared experts -> one shared MLP of 4 x 16 = 64.
DEEPSEEK: dict[str, Any] = {
    "model_type": "deepseek_v3", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
    "moe_intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "n_routed_experts": 4,
    "n_shared_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "kv_lora_rank": 16,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 16, "max_position_embeddings": 4096,
}


def parse(config: dict[str, Any], **overrides: Any) -> Architecture:
    return parse_architecture({**config, **overrides})


# --- KV cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kv,tp,per_gpu", [
    (8, 1, 8), (8, 2, 4), (8, 8, 1),
    (8, 3, 3),    # 8/3 = 2.67: a GPU cannot hold a fraction of a head, so 3 (not 2)
    (8, 16, 1),   # more GPUs than heads: each GPU still holds (a replica of) one head
    (6, 4, 2),    # 1.5 -> 2
    (5, 2, 3),    # 2.5 -> 3
    (2, 3, 1),
])
def test_kv_heads_per_gpu_rounds_up_never_below_one(kv: int, tp: int, per_gpu: int) -> None:
    assert kv_heads_per_gpu(kv, tp) == per_gpu


def test_kv_cache_dense_by_hand() -> None:
    a = parse(DENSE)
    # Per token and layer: K and V, 2 KV heads x d=8 each: 2 * 2 * 8 = 32 elements; 2 layers -> 64.
    # 100 tokens x batch 3 x 2 bytes.
    assert kv_cache_bytes(a, 100, 3, Fraction(2)) == 64 * 100 * 3 * 2 == 38400
    # tp=2: one KV head per GPU -> 2 * 1 * 8 * 2 layers = 32 elements per token.
    assert kv_cache_bytes(a, 100, 3, Fraction(2), tp=2) == 32 * 100 * 3 * 2 == 19200
    # tp=3: ceil(2/3) = 1 head, the same as tp=2.
    assert kv_cache_bytes(a, 100, 3, Fraction(2), tp=3) == 19200


def test_kv_cache_eight_kv_heads_over_3_and_16_gpus() -> None:
    a = parse(MHA8)
    # tp=1: 2 layers x (K+V) x 8 heads x d=8 = 256 elements per token; 10 tokens x 2 bytes.
    assert kv_cache_bytes(a, 10, 1, Fraction(2)) == 256 * 10 * 2 == 5120
    # tp=3: ceil(8/3) = 3 heads per GPU -> 2 * 2 * 3 * 8 = 96 elements per token.
    assert kv_cache_bytes(a, 10, 1, Fraction(2), tp=3) == 96 * 10 * 2 == 1920
    # tp=8 and tp=16: one head per GPU -> 2 * 2 * 1 * 8 = 32 elements per token.
    assert kv_cache_bytes(a, 10, 1, Fraction(2), tp=8) == 32 * 10 * 2 == 640
    assert kv_cache_bytes(a, 10, 1, Fraction(2), tp=16) == 640


def test_kv_cache_sliding_window_layers_hold_at_most_their_window() -> None:
    a = parse(DENSE, sliding_window=16, layer_types=["sliding_attention", "full_attention"])
    per_token_layer = 2 * 2 * 8  # K and V, 2 KV heads, d=8 -> 32 elements
    # context 40: the sliding layer keeps min(40, 16) = 16 tokens, the full layer 40.
    assert kv_cache_bytes(a, 40, 1, Fraction(2)) == (16 + 40) * per_token_layer * 2 == 3584
    # full_window: both layers allocate the whole context (as llama.cpp without SWA-aware cache).
    assert kv_cache_bytes(a, 40, 1, Fraction(2), full_window=True) == (40 + 40) * per_token_layer * 2 == 5120
    # context shorter than the window: both layers hold the context.
    assert kv_cache_bytes(a, 10, 1, Fraction(2)) == (10 + 10) * per_token_layer * 2 == 1280


def test_kv_cache_mla_latent_is_replicated_under_tensor_parallelism() -> None:
    a = parse(DEEPSEEK)
    # MLA caches kv_lora_rank + qk_rope_head_dim = 16 + 8 = 24 elements per token and layer (DeepSeek-V2
    # paper, arXiv 2405.04434, section 2.1.2: (d_c + d_h^R) elements per token), 2 layers,
    # 10 tokens x batch 2 x 2 bytes. The latent is shared by all heads, so TP cannot split it.
    one = 2 * 24 * 10 * 2 * 2
    assert one == 1920
    for tp in (1, 2, 4):
        assert kv_cache_bytes(a, 10, 2, Fraction(2), tp=tp) == one


def test_kv_cache_rounds_fractional_bytes_up() -> None:
    # One layer, one KV head of head_dim 12: 2 * 12 = 24 elements per token. q8_0 stores 32 elements in
    # 34 bytes (ggml-common.h block_q8_0: fp16 scale + 32 int8).
    a = parse(DENSE, num_hidden_layers=1, num_key_value_heads=1, head_dim=12)
    q8 = Fraction(34, 32)
    assert kv_cache_bytes(a, 1, 1, q8) == 26   # 24 * 34/32 = 25.5 -> 26
    assert kv_cache_bytes(a, 3, 1, q8) == 77   # 72 * 34/32 = 76.5 -> 77
    assert kv_cache_bytes(a, 4, 1, q8) == 102  # 96 * 34/32 = 102 exactly


@pytest.mark.parametrize("kid,nbytes", [
    ("f16", Fraction(2)), ("bf16", Fraction(2)),  # IEEE binary16 / bfloat16: 16 bits
    ("fp8", Fraction(1)),                          # E4M3/E5M2: 8 bits
    # ggml-common.h (llama.cpp aca2e6ce7909064dbfbf3bd168e9ad3db1826e6c): block_q8_0 = ggml_half d + int8 qs[32]
    # = 34 bytes per 32; block_q4_0 = ggml_half d + uint8 qs[16] = 18 bytes per 32.
    ("q8_0", Fraction(34, 32)), ("q4_0", Fraction(18, 32)),
])
def test_kv_cache_types_bytes_per_element(kid: str, nbytes: Fraction) -> None:
    assert PRECISIONS.kv_bytes_per_element(kid) == nbytes


# --- inference (prefill) activations -------------------------------------------------------------
#
# Per token, DENSE (h=64, 8 heads, 2 KV heads, d=8, I=160, a=2), tp=1:
#   residual stream + normalised copy: 2*h*a = 256
#   attention phase: q,k,v (8 + 2*2)*8*a = 192, attention output 8*8*a = 128, o_proj output h*a = 128 -> 448
#   MLP phase (gated): gate, up, act*up 3*I*a = 960
# so the MLP phase is the larger one with flash attention: layer peak 256 + 960 = 1216 bytes per token.
# Logits, generation (only the last position of each sequence is kept): the lm_head output in the activation
# dtype (V*a = 512) plus generate's float32 copy of it (V*4 = 1024) -> V*(a + 4) = 1536 bytes per sequence.
# huggingface/transformers v5.24.0, src/transformers/generation/utils.py L3246:
#   next_token_logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=input_ids.device)
# Scoring (all_logits) keeps the lm_head output of every position, V*a = 512 bytes per token, no fp32 copy.
#
# Eager attention, per layer (transformers v5.24.0, models/llama/modeling_llama.py L180-L202,
# eager_attention_forward): repeat_kv(key), repeat_kv(value) -> batch x heads x keys x d each (only when there are
# fewer KV heads than query heads: 2*t*heads*d*a); attn_weights = q @ k^T * scaling (+ the 4-D float mask,
# batch x 1 x t x context in the activation dtype); softmax(attn_weights, dim=-1, dtype=torch.float32).to(q.dtype).
# PyTorch's softmax with dtype=float32 (pytorch/pytorch aten/src/ATen/native/SoftMax.cpp, softmax(input, dim, dtype):
# only a CUDA Half input takes at::_softmax(input, dim, half_to_float=true); any other input is first
# input_.toType(dtype)) converts a bf16 input to a float32 copy and then writes a float32 output: 2 + 4 + 4 = 10 bytes
# per score live at once; a CUDA fp16 input goes through the half_to_float kernel (2 + 4) and the cast back adds 2:
# 8; fp32 scores (toType to its own type is no copy) and their fp32 softmax: 4 + 4 = 8.
BF16_SCORE, FP16_SCORE, FP32_SCORE = 2 + 4 + 4, 2 + 4 + 2, 4 + 4


def test_inference_dense_flash_mlp_phase_wins() -> None:
    a = parse(DENSE)
    act = inference_activations(a, 8, 1)
    assert act.attention_scores == 0
    assert act.layer_peak == 8 * (256 + 960) == 9728
    assert act.logits == 1 * 256 * (2 + 4) == 1536  # last position of the one sequence, bf16 + fp32 copy
    assert act.total == 9728 + 1536
    act3 = inference_activations(a, 8, 3)  # t = 24 tokens, 3 last positions
    assert act3.layer_peak == 24 * 1216 == 29184
    assert act3.logits == 3 * 1536


def test_inference_attention_phase_wins_with_a_narrow_mlp() -> None:
    a = parse(DENSE, intermediate_size=32)
    act = inference_activations(a, 8, 1)
    # MLP: 3*32*2 = 192 per token < attention 448: peak = 8 * (256 + 448).
    assert act.layer_peak == 8 * (256 + 448) == 5632


def test_inference_eager_scores_flip_the_phase() -> None:
    a = parse(DENSE)
    # Eager attention, one sequence of c tokens (t = c): scores 8 heads x c x c x 10 (bf16), the mask c x c x 2,
    # repeat_kv copies of k and v (2 KV heads < 8 heads) 2 x c x 8 x 8 x 2 = 256c. Per token the attention phase
    # is 448 + 80c + 2c + 256 = 704 + 82c against the MLP's 960: the MLP wins up to c = 3, attention from c = 4.
    short = inference_activations(a, 3, 1, flash_attention=False)
    assert short.attention_scores == 8 * 3 * 3 * 10 + 3 * 3 * 2 + 2 * 3 * 8 * 8 * 2 == 720 + 18 + 768 == 1506
    # attention 3*448 + 1506 = 2850 < MLP 3*960 = 2880: the MLP phase still sets the peak.
    assert short.layer_peak == 3 * 256 + 2880 == 3648
    long = inference_activations(a, 4, 1, flash_attention=False)
    assert long.attention_scores == 8 * 4 * 4 * 10 + 4 * 4 * 2 + 2 * 4 * 8 * 8 * 2 == 1280 + 32 + 1024 == 2336
    # attention 4*448 + 2336 = 4128 > MLP 4*960 = 3840: now the attention phase sets the peak.
    assert long.layer_peak == 4 * 256 + 4128 == 5152


def test_inference_activation_bytes_parameter() -> None:
    a = parse(DENSE)
    # fp32 activations (a=4), t=8: residual 2*8*64*4 = 4096; attention 8*(12*8*4 + 8*8*4 + 64*4) = 7168;
    # MLP 3*8*160*4 = 15360 -> peak 4096 + 15360.
    act = inference_activations(a, 8, 1, a=4, compute_dtype="fp32")
    assert act.layer_peak == 4096 + 15360
    # Last-position logits: fp32 lm_head output (V*4) and generate's fp32 copy (V*4): 256 * (4 + 4).
    assert act.logits == 256 * 8 == 2048
    # All positions: the lm_head output only, 8 x 256 x 4.
    assert inference_activations(a, 8, 1, a=4, compute_dtype="fp32", all_logits=True).logits == 8192
    # Eager, fp32, t = context = 16: scores 8*16*16*(4 + 4) = 16384, mask 16*16*4 = 1024, repeat_kv
    # 2*16*8*8*4 = 8192.
    eager = inference_activations(a, 16, 1, flash_attention=False, a=4, compute_dtype="fp32")
    assert eager.attention_scores == 16384 + 1024 + 8192 == 25600


def test_inference_gelu_mlp_both_sides() -> None:
    # GPT-2 style, per token: residual 2*64*2 = 256; attention q,k,v (4 + 2*4)*16*2 = 384, output 4*16*2 = 128,
    # o_proj output 64*2 = 128 -> 640. Non-gated MLP keeps fc output and gelu output: 2*I*a.
    narrow = parse(GPT2, n_inner=96)  # MLP 2*96*2 = 384 < 640: attention wins
    act = inference_activations(narrow, 8, 1)
    assert act.layer_peak == 8 * (256 + 640) == 7168
    assert act.logits == 100 * (2 + 4) == 600
    wide = parse(GPT2)  # I = 4h = 256: MLP 2*256*2 = 1024 > 640
    assert inference_activations(wide, 8, 1).layer_peak == 8 * (256 + 1024) == 10240


# MoE (transformers v5.24.0, src/transformers/integrations/moe.py L424-L537, grouped_mm path): per routed token
# (t x top-k rows) either the gathered input (h) with the gate_up output (2I), act(gate) (I) and their product (I),
# h + 4I, or later the down output, its weighted and un-permuted copies, 4h: max(h + 4I, 4h) x a; plus the fp32
# router logits t x E x 4.

def test_inference_moe_phase() -> None:
    a = parse(MOE)
    # t=8, h=64, I=32: h + 4I = 192 < 4h = 256, so 4h; routed tokens 2t = 16: 16*256*2 = 8192; router logits
    # t*E*4 = 8*4*4 = 128 -> MLP phase 8320 > attention 8*448 = 3584.
    act = inference_activations(a, 8, 1)
    assert act.layer_peak == 8 * 256 + 8192 + 128 == 10368
    # tp=2: 4 heads, 1 KV head, expert intermediate 16 (h + 4*16 = 128 < 256); residual and router logits are not
    # split. attention 8*((4 + 2)*8*2 + 4*8*2 + 64*2) = 2304; MLP 16*256*2 + 128 = 8320.
    act2 = inference_activations(a, 8, 1, tp=2)
    assert act2.layer_peak == 8 * 256 + 8320 == 10368
    assert act2.logits == 256 * (2 + 4) // 2 == 768


def test_inference_moe_wide_experts_take_the_gate_up_side() -> None:
    # I = 64: h + 4I = 320 > 4h = 256, so the gate_up side: 16 routed rows x 320 x 2 = 10240, + router 128.
    a = parse(MOE, intermediate_size=64)
    assert inference_activations(a, 8, 1).layer_peak == 8 * 256 + 10240 + 128 == 12416
    # tp=2 halves I to 32: h + 4*32 = 192 < 256, back to the 4h side: 16*256*2 + 128 = 8320.
    assert inference_activations(a, 8, 1, tp=2).layer_peak == 8 * 256 + 8320 == 10368
    # Three experts per token: 24 routed rows x 320 x 2 = 15360.
    assert inference_activations(parse(MOE, intermediate_size=64, num_experts_per_tok=3), 8, 1).layer_peak \
        == 8 * 256 + 15360 + 128 == 17536


@pytest.mark.xfail(strict=True, reason="grouped_mm_experts_forward keeps every intermediate in a local variable "
                   "until it returns, so the gathered input and its sorted copy (2h) and the gate_up and gated outputs "
                   "(3I) are still alive next to the down output and its weighted copy (2h): 4h + 3I per routed row, "
                   "more than max(h + 4I, 4h)")
def test_inference_moe_grouped_mm_keeps_its_locals_alive() -> None:
    # huggingface/transformers 8b584a67b474f3dfdedcdda7acb96a33dcc3b5e3, src/transformers/integrations/moe.py,
    # grouped_mm_experts_forward: selected_hidden_states = hidden_states[token_idx] (S x h);
    # selected_hidden_states_g = selected_hidden_states[perm] (S x h); gate_up_out (S x 2I); gated_out (S x I);
    # out_per_sample_g (S x h); out_per_sample_g = out_per_sample_g * sample_weights_g (another S x h while the
    # product is formed). No `del`: all of them live at that multiply, 4h + 3I per routed row.
    # MOE, t = 8, S = 16 rows: 16 x (4*64 + 3*32) x 2 = 11264, plus the residual stream 8 x 256 = 2048.
    assert inference_activations(parse(MOE), 8, 1).layer_peak >= 2048 + 11264


def test_inference_deepseek_shared_expert_term_matters() -> None:
    a = parse(DEEPSEEK)
    # Per token: residual 256; attention: q,k,v decompressed per head (4 + 2*4)*16*2 = 384, output 4*16*2 = 128,
    # o_proj output 128 -> 640. MLP: routed 2 rows x max(64 + 4*16, 4*64) = 256 x 2 = 1024, router 4*4 = 16,
    # shared expert (I=64) gate, up, act*up 3*64*2 = 384 -> 1424 > 640.
    act = inference_activations(a, 8, 1)
    assert act.layer_peak == 8 * (256 + 1424) == 13440
    # Eager attention at context 16 (4 heads = 4 "KV heads": no repeat_kv): scores 4*16*10 + mask 16*2 = 672 per
    # token, attention 640 + 672 = 1312. With the shared expert the MLP (1424) still wins; without it (1040) the
    # attention phase does: a different peak.
    eager = inference_activations(a, 16, 1, flash_attention=False)
    assert eager.attention_scores == 4 * 16 * 16 * 10 + 16 * 16 * 2 == 10752
    assert eager.layer_peak == 16 * (256 + 1424) == 26880
    bare = inference_activations(parse(DEEPSEEK, n_shared_experts=0), 16, 1, flash_attention=False)
    assert bare.layer_peak == 16 * (256 + 1312) == 25088
    # tp=2: 2 heads, ceil(4/2) = 2 "KV heads" -> attention (2 + 4)*16*2 + 2*16*2 + 128 = 384;
    # MLP: routed 2*max(64 + 4*8, 256)*2 = 1024, router 16, shared 3*ceil(64/2)*2 = 192 -> 1232.
    act2 = inference_activations(a, 8, 1, tp=2)
    assert act2.layer_peak == 8 * (256 + 1232) == 11904
    assert act2.logits == 768


def test_inference_tensor_parallel_rounding_dense() -> None:
    a = parse(DENSE)
    # tp=3, t=8: heads ceil(8/3) = 3, KV heads ceil(2/3) = 1, intermediate ceil(160/3) = 54.
    # residual 2*8*64*2 = 2048 (not split); attention 8*(3 + 2)*8*2 + 8*3*8*2 + 8*64*2 = 640 + 384 + 1024
    # = 2048; MLP 3*8*54*2 = 2592.
    act = inference_activations(a, 8, 1, tp=3)
    assert act.layer_peak == 2048 + 2592 == 4640
    # Vocab-parallel logits: 1 * 256 * 6 / 3 = 512 exactly; all 8 positions: ceil(8 * 256 * 2 / 3) = ceil(1365.33).
    assert act.logits == 512
    assert inference_activations(a, 8, 1, tp=3, all_logits=True).logits == 1366
    # Eager, context 16, tp=3: scores 3*16*16*10 = 7680, mask 16*16*2 = 512, repeat_kv (1 KV head < 3 heads)
    # 2*16*3*8*2 = 1536 -> 9728; attention 16*5*8*2 + 16*3*8*2 + 16*64*2 + 9728 = 1280 + 768 + 2048 + 9728
    # = 13824 > MLP 3*16*54*2 = 5184.
    eager = inference_activations(a, 16, 1, flash_attention=False, tp=3)
    assert eager.attention_scores == 9728
    assert eager.layer_peak == 16 * 256 + 13824 == 17920


def test_inference_kv_heads_rounding_in_activations() -> None:
    a = parse(MHA8)
    # tp=3, t=8: 3 query heads, ceil(8/3) = 3 KV heads: q,k,v 8*(3 + 6)*8*2 = 1152, output 8*3*8*2 = 384,
    # o_proj output 1024 -> 2560; MLP 3*8*ceil(32/3)*2 = 3*8*11*2 = 528.
    act = inference_activations(a, 8, 1, tp=3)
    assert act.layer_peak == 2048 + 2560 == 4608


def test_prefill_chunk_bounds_the_tokens_per_pass() -> None:
    a = parse(DENSE)
    # 2 sequences of 64 = 128 tokens, chunks of 40: t = min(128, 40) = 40 tokens per pass, each attending to
    # up to 64 keys.
    flash = inference_activations(a, 64, 2, prefill_chunk=40)
    assert flash.layer_peak == 40 * 1216 == 48640
    assert flash.logits == 2 * 1536  # the last position of each of the 2 sequences
    eager = inference_activations(a, 64, 2, prefill_chunk=40, flash_attention=False)
    # scores 8*40*64*10 = 204800, mask 40*64*2 = 5120, repeat_kv 2*40*8*8*2 = 10240
    assert eager.attention_scores == 204800 + 5120 + 10240 == 220160
    # attention 40*448 + 220160 = 238080 > MLP 40*960 = 38400
    assert eager.layer_peak == 40 * 256 + 238080 == 248320
    # A chunk larger than the prompt changes nothing: t = 128.
    assert inference_activations(a, 64, 2, prefill_chunk=1000).layer_peak == 128 * 1216
    # all_logits keeps every position of the pass in bf16: 40 x 256 x 2.
    assert inference_activations(a, 64, 2, prefill_chunk=40, all_logits=True).logits == 40 * 512


def test_logits_positions_are_min_of_batch_and_tokens() -> None:
    a = parse(DENSE)
    # 8 sequences of 4 tokens in chunks of 3: the pass holds 3 tokens, so at most 3 last positions.
    assert inference_activations(a, 4, 8, prefill_chunk=3).logits == 3 * 1536
    # Without chunking: 8 sequences -> 8 last positions; all_logits -> all 32 tokens at V*a = 512 each.
    assert inference_activations(a, 4, 8).logits == 8 * 1536
    assert inference_activations(a, 4, 8, all_logits=True).logits == 32 * 512
    # Logits are split over TP GPUs: 32 * 512 / 4; the last positions 8 * 1536 / 4.
    assert inference_activations(a, 4, 8, all_logits=True, tp=4).logits == 4096
    assert inference_activations(a, 4, 8, tp=4).logits == 3072


@pytest.mark.parametrize("dtype,a,per_score", [("bf16", 2, BF16_SCORE), ("fp16", 2, FP16_SCORE),
                                               ("fp32", 4, FP32_SCORE)])
def test_eager_score_bytes_by_compute_dtype(dtype: str, a: int, per_score: int) -> None:
    # MHA8: 8 heads = 8 KV heads, so no repeat_kv; context 4, batch 1 (t = 4): 8 x 4 x 4 scores of `per_score`
    # bytes plus the 4 x 4 mask of `a` bytes.
    act = inference_activations(parse(MHA8), 4, 1, flash_attention=False, a=a, compute_dtype=dtype)
    assert act.attention_scores == 8 * 4 * 4 * per_score + 4 * 4 * a


def test_eager_mask_is_tokens_by_context() -> None:
    m = parse(MHA8)
    # Batch 3 of context 4: t = 12 queries, each against its sequence's 4 keys: scores 8*12*4*10 = 3840, the mask
    # (batch x 1 x 4 x 4) = t x context = 48 elements x 2 = 96.
    assert inference_activations(m, 4, 3, flash_attention=False).attention_scores == 3840 + 96
    # A chunk of 5 tokens against up to 4 keys: scores 8*5*4*10 = 1600, mask 5*4*2 = 40.
    assert inference_activations(m, 4, 3, flash_attention=False, prefill_chunk=5).attention_scores == 1640


def test_eager_repeat_kv_only_with_fewer_kv_heads_than_heads() -> None:
    a = parse(DENSE)
    # 2 KV heads < 8 heads: repeat_kv copies k and v to 8 heads: 2 x 4 x 8 x 8 x 2 = 1024 on top of
    # scores 8*4*4*10 = 1280 and mask 4*4*2 = 32.
    assert inference_activations(a, 4, 1, flash_attention=False).attention_scores == 1280 + 32 + 1024
    # tp=4: 2 heads and ceil(2/4) -> 1 KV head per GPU, still fewer: 2*4*2*8*2 = 256; scores 2*4*4*10 = 320.
    assert inference_activations(a, 4, 1, flash_attention=False, tp=4).attention_scores == 320 + 32 + 256
    # tp=8: 1 head and 1 KV head per GPU: nothing to repeat. Scores 1*4*4*10 = 160 + mask 32.
    assert inference_activations(a, 4, 1, flash_attention=False, tp=8).attention_scores == 160 + 32
    # MHA (8 = 8) repeats nothing either (previous test).


def test_estimate_runs_eager_attention_in_the_weights_compute_dtype() -> None:
    # Inference in fp16 weights computes in fp16 (8 B per score), bf16 in bf16 (10 B), fp32 in fp32 (a = 4).
    # MHA8, context 4, eager, no overhead; per token residual 256, attention 640 (q,k,v (8 + 16)*8*2 = 384, output
    # 128, o_proj output 128), MLP 3*32*2 = 192.
    m = parse(MHA8)

    def acts(precision: str) -> int:
        return estimate(m, Scenario(precision=precision, context=4, flash_attention=False, overhead_bytes=0),
                        PRECISIONS).activation_bytes

    # bf16: scores 8*4*4*10 + 4*4*2 = 1312; attention 4*640 + 1312 = 3872; layer 4*256 + 3872 = 4896;
    # logits 256*6 = 1536.
    assert acts("bf16") == 4896 + 1536 == 6432
    # fp16: scores 8*4*4*8 + 32 = 1056 -> 4640 + 1536.
    assert acts("fp16") == 4640 + 1536 == 6176
    # The fp16-based quantised formats (bitsandbytes int8, GPTQ int4) compute in fp16 too.
    assert acts("int8") == acts("int4") == 6176
    # fp32: a = 4. residual 2*4*64*4 = 2048; attention 4*(24*8*4 + 64*4 + 64*4) = 5120 + scores 8*4*4*8 + 4*4*4
    # = 1088 -> 6208 > MLP 3*4*32*4 = 1536; logits 256*(4 + 4) = 2048.
    assert acts("fp32") == 2048 + 6208 + 2048 == 10304


# --- training activations ------------------------------------------------------------------------

def test_korthikanti_per_layer_activations_term_by_term() -> None:
    # Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
    # arXiv 2205.05198, section 4.1 (GPT layer, 16-bit activations, dropout, 4h MLP):
    #   attention block 11sbh + 5as^2b (QKV input 2sbh, Q and K 4sbh, softmax output 2as^2b, softmax dropout
    #   mask as^2b, dropout output 2as^2b, V 2sbh, output projection input 2sbh, its dropout mask sbh);
    #   MLP 19sbh (input 2sbh, gelu input 8sbh, gelu output 8sbh, dropout mask sbh); two layer norms 4sbh.
    #   Total sbh(34 + 5as/h).
    s, b, h, heads = 16, 2, 64, 4
    g = parse(GPT2)
    sbh = s * b * h
    attention = 11 * sbh + 5 * heads * s * s * b
    mlp = 19 * sbh
    norms = 4 * sbh
    assert attention + mlp + norms == sbh * 34 + 5 * heads * s * s * b == 79872
    assert layer_saved_activations(g, s, b, flash_attention=False, dropout=True) == 79872
    # Selective recomputation (section 4.2): the attention core (the 5as^2b part) is recomputed, leaving 34sbh;
    # the flash-attention style backward keeps only the fp32 log-sum-exp per head and query, 4 bytes x b*a*s.
    sel = training_activations(g, s, b, checkpointing="selective", dropout=True, flash_attention=False)
    assert sel.per_layer == (34 * sbh + 4 * b * heads * s,) * 2
    # Full recomputation: each layer keeps its 16-bit input, 2sbh (Korthikanti: 2sbhL in total), and one layer's
    # full set (79872) is rebuilt at a time during backward.
    full = training_activations(g, s, b, checkpointing="full", dropout=True, flash_attention=False)
    assert full.per_layer == (2 * sbh, 2 * sbh)
    assert full.workspace == 79872
    # Outside the layers: embedding output and final-norm input 2*T*h*a, logits T*V*(a + 8) (bf16 logits,
    # their fp32 upcast and the fp32 log-softmax). T = 32, V = 100.
    outside = 2 * 32 * 64 * 2 + 32 * 100 * 10
    assert full.outside == outside == 40192
    assert full.total == 2 * 2 * sbh + outside + 79872
    none = training_activations(g, s, b, dropout=True, flash_attention=False)
    assert none.total == 2 * 79872 + 40192 and none.workspace == 0


def test_dense_gated_layer_saved_activations_term_by_term() -> None:
    a = parse(DENSE)
    s, b = 16, 2
    T = s * b  # 32 tokens
    common = (2 * T * 64 * 2             # inputs of the two norms: 8192
              + T * 64 * 2               # QKV projection input: 4096
              + T * (64 + 16 + 16) * 2   # Q (8 heads x 8), K and V (2 heads x 8): 6144
              + T * 64 * 2               # attention output = o_proj input: 4096
              + T * 64 * 2               # MLP input: 4096
              + 4 * T * 160 * 2)         # gated MLP: gate, up, act(gate), act(gate)*up: 40960
    assert common == 67584
    lse = b * 8 * s * 4                  # flash attention: fp32 log-sum-exp per head and query: 1024
    assert layer_saved_activations(a, s, b, flash_attention=True, dropout=False) == common + lse == 68608
    masks = 2 * T * 64                   # two 1-byte dropout masks of T*h
    assert layer_saved_activations(a, s, b, flash_attention=True, dropout=True) == common + lse + masks == 72704
    # Eager attention without dropout keeps the softmax output b*heads*s^2*a.
    assert layer_saved_activations(a, s, b, flash_attention=False, dropout=False) == common + 2 * 8 * 256 * 2
    # With dropout also the mask (1 byte) and the dropout output (a): b*heads*s^2*(2a + 1).
    assert layer_saved_activations(a, s, b, flash_attention=False, dropout=True) == common + masks + 2 * 8 * 256 * 5
    # LoRA: each adapted module saves its r-dim intermediate, T*r*a; 7 modules of rank 4.
    assert layer_saved_activations(a, s, b, flash_attention=True, dropout=False, lora_rank=4,
                                   lora_modules=7) == 68608 + 7 * T * 4 * 2


def test_dropout_defaults_follow_the_model_family() -> None:
    s, b, T = 16, 2, 32
    # Falcon (dropout on by default): multi-query, 4 heads of 16, gelu MLP of 256, flash attention:
    # norms 8192 + QKV input 4096 + Q,K,V T*(64 + 16 + 16)*2 = 6144 + output 4096 + LSE 2*4*16*4 = 512
    # + MLP input 4096 + gelu 2*T*256*2 = 32768 = 59904; dropout masks 2*T*64 = 4096.
    falcon = training_activations(parse(FALCON), s, b)
    assert falcon.per_layer == (59904 + 4096,) * 2
    assert training_activations(parse(FALCON), s, b, dropout=False).per_layer == (59904,) * 2
    # GPT-2: dropout on by default, so the Korthikanti total of the previous test.
    assert training_activations(parse(GPT2), s, b, flash_attention=False).per_layer[0] == 79872
    # Llama: no dropout by default (the flash, no-dropout figure of DENSE).
    assert training_activations(parse(DENSE), s, b).per_layer[0] == 68608


def test_moe_layer_saves_router_logits_and_routed_intermediates() -> None:
    a = parse(MOE)
    s, b, T = 16, 2, 32
    attention = 2 * T * 64 * 2 + T * 64 * 2 + T * 96 * 2 + T * 64 * 2 + b * 8 * s * 4  # as DENSE: 23552
    routed = 2 * T  # 2 experts per token
    moe = (T * 64 * 2                    # MLP input
           + T * 4 * 4                   # router logits, fp32, E = 4
           + routed * 64 * 2             # each routed token's copied input
           + 4 * routed * 32 * 2)        # gated expert intermediates, I = 32
    assert layer_saved_activations(a, s, b, flash_attention=True, dropout=False) == attention + moe == 52736


def test_deepseek_layer_saves_shared_expert_intermediates() -> None:
    a = parse(DEEPSEEK)
    s, b, T = 16, 2, 32
    # MLA decompresses per-head Q, K, V: 3 x 4 heads x 16 per token; attention output 4 x 16.
    attention = 2 * T * 64 * 2 + T * 64 * 2 + T * 3 * 4 * 16 * 2 + T * 4 * 16 * 2 + b * 4 * s * 4
    moe = T * 64 * 2 + T * 4 * 4 + 2 * T * 64 * 2 + 4 * 2 * T * 16 * 2
    shared = 4 * T * 64 * 2  # gate, up, act, product of the shared expert (I = 4 x 16)
    assert attention + moe + shared == 66560
    assert layer_saved_activations(a, s, b, flash_attention=True, dropout=False) == 66560


def test_training_activations_checkpointing_modes() -> None:
    a = parse(DENSE)
    s, b, T = 16, 2, 32
    outside = 2 * T * 64 * 2 + T * 256 * (2 + 8)  # 8192 + 81920
    none = training_activations(a, s, b)
    assert none.per_layer == (68608, 68608) and none.outside == outside == 90112 and none.workspace == 0
    assert none.total == 2 * 68608 + 90112
    # Selective with eager attention: no s^2 term, the flash-style LSE instead (same as flash).
    assert training_activations(a, s, b, checkpointing="selective", flash_attention=False).per_layer[0] == 68608
    # Without checkpointing, eager keeps the s^2 softmax (previous test): 67584 + 2*8*16*16*2 = 75776.
    assert training_activations(a, s, b, flash_attention=False).per_layer[0] == 75776
    # Full: each layer keeps its input T*h*a; one layer's activations are rebuilt during backward.
    full = training_activations(a, s, b, checkpointing="full")
    assert full.per_layer == (T * 64 * 2, T * 64 * 2) and full.workspace == 68608
    assert full.total == 2 * 4096 + 90112 + 68608
    lora = training_activations(a, s, b, lora_rank=16, lora_modules_per_layer=7)
    assert lora.per_layer[0] == 68608 + 7 * T * 16 * 2
    with pytest.raises(ValueError):
        training_activations(a, s, b, checkpointing="some")
