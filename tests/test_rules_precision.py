"""Independent-expectation tests for generator/estimate/precision.py and data/precisions.yaml.

Every expected value is derived by hand in the test from an outside definition, cited next to it:

- ggml block structs: llama.cpp ggml/src/ggml-common.h at the commit data/precisions.yaml cites,
  https://github.com/ggml-org/llama.cpp/blob/aca2e6ce7909064dbfbf3bd168e9ad3db1826e6c/ggml/src/ggml-common.h
- llama.cpp's per-tensor quantisation rules: llama_tensor_get_type and llama_model_quantize_impl in
  https://github.com/ggml-org/llama.cpp/blob/8784689fee07c6daabf3487d24e1535534ef6e6b/src/llama-quant.cpp
  (quoted below as "llama-quant.cpp"); LLM_TYPE_70B from load_hparams in src/llama-model.cpp
  (LLM_ARCH_LLAMA: n_expert == 8 -> 8x7B/8x22B only, else `case 80: type = n_head() == n_head_kv() ?
  LLM_TYPE_65B : LLM_TYPE_70B`; LLM_ARCH_QWEN2: `case 80: type = LLM_TYPE_70B`; no 80-layer case for
  QWEN3, FALCON, OLMO2, GEMMA2, PHI3) and convert_hf_to_gguf.py (LlamaModel is registered for
  LlamaForCausalLM, MistralForCausalLM and MixtralForCausalLM, i.e. all three are LLM_ARCH_LLAMA).
- bitsandbytes quantize_4bit / quantize_blockwise / get_4bit_type / create_dynamic_map,
  https://github.com/bitsandbytes-foundation/bitsandbytes/blob/01327aa0119fa503ea16322dd72f69f202e4502e/bitsandbytes/functional.py
- AutoGPTQ QuantLinear buffers,
  https://github.com/AutoGPTQ/AutoGPTQ/blob/7c691ed3ec00fb83f75e35bd1b1d9c09114d818f/auto_gptq/nn_modules/qlinear/qlinear_cuda.py
- DeepSeek-V3 FP8 Linear (one fp32 scale per 128 x 128 block, ceil on both dims, per expert Linear),
  https://github.com/deepseek-ai/DeepSeek-V3/blob/1ea5a1a7ed7429e25ba2fa2c76fe74fa5968d348/inference/model.py

Rule tests use small synthetic configs (256-wide, so no K-quant fallback unless a test wants one).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.estimate.architecture import Architecture, Tensor, parse_architecture
from generator.estimate.memory import kv_cache_bytes
from generator.estimate.precision import (
    Precision, PrecisionError, Rule, assign_types, parse_precision_catalog, weight_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "data/precisions.yaml").read_text())
CATALOG = parse_precision_catalog(RAW)

GGUF_PRESETS = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k", "iq4_xs", "iq2_xxs")


# --- synthetic configs and helpers ------------------------------------------------------------------

def llama_cfg(layers: int, *, heads: int = 8, kv: int = 8, head_dim: int = 32, hidden: int = 256,
              inter: int = 512, vocab: int = 512, model_type: str = "llama", tied: bool = False,
              experts: int = 0) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model_type": model_type, "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": head_dim, "tie_word_embeddings": tied,
    }
    if experts:
        cfg.update(num_local_experts=experts, num_experts_per_tok=2)
    return cfg


def llama(layers: int, **kw: Any) -> Architecture:
    return parse_architecture(llama_cfg(layers, **kw))


def mixtral(layers: int, experts: int, **kw: Any) -> Architecture:
    return llama(layers, model_type="mixtral", experts=experts, **kw)


def falcon(layers: int, *, tied: bool = True) -> Architecture:
    # Falcon-7B style: multi-query (qkv rows = 256 + 2*64), parallel attention, ffn 4*hidden = 1024.
    return parse_architecture({"model_type": "falcon", "vocab_size": 512, "hidden_size": 256,
                               "num_attention_heads": 4, "num_hidden_layers": layers,
                               "tie_word_embeddings": tied})


def deepseek(layers: int) -> Architecture:
    # Layer 0 dense (ffn_down), layers 1.. MoE with routed (ffn_down_exps) and shared (ffn_down_shexp) experts.
    return parse_architecture({
        "model_type": "deepseek_v3", "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": layers,
        "num_attention_heads": 2, "intermediate_size": 512, "moe_intermediate_size": 256,
        "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
        "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64})


def gpt_oss(layers: int) -> Architecture:
    return parse_architecture({
        "model_type": "gpt_oss", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 256,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "num_local_experts": 4, "num_experts_per_tok": 2})


def types_of(arch: Architecture, pid: str | Precision) -> dict[tuple[str, int | None], str]:
    """(tensor name, layer) -> storage type id chosen for it."""
    prec = CATALOG.precision(pid) if isinstance(pid, str) else pid
    out: dict[tuple[str, int | None], str] = {}
    for t, st in assign_types(arch, prec, CATALOG):
        out[(t.name, t.layer)] = st.id
    return out


def layer_types(types: dict[tuple[str, int | None], str], name: str) -> dict[int, str]:
    return {layer: tid for (n, layer), tid in types.items() if n == name and layer is not None}


def split(n: int, chosen: set[int], yes: str, no: str) -> dict[int, str]:
    return {i: (yes if i in chosen else no) for i in range(n)}


def probe(default: str, *rules: Rule) -> Precision:
    return Precision(id=f"probe-{default}", label="probe", family="gguf", default=default, rules=tuple(rules))


# --- 1. storage types: bytes from the block struct layouts ---------------------------------------------

QK_K = 256
GGML_HALF = 2  # typedef uint16_t ggml_half
# (weights per block, bytes per block written out from the struct fields in ggml-common.h @ aca2e6ce)
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    # block_q8_0 { ggml_half d; int8_t qs[QK8_0]; }
    "q8_0": (32, GGML_HALF + 32),  # = 34
    # block_q5_0 { ggml_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; }
    "q5_0": (32, GGML_HALF + 4 + 32 // 2),  # = 22
    # block_q5_1 { ggml_half d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; }
    "q5_1": (32, 2 * GGML_HALF + 4 + 32 // 2),  # = 24
    # block_q4_0 { ggml_half d; uint8_t qs[QK4_0 / 2]; }
    "q4_0": (32, GGML_HALF + 32 // 2),  # = 18
    # block_q4_1 { ggml_half d, m; uint8_t qs[QK4_1 / 2]; }
    "q4_1": (32, 2 * GGML_HALF + 32 // 2),  # = 20
    # block_iq4_nl { ggml_half d; uint8_t qs[QK4_NL/2]; }
    "iq4_nl": (32, GGML_HALF + 32 // 2),  # = 18
    # block_mxfp4 { uint8_t e; /* E8M0 */ uint8_t qs[QK_MXFP4/2]; }
    "mxfp4": (32, 1 + 32 // 2),  # = 17
    # block_q6_K { uint8_t ql[QK_K/2]; uint8_t qh[QK_K/4]; int8_t scales[QK_K/16]; ggml_half d; }
    "q6_k": (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + GGML_HALF),  # = 210
    # block_q5_K { ggml_half d, dmin; uint8_t scales[K_SCALE_SIZE=12]; uint8_t qh[QK_K/8]; uint8_t qs[QK_K/2]; }
    "q5_k": (QK_K, 2 * GGML_HALF + 12 + QK_K // 8 + QK_K // 2),  # = 176
    # block_q4_K { ggml_half d, dmin; uint8_t scales[K_SCALE_SIZE=12]; uint8_t qs[QK_K/2]; }
    "q4_k": (QK_K, 2 * GGML_HALF + 12 + QK_K // 2),  # = 144
    # block_q3_K { uint8_t hmask[QK_K/8]; uint8_t qs[QK_K/4]; uint8_t scales[12]; ggml_half d; }
    "q3_k": (QK_K, QK_K // 8 + QK_K // 4 + 12 + GGML_HALF),  # = 110
    # block_q2_K { uint8_t scales[QK_K/16]; uint8_t qs[QK_K/4]; ggml_half d, dmin; }
    "q2_k": (QK_K, QK_K // 16 + QK_K // 4 + 2 * GGML_HALF),  # = 84
    # block_iq4_xs { ggml_half d; uint16_t scales_h; uint8_t scales_l[QK_K/64]; uint8_t qs[QK_K/2]; }
    "iq4_xs": (QK_K, GGML_HALF + 2 + QK_K // 64 + QK_K // 2),  # = 136
    # block_iq3_s { ggml_half d; uint8_t qs[QK_K/4]; qh[QK_K/32]; signs[QK_K/8]; scales[IQ3S_N_SCALE = QK_K/64]; }
    "iq3_s": (QK_K, GGML_HALF + QK_K // 4 + QK_K // 32 + QK_K // 8 + QK_K // 64),  # = 110
    # block_iq2_xxs { ggml_half d; uint16_t qs[QK_K/8]; }
    "iq2_xxs": (QK_K, GGML_HALF + 2 * (QK_K // 8)),  # = 66
}


@pytest.mark.parametrize("tid", sorted(GGML_BLOCKS))
@pytest.mark.parametrize("blocks_shape", [(3, 2), (2, 3, 1)])
def test_block_type_bytes(tid: str, blocks_shape: tuple[int, ...]):
    # A (3, 2*block) matrix and a (2, 3, block) expert stack both hold 6 whole blocks.
    block, block_bytes = GGML_BLOCKS[tid]
    shape = (*blocks_shape[:-1], blocks_shape[-1] * block)
    t = Tensor("probe.weight", "mlp", shape, 0)
    assert CATALOG.types[tid].bytes_for(t) == 6 * block_bytes


@pytest.mark.parametrize("tid", sorted(GGML_BLOCKS))
def test_block_type_bytes_on_a_second_shape(tid: str):
    # 7 rows of 5 blocks: 35 blocks. Distinguishes a changed block size from a changed byte count.
    block, block_bytes = GGML_BLOCKS[tid]
    t = Tensor("probe.weight", "mlp", (7, 5 * block), 0)
    assert CATALOG.types[tid].bytes_for(t) == 35 * block_bytes


@pytest.mark.parametrize("tid,bits", [("f32", 32), ("f16", 16), ("bf16", 16)])
def test_float_types(tid: str, bits: int):
    # IEEE 754 binary32 / binary16 and bfloat16 (1 sign + 8 exponent + 7 mantissa bits): bits/8 per element.
    assert CATALOG.types[tid].bytes_for(Tensor("m.weight", "mlp", (3, 5), 0)) == 15 * bits // 8
    assert CATALOG.types[tid].bytes_for(Tensor("v.weight", "norms", (7,), 0)) == 7 * bits // 8
    assert CATALOG.types[tid].bytes_for(Tensor("e.weight", "experts", (2, 3, 5), 0)) == 30 * bits // 8


# --- 2. fallback chains for rows that are not whole blocks --------------------------------------------

def _rows_arch() -> Architecture:
    """One layer whose matrices have rows of 512 (whole 256-blocks), 96 (32-blocks only) and 100 (neither)."""
    base = llama(1)
    tensors = (Tensor("attn_q.weight", "attention", (64, 512), 0),
               Tensor("attn_k.weight", "attention", (64, 96), 0),
               Tensor("ffn_down.weight", "mlp", (64, 100), 0))
    return replace(base, tensors=tensors)


# llama-quant.cpp, end of llama_tensor_get_type: if ne[0] % blck_size(new_type) != 0, then
#   IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, Q2_K, Q3_K, IQ4_XS -> IQ4_NL
#   Q4_K -> Q5_0;  Q5_K -> Q5_1;  Q6_K -> Q8_0
# and `if (tensor->ne[0] % ggml_blck_size(new_type) != 0) new_type = GGML_TYPE_F16;` for the 32-blocks.
K_FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0", "q3_k": "iq4_nl", "q2_k": "iq4_nl",
              "iq4_xs": "iq4_nl", "iq3_s": "iq4_nl", "iq2_xxs": "iq4_nl"}


@pytest.mark.parametrize("tid", sorted(K_FALLBACK))
def test_k_quant_fallbacks(tid: str):
    types = types_of(_rows_arch(), probe(tid))
    assert types[("attn_q.weight", 0)] == tid                # 512 = 2 x 256: no fallback
    assert types[("attn_k.weight", 0)] == K_FALLBACK[tid]    # 96 = 3 x 32: llama.cpp's fallback type
    assert types[("ffn_down.weight", 0)] == "f16"            # 100: not even 32-blocks -> F16


@pytest.mark.parametrize("tid", ["q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "iq4_nl"])
def test_32_block_fallback_is_f16(tid: str):
    types = types_of(_rows_arch(), probe(tid))
    assert types[("attn_k.weight", 0)] == tid
    assert types[("ffn_down.weight", 0)] == "f16"


def test_mxfp4_fallback_is_bf16():
    # Not from llama.cpp (its fallback switch has no MXFP4 case and throws "Unsupported tensor size"):
    # the mxfp4 precision keeps whatever it cannot block in its unquantised dtype, bf16, as gpt-oss
    # keeps its non-MXFP4 tensors (precisions.yaml, mxfp4 description).
    types = types_of(_rows_arch(), probe("mxfp4"))
    assert types[("attn_k.weight", 0)] == "mxfp4"
    assert types[("ffn_down.weight", 0)] == "bf16"


def test_missing_or_cyclic_fallback_is_an_error():
    raw = copy.deepcopy(RAW)
    del raw["storage_types"]["q4_k"]["fallback"]
    with pytest.raises(PrecisionError):
        assign_types(_rows_arch(), probe("q4_k"), parse_precision_catalog(raw))
    raw = copy.deepcopy(RAW)
    raw["storage_types"]["q4_k"]["fallback"] = "q6_k"
    raw["storage_types"]["q6_k"]["fallback"] = "q4_k"
    with pytest.raises(PrecisionError):
        assign_types(_rows_arch(), probe("q4_k"), parse_precision_catalog(raw))


# --- 3. group formats ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,expected", [
    # bitsandbytes quantize_4bit(blocksize=64, compress_statistics=True):
    #   out: uint8 ((n + 1) // 2)                  -> 4 bits per weight, odd n rounded up
    #   qabsmax: uint8, one per 64-weight block    -> 1 B x ceil(n / 64)
    #   state2.absmax: fp32, one per 256 absmax    -> 4 B x ceil(ceil(n / 64) / 256) = 4 B x ceil(n / 16384)
    #   per tensor: code = get_4bit_type("nf4"), 16 fp32 (64 B); state2.code = create_dynamic_map(),
    #   256 fp32 (1024 B); offset = absmax.mean(), one fp32 (4 B): 1092 B.
    ((100, 333), 33300 // 2 + 521 + 4 * 3 + 1092),         # 33300/64 = 520.3 -> 521; /16384 = 2.03 -> 3
    ((128, 256), 32768 // 2 + 512 + 4 * 2 + 1092),         # exact: 512 blocks, 2 second-level blocks
    ((3, 10923), (32769 + 1) // 2 + 513 + 4 * 3 + 1092),   # n = 32769: one weight past 2 x 16384
    ((3, 11), (33 + 1) // 2 + 1 + 4 * 1 + 1092),           # odd n: 17 bytes of nibbles
])
def test_nf4_double_quant_bytes(shape: tuple[int, ...], expected: int):
    assert CATALOG.types["nf4_dq"].bytes_for(Tensor("m.weight", "mlp", shape, 0)) == expected


@pytest.mark.parametrize("shape,expected", [
    # AutoGPTQ QuantLinear(bits=4, group_size=128, infeatures=in, outfeatures=out):
    #   qweight int32 (in // 32 * 4, out)      -> in * out / 2 bytes
    #   qzeros  int32 (ceil(in/128), out // 32 * 4) -> ceil(in/128) * out / 2 bytes (0.5 B per group and row)
    #   scales  fp16  (ceil(in/128), out)      -> ceil(in/128) * out * 2 bytes
    #   g_idx   int32 (in,)                    -> 4 * in bytes
    ((32, 4128), 4128 * 32 // 2 + 33 * 32 // 2 + 33 * 32 * 2 + 4 * 4128),  # 4128/128 = 32.25 -> 33 groups
    ((32, 256), 256 * 32 // 2 + 2 * 32 // 2 + 2 * 32 * 2 + 4 * 256),       # exactly 2 groups
    # Stacked experts (4, 64, 256): one QuantLinear per expert, each with its own g_idx.
    ((4, 64, 256), 4 * (256 * 64 // 2 + 2 * 64 // 2 + 2 * 64 * 2 + 4 * 256)),
])
def test_gptq_int4_g128_bytes(shape: tuple[int, ...], expected: int):
    assert CATALOG.types["gptq_int4_g128"].bytes_for(Tensor("m.weight", "mlp", shape, 0)) == expected


@pytest.mark.parametrize("shape,expected", [
    # bitsandbytes Linear8bitLt: int8 CB (out, in) plus one fp32 SCB per output row.
    ((96, 200), 96 * 200 + 96 * 4),
    ((3, 5, 7), 3 * 5 * 7 + 3 * 5 * 4),  # each expert's output rows carry their own scale
])
def test_int8_rowwise_bytes(shape: tuple[int, ...], expected: int):
    assert CATALOG.types["int8_rowwise"].bytes_for(Tensor("m.weight", "mlp", shape, 0)) == expected


@pytest.mark.parametrize("shape,expected", [
    # DeepSeek-V3 Linear: fp8 weight (out, in) + fp32 scale ((out + 127) // 128, (in + 127) // 128).
    ((300, 200), 300 * 200 + 3 * 2 * 4),
    ((256, 256), 256 * 256 + 2 * 2 * 4),
    ((257, 129), 257 * 129 + 3 * 2 * 4),
    # Experts are separate Linear modules: 3 x (3 x 2) tiles, not ceil(900 / 128) x 2 = 16 tiles.
    ((3, 300, 200), 3 * 300 * 200 + 3 * 3 * 2 * 4),
])
def test_fp8_block128_bytes(shape: tuple[int, ...], expected: int):
    assert CATALOG.types["fp8_block128"].bytes_for(Tensor("m.weight", "mlp", shape, 0)) == expected


def test_tile_rows_are_output_rows():
    # per_tile rows count along the output dimension (shape[-2]), cols along the input (row length): with
    # 64 x 128 tiles a (300, 200) matrix has ceil(300/64) x ceil(200/128) = 5 x 2 tiles.
    raw = copy.deepcopy(RAW)
    raw["storage_types"]["fp8_block128"]["per_tile"]["rows"] = 64
    fp8 = parse_precision_catalog(raw).types["fp8_block128"]
    assert fp8.bytes_for(Tensor("m.weight", "mlp", (300, 200), 0)) == 300 * 200 + 5 * 2 * 4


def test_quantized_precisions_pick_linear_matrices_only():
    # YAML descriptions (HF/bitsandbytes/GPTQ/DeepSeek layouts): linear layers of attention, MLP and
    # experts quantised; embeddings, lm_head, router, norms and biases in 16 bit. mxfp4 (gpt-oss): only MLP
    # and expert matrices, attention and router stay bf16.
    moe = mixtral(2, experts=4)
    dense = parse_architecture(dict(llama_cfg(2), attention_bias=True, mlp_bias=True))  # 1-D biases everywhere
    attention = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"}
    mlp = {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
           "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"}
    for pid, quant, rest, targets in [("fp8", "fp8_block128", "bf16", attention | mlp),
                                      ("int8", "int8_rowwise", "f16", attention | mlp),
                                      ("int4", "gptq_int4_g128", "f16", attention | mlp),
                                      ("nf4", "nf4_dq", "bf16", attention | mlp),
                                      ("mxfp4", "mxfp4", "bf16", mlp)]:
        for arch in (moe, dense):
            for (name, _), tid in types_of(arch, pid).items():
                assert tid == (quant if name in targets else rest), (pid, name)


# --- 4. KV cache element sizes -----------------------------------------------------------------------

@pytest.mark.parametrize("kid,expected", [
    # 2 layers x (K + V) x 2 KV heads x 32 dims = 256 elements per token; 3 tokens = 768 elements.
    ("f16", 768 * 2),             # IEEE binary16
    ("bf16", 768 * 2),            # bfloat16
    ("fp8", 768 * 1),             # E4M3/E5M2: one byte
    ("q8_0", 768 // 32 * 34),     # block_q8_0: 34 bytes per 32 elements
    ("q4_0", 768 // 32 * 18),     # block_q4_0: 18 bytes per 32 elements
])
def test_kv_cache_element_sizes(kid: str, expected: int):
    a = llama(2, heads=4, kv=2, hidden=128)
    assert kv_cache_bytes(a, 3, 1, CATALOG.kv_bytes_per_element(kid)) == expected


def test_unknown_ids_are_errors():
    with pytest.raises(PrecisionError):
        CATALOG.precision("q7_k")
    with pytest.raises(PrecisionError):
        CATALOG.kv_bytes_per_element("q5_0")


def test_catalog_rejects_unknown_types_conditions_and_numbers():
    for mutate in (
        lambda r: r["precisions"]["q4_k_m"].update(default="q4_kk"),
        lambda r: r["precisions"]["q4_k_m"]["rules"].append({"names": ["x"], "type": "nope"}),
        lambda r: r["precisions"]["q4_k_m"]["rules"].append({"names": ["x"], "when": ["ninth"], "type": "q8_0"}),
        lambda r: r["kv_cache_types"]["q8_0"].update(bytes_per_element="34/0"),
        lambda r: r["storage_types"]["q8_0"].update(block_bytes="many"),
    ):
        raw = copy.deepcopy(RAW)
        mutate(raw)
        with pytest.raises(PrecisionError):
            parse_precision_catalog(raw)


# --- 5. llama.cpp's per-tensor rules ------------------------------------------------------------------

# use_more_bits(i, n) = i < n/8 || i >= 7*n/8 || (i - n/8) % 3 == 2   (integer division), by hand:
# n = 32: n/8 = 4, 7n/8 = 28 -> 0-3, 28-31, and i - 4 in {2, 5, ..., 23}
MORE_BITS_32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
# n = 80: n/8 = 10, 7n/8 = 70 -> 0-9, 70-79, and i - 10 in {2, 5, ..., 59}
MORE_BITS_80 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51, 54, 57,
                60, 63, 66, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79}
# n = 60 (Falcon-40B depth): n/8 = 7, 7n/8 = 420/8 = 52 -> 0-6, 52-59, and i - 7 in {2, 5, ..., 44}
MORE_BITS_60 = {0, 1, 2, 3, 4, 5, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51, 52, 53, 54, 55,
                56, 57, 58, 59}
# n = 79: n/8 = 9, 7n/8 = 553/8 = 69 -> 0-8, 69-78, and i - 9 in {2, 5, ..., 59}
MORE_BITS_79 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 44, 47, 50, 53, 56,
                59, 62, 65, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78}
# n = 16: n/8 = 2, 7n/8 = 14 -> 0-1, 14-15, i in {4, 7, 10, 13};  n = 8: 0, 7, i in {3, 6}
MORE_BITS_16 = {0, 1, 4, 7, 10, 13, 14, 15}
MORE_BITS_8 = {0, 3, 6, 7}


def dense_expectation(pid: str, n: int) -> dict[str, Any]:
    """What llama_tensor_get_type gives a dense, untied, non-GQA, non-70B llama with n layers, written out
    per preset from llama-quant.cpp. Values: a type, or for attn_v / ffn_down a per-layer dict."""
    more = {32: MORE_BITS_32, 60: MORE_BITS_60, 80: MORE_BITS_80}[n]
    eighth = set(range(n // 8))      # i_layer < n_layer/8
    sixteenth = set(range(n // 16))  # i_layer < n_layer/16
    first_two = {0, 1}               # qs.i_attention_wv < 2
    d = {"q8_0": "q8_0", "q6_k": "q6_k", "q5_k_m": "q5_k", "q4_k_m": "q4_k", "q4_0": "q4_0",
         "q3_k_m": "q3_k", "q2_k": "q2_k", "iq4_xs": "iq4_xs", "iq2_xxs": "iq2_xxs"}[pid]
    exp: dict[str, Any] = {name: d for name in ("token_embd.weight", "attn_q.weight", "attn_k.weight",
                                                 "attn_output.weight", "ffn_gate.weight", "ffn_up.weight")}
    # output: Q8_0 stays (new_type == Q8_0), IQ2_XXS -> Q5_K, everything else -> Q6_K.
    exp["output.weight"] = {"q8_0": "q8_0", "iq2_xxs": "q5_k"}.get(pid, "q6_k")
    exp["attn_v.weight"] = split(n, set(), d, d)
    exp["ffn_down.weight"] = split(n, set(), d, d)
    if pid in ("q5_k_m", "q4_k_m"):   # attn_v and ffn_down: use_more_bits -> Q6_K
        exp["attn_v.weight"] = split(n, more, "q6_k", d)
        exp["ffn_down.weight"] = split(n, more, "q6_k", d)
    elif pid == "q3_k_m":
        exp["attn_v.weight"] = split(n, first_two, "q5_k", "q4_k")       # i_attention_wv < 2 ? Q5_K : Q4_K
        exp["ffn_down.weight"] = split(n, sixteenth, "q5_k", "q4_k")     # < n/16 Q5_K, not Falcon Q4_K
        exp["attn_output.weight"] = "q4_k"
    elif pid == "q2_k":
        exp["attn_v.weight"] = split(n, set(), "q3_k", "q3_k")           # n_gqa() < 4 -> Q3_K
        exp["ffn_down.weight"] = split(n, set(), "q3_k", "q3_k")
        exp["attn_output.weight"] = "q3_k"
    elif pid == "iq4_xs":
        exp["ffn_down.weight"] = split(n, eighth, "q5_k", d)             # i < n/8 && !imatrix -> Q5_K
    elif pid == "iq2_xxs":
        exp["token_embd.weight"] = "q2_k"                                # untied token_embd -> Q2_K
        exp["attn_v.weight"] = split(n, set(), "q2_k", "q2_k")           # gqa < 4, n_expert < 4 -> Q2_K
        exp["ffn_down.weight"] = split(n, eighth, "q2_k", d)             # i_ffn_down < n/8 -> Q2_K
    return exp


@pytest.mark.parametrize("n", [32, 60, 80])
@pytest.mark.parametrize("pid", GGUF_PRESETS)
def test_dense_llama_every_tensor(pid: str, n: int):
    # 8 heads, 8 KV heads: n_gqa() = 1; an 80-layer llama without GQA is LLM_TYPE_65B, not 70B.
    # n = 60: n/16 = 3 and n/8 = 7 (first_sixteenth / first_eighth off the 32- and 80-layer values).
    types = types_of(llama(n), pid)
    exp = dense_expectation(pid, n)
    for (name, layer), tid in types.items():
        if name.endswith("_norm.weight"):
            assert tid == "f32", name  # 1-D: written F32 by convert_hf_to_gguf, never quantised
        elif isinstance(exp[name], dict):
            assert tid == exp[name][layer], (name, layer)
        else:
            assert tid == exp[name], name


def test_q4_k_m_gqa_llama_tensor_counts():
    # 32 layers: 16 use_more_bits attn_v + 16 ffn_down + output = 33 q6_K, the rest q4_K, 65 F32 norms:
    # the same mix as llama.cpp's load log of Llama-3-8B Q4_K_M (193 q4_K, 33 q6_K, 65 f32).
    types = types_of(llama(32, kv=2), "q4_k_m")
    counts: dict[str, int] = {}
    for tid in types.values():
        counts[tid] = counts.get(tid, 0) + 1
    assert counts == {"q4_k": 193, "q6_k": 33, "f32": 65}
    assert layer_types(types, "attn_v.weight") == split(32, MORE_BITS_32, "q6_k", "q4_k")
    assert layer_types(types, "ffn_down.weight") == split(32, MORE_BITS_32, "q6_k", "q4_k")


# attn_v.weight of a plain layer (layer 4 of 8) under n_gqa() = 4 and = 3 (llama-quant.cpp attn_v branch;
# IQ2 branch: n_gqa() >= 4 || n_expert >= 4 -> Q4_K else Q2_K).
GQA_ATTN_V = {  # pid: (gqa 4, gqa 3)
    "q8_0": ("q8_0", "q8_0"), "q6_k": ("q6_k", "q6_k"), "q5_k_m": ("q5_k", "q5_k"), "q4_k_m": ("q4_k", "q4_k"),
    "q4_0": ("q4_0", "q4_0"), "q3_k_m": ("q4_k", "q4_k"),
    "q2_k": ("q4_k", "q3_k"),        # n_gqa() >= 4 ? Q4_K : Q3_K
    "iq4_xs": ("q5_k", "iq4_xs"),    # IQ4_XS && n_gqa() >= 4 -> Q5_K
    "iq2_xxs": ("q4_k", "q2_k"),
}


@pytest.mark.parametrize("pid", GGUF_PRESETS)
def test_gqa_at_least_4(pid: str):
    gqa4 = llama(8, heads=8, kv=2)                 # 8 / 2 = 4
    gqa3 = llama(8, heads=12, kv=4, head_dim=64)   # 12 / 4 = 3 (q rows 768 = 3 x 256)
    assert (types_of(gqa4, pid)[("attn_v.weight", 4)], types_of(gqa3, pid)[("attn_v.weight", 4)]) == GQA_ATTN_V[pid]


# Mixtral-style MoE, 8 layers, n_gqa() = 1; layer 4 is in no special set for n = 8. Per preset:
# (attn_v, attn_k, attn_output) with n_expert == 8, then with 16 or 4 experts.
# llama-quant.cpp: attn_v: `if (n_expert == 8) new_type = Q8_0` after every other attn_v rule;
# attn_k: n_expert == 8 -> Q8_0; attn_output (not Falcon): n_expert == 8 -> Q5_K for Q2_K, Q3_K_M, Q4_K_M,
# IQ4_XS (among others, not Q4_0/Q5_K_M/Q6_K/Q8_0), else Q2_K -> Q3_K, Q3_K_M -> Q4_K.
# IQ2 branch: attn_v n_expert >= 4 -> Q4_K; attn_k n_expert == 8 -> Q4_K; attn_output n_expert == 8 -> Q5_K.
EXPERTS_TABLE = {
    "q8_0": (("q8_0", "q8_0", "q8_0"), ("q8_0", "q8_0", "q8_0")),
    "q6_k": (("q8_0", "q8_0", "q6_k"), ("q6_k", "q6_k", "q6_k")),
    "q5_k_m": (("q8_0", "q8_0", "q5_k"), ("q5_k", "q5_k", "q5_k")),
    "q4_k_m": (("q8_0", "q8_0", "q5_k"), ("q4_k", "q4_k", "q4_k")),
    "q4_0": (("q8_0", "q8_0", "q4_0"), ("q4_0", "q4_0", "q4_0")),
    "q3_k_m": (("q8_0", "q8_0", "q5_k"), ("q4_k", "q3_k", "q4_k")),
    "q2_k": (("q8_0", "q8_0", "q5_k"), ("q3_k", "q2_k", "q3_k")),
    "iq4_xs": (("q8_0", "q8_0", "q5_k"), ("iq4_xs", "iq4_xs", "iq4_xs")),
    "iq2_xxs": (("q4_k", "q4_k", "q5_k"), ("q4_k", "iq2_xxs", "iq2_xxs")),
}


@pytest.mark.parametrize("experts", [8, 16, 4])
@pytest.mark.parametrize("pid", GGUF_PRESETS)
def test_experts_eq_8(pid: str, experts: int):
    types = types_of(mixtral(8, experts), pid)
    got = tuple(types[(name, 4)] for name in ("attn_v.weight", "attn_k.weight", "attn_output.weight"))
    assert got == EXPERTS_TABLE[pid][0 if experts == 8 else 1]


@pytest.mark.parametrize("pid,eight,other", [
    # layer 0 is in use_more_bits and first_two; the 8-expert Q8_0 comes last in llama.cpp and wins.
    ("q4_k_m", "q8_0", "q6_k"), ("q5_k_m", "q8_0", "q6_k"), ("q3_k_m", "q8_0", "q5_k"),
])
def test_eight_experts_override_the_layer_rules(pid: str, eight: str, other: str):
    assert types_of(mixtral(8, 8), pid)[("attn_v.weight", 0)] == eight
    assert types_of(mixtral(8, 16), pid)[("attn_v.weight", 0)] == other


@pytest.mark.parametrize("pid,eight,sixteen", [
    # Mixtral's real shape has n_gqa() = 32 / 8 = 4: Q2_K gives Q4_K and IQ4_XS gives Q5_K first, and the
    # 8-expert Q8_0 then overrides both.
    ("q2_k", "q8_0", "q4_k"), ("iq4_xs", "q8_0", "q5_k"), ("iq2_xxs", "q4_k", "q4_k"),
])
def test_eight_experts_override_gqa(pid: str, eight: str, sixteen: str):
    assert types_of(mixtral(8, 8, kv=2), pid)[("attn_v.weight", 4)] == eight
    assert types_of(mixtral(8, 16, kv=2), pid)[("attn_v.weight", 4)] == sixteen


def test_experts_at_least_4_in_iq2_xxs():
    # IQ2 branch: attn_v n_gqa() >= 4 || n_expert >= 4 -> Q4_K else Q2_K.
    assert types_of(mixtral(8, 3), "iq2_xxs")[("attn_v.weight", 4)] == "q2_k"
    assert types_of(mixtral(8, 4), "iq2_xxs")[("attn_v.weight", 4)] == "q4_k"


# Falcon (tied output = token_embd): llama-quant.cpp output branch `arch == LLM_ARCH_FALCON` -> Q8_0;
# ffn_down Q4_K_M: i < n/16 Q6_K, use_more_bits Q5_K, else Q4_K; Q3_K_M: i < n/16 Q5_K, use_more_bits Q4_K,
# else Q3_K; attn_output: no change for Falcon (only Q3_K_L); attn_qkv: Q3_K_M Q4_K, Q4_K_M Q5_K, Q5_K_M Q6_K.
def falcon_expectation(pid: str, n: int) -> dict[str, Any]:
    more = {32: MORE_BITS_32, 60: MORE_BITS_60}[n]
    sixteenth = set(range(n // 16))  # n = 32: {0, 1}; n = 60 (Falcon-40B): {0, 1, 2}
    eighth = set(range(n // 8))
    d = {"q8_0": "q8_0", "q6_k": "q6_k", "q5_k_m": "q5_k", "q4_k_m": "q4_k", "q4_0": "q4_0",
         "q3_k_m": "q3_k", "q2_k": "q2_k", "iq4_xs": "iq4_xs", "iq2_xxs": "iq2_xxs"}[pid]
    exp: dict[str, Any] = {"token_embd.weight": "q8_0", "attn_qkv.weight": d, "attn_output.weight": d,
                           "ffn_up.weight": d, "ffn_down.weight": split(n, set(), d, d)}
    if pid == "q4_k_m":
        exp["attn_qkv.weight"] = "q5_k"
        exp["ffn_down.weight"] = {i: "q6_k" if i in sixteenth else "q5_k" if i in more else "q4_k"
                                  for i in range(n)}
    elif pid == "q3_k_m":
        exp["attn_qkv.weight"] = "q4_k"
        exp["ffn_down.weight"] = {i: "q5_k" if i in sixteenth else "q4_k" if i in more else "q3_k"
                                  for i in range(n)}
    elif pid == "q5_k_m":
        exp["attn_qkv.weight"] = "q6_k"
        exp["ffn_down.weight"] = split(n, more, "q6_k", "q5_k")
    elif pid == "q2_k":
        exp["ffn_down.weight"] = split(n, set(), "q3_k", "q3_k")
    elif pid == "iq4_xs":
        exp["ffn_down.weight"] = split(n, eighth, "q5_k", "iq4_xs")
    elif pid == "iq2_xxs":
        exp["ffn_down.weight"] = split(n, eighth, "q2_k", "iq2_xxs")
    return exp


@pytest.mark.parametrize("n", [32, 60])
@pytest.mark.parametrize("pid", GGUF_PRESETS)
def test_falcon_every_tensor(pid: str, n: int):
    exp = falcon_expectation(pid, n)
    for (name, layer), tid in types_of(falcon(n), pid).items():
        if name.endswith(("_norm.weight", "_norm.bias")):
            assert tid == "f32", name
        elif isinstance(exp[name], dict):
            assert tid == exp[name][layer], (name, layer)
        else:
            assert tid == exp[name], name


@pytest.mark.parametrize("pid,embd", [("q4_k_m", "q4_k"), ("q6_k", "q6_k"), ("iq2_xxs", "q2_k"), ("q8_0", "q8_0")])
def test_untied_falcon_output_is_q8_0(pid: str, embd: str):
    types = types_of(falcon(4, tied=False), pid)
    assert types[("output.weight", None)] == "q8_0"
    assert types[("token_embd.weight", None)] == embd


@pytest.mark.parametrize("pid,falcon_type", [
    ("q4_k_m", "q4_k"), ("q3_k_m", "q3_k"), ("q2_k", "q2_k"), ("iq4_xs", "iq4_xs"),
    ("iq2_xxs", "q5_k"),  # the IQ2 branch's attn_output rule has no Falcon check
])
def test_attn_output_eight_experts_is_not_for_falcon(pid: str, falcon_type: str):
    # attn_output: `if (arch != LLM_ARCH_FALCON) { if (n_expert == 8) ... Q5_K }`. A Falcon architecture with
    # n_expert = 8 (synthetic: only the conditions' inputs change) keeps the default type.
    f8 = replace(falcon(4), num_experts=8)
    assert types_of(f8, pid)[("attn_output.weight", 1)] == falcon_type
    assert types_of(mixtral(4, 8), pid)[("attn_output.weight", 1)] == "q5_k"


# LLM_TYPE_70B (llama-model.cpp): LLM_ARCH_LLAMA (llama, mistral, mixtral configs) with n_expert != 8,
# 80 layers and n_head != n_head_kv; LLM_ARCH_QWEN2 with 80 layers. In the attn_v branch
# `if (qs.model.type == LLM_TYPE_70B) { if (new_type == Q3_K || new_type == Q4_K) new_type = Q5_K; }`.
@pytest.mark.parametrize("cfg,is_70b", [
    ({"layers": 80, "kv": 2}, True),                          # Llama-2/3-70B shape: GQA
    ({"layers": 80, "kv": 8}, False),                         # n_head == n_head_kv: LLM_TYPE_65B
    ({"layers": 79, "kv": 2}, False),                         # not 80 layers
    ({"layers": 80, "kv": 2, "model_type": "mistral"}, True),
    ({"layers": 80, "kv": 8, "model_type": "qwen2"}, True),   # QWEN2: 80 layers, whatever the heads
    ({"layers": 80, "kv": 2, "model_type": "qwen3"}, False),  # QWEN3 has no 80-layer case
], ids=["llama80-gqa", "llama80-mha", "llama79-gqa", "mistral80-gqa", "qwen2-80-mha", "qwen3-80-gqa"])
def test_llama_70b_rule(cfg: dict[str, Any], is_70b: bool):
    a = llama(**cfg)
    n = a.num_layers
    more = MORE_BITS_80 if n == 80 else MORE_BITS_79
    bumped = "q5_k" if is_70b else "q4_k"
    # Q4_K_M: use_more_bits -> Q6_K, else Q4_K, which 70B lifts to Q5_K.
    assert layer_types(types_of(a, "q4_k_m"), "attn_v.weight") == split(n, more, "q6_k", bumped)
    # Q3_K_M: i_attention_wv < 2 -> Q5_K, else Q4_K, which 70B lifts to Q5_K.
    assert layer_types(types_of(a, "q3_k_m"), "attn_v.weight") == split(n, {0, 1}, "q5_k", bumped)
    # Q2_K: n_gqa() >= 4 ? Q4_K : Q3_K, both lifted to Q5_K under 70B.
    gqa4 = a.num_heads // a.num_kv_heads >= 4
    plain = "q4_k" if gqa4 else "q3_k"
    assert set(layer_types(types_of(a, "q2_k"), "attn_v.weight").values()) == {"q5_k" if is_70b else plain}
    # Q5_K_M (Q6_K / Q5_K) and IQ4_XS (Q5_K / IQ4_XS) are never Q3_K/Q4_K: 70B changes nothing.
    assert layer_types(types_of(a, "q5_k_m"), "attn_v.weight") == split(n, more, "q6_k", "q5_k")
    assert set(layer_types(types_of(a, "iq4_xs"), "attn_v.weight").values()) == {"q5_k" if gqa4 else "iq4_xs"}


def test_q2_k_70b_without_gqa_4():
    # 80-layer llama with n_gqa() = 2: Q2_K gives attn_v Q3_K, which the 70B rule lifts to Q5_K.
    assert set(layer_types(types_of(llama(80, kv=4), "q2_k"), "attn_v.weight").values()) == {"q5_k"}


@pytest.mark.parametrize("pid,tied_embd,untied_embd,untied_out", [
    ("q4_k_m", "q6_k", "q4_k", "q6_k"),
    ("q5_k_m", "q6_k", "q5_k", "q6_k"),
    ("q8_0", "q8_0", "q8_0", "q8_0"),
    ("iq2_xxs", "q5_k", "q2_k", "q5_k"),  # tied: the output rule (Q5_K) wins over token_embd's Q2_K
])
def test_tied_embeddings_take_the_output_type(pid: str, tied_embd: str, untied_embd: str, untied_out: str):
    # llama-quant.cpp: `name == output.weight || (!qs.has_output && name == token_embd.weight)` -> output rules.
    tied = types_of(llama(2, tied=True), pid)
    assert ("output.weight", None) not in tied
    assert tied[("token_embd.weight", None)] == tied_embd
    untied = types_of(llama(2), pid)
    assert untied[("token_embd.weight", None)] == untied_embd
    assert untied[("output.weight", None)] == untied_out


@pytest.mark.parametrize("pid", GGUF_PRESETS)
def test_unquantised_tensors_stay_f32(pid: str):
    # llama_model_quantize_impl: only tensors with >= 2 dims whose name ends in "weight" are quantised, never
    # "_norm.weight", "ffn_gate_inp.weight" or position_embd; convert_hf_to_gguf writes them in F32.
    qwen = types_of(parse_architecture(llama_cfg(2, model_type="qwen2")), pid)  # q/k/v biases
    for name in ("attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_norm.weight", "ffn_norm.weight"):
        assert qwen[(name, 1)] == "f32", name
    assert qwen[("output_norm.weight", None)] == "f32"
    assert types_of(mixtral(2, 4), pid)[("ffn_gate_inp.weight", 1)] == "f32"
    gpt2 = types_of(parse_architecture({"model_type": "gpt2", "vocab_size": 512, "n_embd": 256, "n_head": 4,
                                        "n_layer": 2, "n_positions": 128}), pid)
    assert gpt2[("position_embd.weight", None)] == "f32"
    assert gpt2[("attn_qkv.bias", 0)] == "f32"


@pytest.mark.parametrize("pid,row288_out", [
    # llama-quant.cpp output branch: `arch == FALCON || nx % qk_k != 0` -> Q8_0, with qk_k the block size of
    # the preset's default type; 288 = 9 x 32 is not a multiple of 256. For Q4_0 (qk_k 32) it gives Q6_K,
    # which the fallback switch turns into Q8_0.
    ("q4_k_m", "q8_0"), ("q6_k", "q8_0"), ("q3_k_m", "q8_0"), ("q4_0", "q8_0"), ("q8_0", "q8_0"),
])
def test_output_with_rows_off_the_256_grid(pid: str, row288_out: str):
    a = llama(1, hidden=288, heads=9, kv=9, head_dim=32)
    assert types_of(a, pid)[("output.weight", None)] == row288_out


# --- running counters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,extra_type", [("attn_kv_b.weight", "q4_k"), ("attn_qkv.weight", "q5_k")])
def test_attention_wv_counter(extra: str, extra_type: str):
    # llama_model_quantize_impl counts n_attention_wv over attn_v, attn_qkv and attn_kv_b; only attn_v
    # advances i_attention_wv. An 8-layer llama with one extra such tensor per layer (before attn_v):
    # n = 16, attn_v of layer i has i_attention_wv = i, use_more_bits(i, 16) for i < 8 -> {0, 1, 4, 7}.
    base = llama(8)
    tensors: list[Tensor] = []
    for t in base.tensors:
        if t.name == "attn_v.weight":
            tensors.append(Tensor(extra, "attention", (256, 256), t.layer))
        tensors.append(t)
    types = types_of(replace(base, tensors=tuple(tensors)), "q4_k_m")
    assert layer_types(types, "attn_v.weight") == split(8, MORE_BITS_16 & set(range(8)), "q6_k", "q4_k")
    assert set(layer_types(types, extra).values()) == {extra_type}  # attn_qkv: Q4_K_M -> Q5_K
    # ffn_down keeps n_ffn_down = n_layer = 8, whatever n_attention_wv is.
    assert layer_types(types, "ffn_down.weight") == split(8, MORE_BITS_8, "q6_k", "q4_k")


def test_dense_ffn_down_counter():
    # Dense models: i_layer = qs.i_ffn_down, a counter over ffn_down tensors, n_layer = 8. Without the
    # ffn_down of layers 0 and 1, layers 2..7 carry counters 0..5, and use_more_bits(c, 8) holds for c in {0, 3}.
    base = llama(8)
    tensors = tuple(t for t in base.tensors if not (t.name == "ffn_down.weight" and t.layer in (0, 1)))
    types = types_of(replace(base, tensors=tensors), "q4_k_m")
    assert layer_types(types, "ffn_down.weight") == {2: "q6_k", 3: "q4_k", 4: "q4_k", 5: "q6_k", 6: "q4_k",
                                                     7: "q4_k"}


def test_vectors_do_not_advance_the_ffn_down_counter():
    # Only quantised tensors (>= 2 dims, name ending in "weight") go through llama_tensor_get_type, so GPT-2's
    # 1-D ffn_down.bias never advances i_ffn_down: ffn_down.weight of layer i has counter i. 8 layers.
    gpt2 = parse_architecture({"model_type": "gpt2", "vocab_size": 512, "n_embd": 256, "n_head": 4, "n_layer": 8,
                               "n_positions": 128})
    types = types_of(gpt2, "q4_k_m")
    assert layer_types(types, "ffn_down.weight") == split(8, MORE_BITS_8, "q6_k", "q4_k")
    assert set(layer_types(types, "ffn_down.bias").values()) == {"f32"}
    assert set(layer_types(types, "attn_qkv.weight").values()) == {"q5_k"}


def test_moe_ffn_down_layer_from_name():
    # n_expert > 1: layer_info parses "blk.%d." from the name, so ffn_down_exps and ffn_down_shexp of layer L
    # both use L (a counter would give the shared expert the next index). 8 layers: {0, 3, 6, 7}.
    types = types_of(deepseek(8), "q4_k_m")
    assert layer_types(types, "ffn_down.weight") == {0: "q6_k"}
    for name in ("ffn_down_exps.weight", "ffn_down_shexp.weight"):
        assert layer_types(types, name) == {i: ("q6_k" if i in MORE_BITS_8 else "q4_k") for i in range(1, 8)}
    assert layer_types(types, "ffn_down_exps.weight") == layer_types(types, "ffn_down_shexp.weight")
    mix = types_of(mixtral(8, 4), "q4_k_m")
    assert layer_types(mix, "ffn_down_exps.weight") == split(8, MORE_BITS_8, "q6_k", "q4_k")


def test_token_embd_pattern_skips_a_tied_embedding():
    # llama-quant.cpp tests the output branch (which takes a tied token_embd) before the token_embd branch, so
    # a token_embd rule never applies to a tied embedding, whatever the rule order in the YAML.
    only_embd = probe("q4_k", Rule(type="q2_k", names=("token_embd",)))
    assert types_of(llama(1), only_embd)[("token_embd.weight", None)] == "q2_k"
    assert types_of(llama(1, tied=True), only_embd)[("token_embd.weight", None)] == "q4_k"


def test_first_four_condition():
    # Not used by a shipped preset; llama-quant.cpp's Q4_K_S rule `qs.i_attention_wv < 4 -> Q5_K`.
    q4_k_s_v = probe("q4_k", Rule(type="q5_k", names=("attn_v.weight",), when=("first_four",)))
    assert layer_types(types_of(llama(8), q4_k_s_v), "attn_v.weight") == split(8, {0, 1, 2, 3}, "q5_k", "q4_k")


# --- disagreements between llama.cpp / checkpoints and the code (strict xfail: they flip when fixed) ----

@pytest.mark.xfail(strict=True, reason=(
    "llama-quant.cpp quantises only names ending in 'weight' (`name.rfind(\"weight\") == name.size() - 6`) and "
    "convert_hf_to_gguf writes every non-'.weight' tensor in F32; the code quantises gpt-oss's 2-D expert "
    "biases (ffn_*_exps.bias, shape (experts, rows)) with the preset's default type."))
def test_gguf_keeps_2d_expert_biases_f32():
    types = types_of(gpt_oss(2), "q4_k_m")
    assert types[("ffn_gate_up_exps.bias", 0)] == "f32"
    assert types[("ffn_down_exps.bias", 0)] == "f32"


@pytest.mark.xfail(strict=True, reason=(
    "transformers' Mxfp4GptOssExperts (src/transformers/integrations/mxfp4.py @ 93a1c400) stores only "
    "*_blocks/*_scales in MXFP4; gate_up_proj_bias and down_proj_bias are plain float parameters. The code "
    "puts the 2-D expert biases in mxfp4."))
def test_mxfp4_keeps_expert_biases_unquantised():
    types = types_of(gpt_oss(2), "mxfp4")
    assert types[("ffn_gate_up_exps.bias", 0)] == "bf16"


@pytest.mark.xfail(strict=True, reason=(
    "llama-quant.cpp output branch: `arch == LLM_ARCH_FALCON || nx % qk_k != 0` -> Q8_0 is tested before the "
    "IQ2_XXS -> Q5_K case, so an output with rows off the 256 grid is Q8_0; the code gives Q5_K, which falls "
    "back to Q5_1."))
def test_iq2_xxs_output_off_the_256_grid_is_q8_0():
    a = llama(1, hidden=288, heads=9, kv=9, head_dim=32)
    assert types_of(a, "iq2_xxs")[("output.weight", None)] == "q8_0"


@pytest.mark.xfail(strict=True, reason=(
    "llama-quant.cpp IQ2 branch: `if (qs.i_ffn_down < qs.n_ffn_down/8) ... ++qs.i_ffn_down` uses the raw "
    "counter (no layer_info), so a MoE layer with ffn_down_exps and ffn_down_shexp advances it twice; the "
    "code uses the layer from the name for every MoE ffn_down."))
def test_iq2_xxs_moe_ffn_down_uses_the_raw_counter():
    # 16 layers, n/8 = 2. Tensors sorted by layer then name: blk.0.ffn_down (0), blk.1.ffn_down_exps (1),
    # blk.1.ffn_down_shexp (2, not < 2).
    types = types_of(deepseek(16), "iq2_xxs")
    assert types[("ffn_down.weight", 0)] == "q2_k"
    assert types[("ffn_down_exps.weight", 1)] == "q2_k"
    assert types[("ffn_down_shexp.weight", 1)] == "iq2_xxs"


@pytest.mark.xfail(strict=True, reason=(
    "llama.cpp converts MixtralForCausalLM to LLM_ARCH_LLAMA; with n_expert != 8, 80 layers and GQA that is "
    "LLM_TYPE_70B. The code's 70B test accepts only model_type llama/mistral (and qwen2)."))
def test_80_layer_mixtral_with_4_experts_is_70b():
    a = mixtral(80, 4, kv=2)
    assert types_of(a, "q4_k_m")[("attn_v.weight", 10)] == "q5_k"  # 10: not use_more_bits for n = 80


# --- 6. nominal bits per parameter (rules of thumb) --------------------------------------------------

@pytest.mark.parametrize("pid,bits", [
    ("fp32", 32), ("fp16", 16), ("bf16", 16),
    ("int4", 4), ("nf4", 4),                    # 4-bit payload, as the YAML's nominal_bits
    ("mxfp4", Fraction(17, 4)),                 # OCP MX: 32 x 4-bit E2M1 + one 8-bit E8M0 scale = 4.25
    # GGUF: headline type's bits per weight, ggml-common.h ("Effectively ... bits per weight" / "bpw")
    ("q8_0", Fraction(17, 2)),                  # 34 B x 8 / 32 = 8.5
    ("q6_k", Fraction(105, 16)),                # "Effectively 6.5625 bits per weight"
    ("q5_k_m", Fraction(11, 2)),                # "Effectively 5.5 bits per weight"
    ("q4_k_m", Fraction(9, 2)),                 # "Effectively 4.5 bits per weight"
    ("q4_0", Fraction(9, 2)),                   # 18 B x 8 / 32
    ("q3_k_m", Fraction(55, 16)),               # "Effectively 3.4375 bits per weight"
    ("q2_k", Fraction(21, 8)),                  # "Effectively 2.625 bits per weight"
    ("iq4_xs", Fraction(17, 4)),                # 136 B x 8 / 256 = 4.25
    ("iq2_xxs", Fraction(33, 16)),              # "it ends up using 2.0625 bpw"
])
def test_nominal_bytes_per_param(pid: str, bits: Fraction | int):
    assert CATALOG.precision(pid).bytes_per_param_nominal == Fraction(bits) / 8


# bytes_per_param_nominal is bits/8 of the headline type: FP8 E4M3 and LLM.int8 weights are 1 byte (their
# default storage type, bf16 / f16, is only for the tensors they leave unquantised).
@pytest.mark.parametrize("pid", ["fp8", "int8"])
def test_nominal_bytes_of_8_bit_precisions(pid: str):
    assert CATALOG.precision(pid).bytes_per_param_nominal == 1


# --- weight totals by group, type and layer --------------------------------------------------------

def test_weight_breakdown_by_hand():
    # 2-layer llama, q8_0: matrices 34 B per 32 weights, norms F32. Per layer: q, k, v, o 256 x 256 and
    # gate, up, down 512 x 256 = 655,360 weights -> 696,320 B; two 256-norms -> 2,048 B.
    # Outside the layers: token_embd and output 512 x 256 = 131,072 weights -> 139,264 B each; output_norm 1,024 B.
    wb = weight_bytes(llama(2), CATALOG.precision("q8_0"), CATALOG)
    assert list(wb.per_layer) == [696_320 + 2_048] * 2
    assert wb.outside_layers == 2 * 139_264 + 1_024
    assert wb.total == 2 * 698_368 + 279_552
    assert wb.by_type == {"q8_0": 2 * 696_320 + 2 * 139_264, "f32": 2 * 2_048 + 1_024}
    assert wb.params_by_type == {"q8_0": 2 * 655_360 + 2 * 131_072, "f32": 2 * 512 + 256}
    assert wb.by_group == {"embeddings": 139_264, "lm_head": 139_264, "norms": 5_120,
                           "attention": 2 * 4 * 65_536 * 34 // 32, "mlp": 2 * 3 * 131_072 * 34 // 32}
