"""Estimator tests. Expected values are derived by hand from real configs (tests/fixtures/
reference_configs.yaml) or taken from published figures, cited next to each test."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from generator.estimate.architecture import ConfigError, count_parameters, parse_architecture
from generator.estimate.fit import (
    FITS, NO_FIT, TIGHT, decode_tokens_per_second, devices_needed, gguf_offload, largest_batch, longest_context,
    verdict,
)
from generator.estimate.memory import kv_cache_bytes, layer_saved_activations, training_activations
from generator.estimate.precision import parse_precision_catalog, weight_bytes
from generator.estimate.scenario import GIB, Scenario, ScenarioError, estimate
from generator.estimate.training import full_training_states, lora_parameters

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = yaml.safe_load((ROOT / "tests/fixtures/reference_configs.yaml").read_text())["models"]
PRECISIONS = parse_precision_catalog(yaml.safe_load((ROOT / "data/precisions.yaml").read_text()))
MIB = 2**20


def arch(name: str):
    return parse_architecture(CONFIGS[name]["config"])


# --- exact parameter counts -------------------------------------------------------------------

def test_llama31_8b_count_by_hand():
    # V*h (embed) + V*h (untied lm_head) + L*(q h*h + k,v 2*h*1024 + o h*h + 3*h*I + 2h norms) + h
    V, h, L, I, kv = 128256, 4096, 32, 14336, 8 * 128
    expected = 2 * V * h + L * (2 * h * h + 2 * h * kv + 3 * h * I + 2 * h) + h
    assert expected == 8_030_261_248  # HF safetensors total of meta-llama/Llama-3.1-8B
    assert count_parameters(arch("Llama-3.1-8B")).total == expected


@pytest.mark.parametrize("name,total", [
    ("Llama-2-7B", 6_738_415_616),       # widely reported exact count of Llama-2-7b-hf
    ("Llama-3.1-70B", 70_553_706_496),
    ("Mistral-7B-v0.1", 7_241_732_096),
    ("Mixtral-8x7B-v0.1", 46_702_792_704),
    ("Qwen2.5-7B", 7_615_616_512),         # q/k/v biases: 28 * (3584 + 2*512) = 129,024 of them
    ("Gemma-2-9B", 9_241_705_984),         # head_dim 256 (16*256 != 3584), tied, 4 norms per layer
    ("Phi-3-mini-4k-instruct", 3_821_079_552),
    ("GPT-2", 124_439_808),                # buffers (attn.bias masks) are not parameters
    ("Falcon-7B", 6_921_720_704),          # multi-query: qkv out = h + 2*64
    ("Qwen3-30B-A3B", 30_532_122_624),
    ("gpt-oss-20b", 20_914_757_184),       # model card: 20.91B total
    ("Llama-3.2-1B", 1_235_814_400),       # tied embeddings counted once
    ("DeepSeek-V3", 671_026_419_200),      # DeepSeek-V3 README: 671B main model + 14B MTP module = 685B
])
def test_published_counts(name, total):
    assert count_parameters(arch(name)).total == total


def test_moe_active_parameters():
    mixtral = count_parameters(arch("Mixtral-8x7B-v0.1"))
    assert mixtral.active == 12_879_925_248  # Mistral: "12.9B active"
    oss = arch("gpt-oss-20b")
    c = count_parameters(oss)
    # OpenAI's model card gives 3.61B active, which excludes the token embedding table.
    assert round((c.active - c.by_group["embeddings"]) / 1e9, 2) == 3.61
    ds = count_parameters(arch("DeepSeek-V3"))
    assert round(ds.active / 1e9) == 38 and ds.active > 37e9  # "37B activated"


def test_deepseek_mtp_reported_separately():
    a = arch("DeepSeek-V3")
    assert "multi_token_prediction" in a.extra_params
    assert 13e9 < a.extra_params["multi_token_prediction"] < 15e9  # the README's "14B MTP module"
    assert any("multi-token-prediction" in n for n in a.notes)


def test_group_counts_by_hand():
    c = count_parameters(arch("Mixtral-8x7B-v0.1"))
    assert c.by_group["experts"] == 32 * 8 * 3 * 4096 * 14336  # 32 layers x 8 experts x (w1, w2, w3)
    assert c.by_group["router"] == 32 * 8 * 4096
    assert c.by_group["lm_head"] == 32000 * 4096


@pytest.mark.parametrize("config,field", [
    ({"model_type": "bert"}, "model_type"),
    ({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 64}, "num_key_value_heads"),
    ({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 5}, "num_key_value_heads"),
    ({"model_type": "llama", "vocab_size": 32000, "intermediate_size": 11008, "num_hidden_layers": 32,
      "num_attention_heads": 32}, "hidden_size"),
    ({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4000, "intermediate_size": 11008,
      "num_hidden_layers": 32, "num_attention_heads": 48}, "num_attention_heads"),
    ({"model_type": "llama", "vocab_size": "many", "hidden_size": 4096, "intermediate_size": 11008,
      "num_hidden_layers": 32, "num_attention_heads": 32}, "vocab_size"),
])
def test_bad_configs_name_the_field(config, field):
    with pytest.raises(ConfigError) as e:
        parse_architecture(config)
    assert e.value.field == field


# --- weights by precision ------------------------------------------------------------------------

# llama.cpp tools/quantize/README.md, table for meta-llama/Llama-3.1-8B (bits/weight), at
# https://github.com/ggml-org/llama.cpp/blob/311c2c9f0ebd6e08f5b20e8827c654cebb7a41d6/tools/quantize/README.md
# bits/weight there = file tensor bytes * 8 / 8,030,261,312 elements (the parameters plus the 64-element
# F32 rope_freqs tensor that llama.cpp adds for Llama 3.1, i.e. 256 more bytes).
LLAMA_CPP_BPW = {"iq2_xxs": "2.3824", "iq4_xs": "4.4597", "q2_k": "3.1593", "q4_k_m": "4.8944",
                 "q5_k_m": "5.7036", "q6_k": "6.5633", "q8_0": "8.5008"}


@pytest.mark.parametrize("pid,bpw", sorted(LLAMA_CPP_BPW.items()))
def test_gguf_presets_match_llama_cpp(pid, bpw):
    wb = weight_bytes(arch("Llama-3.1-8B"), PRECISIONS.precision(pid), PRECISIONS)
    assert f"{(wb.total + 256) * 8 / 8_030_261_312:.4f}" == bpw


def test_q4_k_m_tensor_mix_matches_llama_cpp_log():
    # llama.cpp load log of a Llama-3-8B Q4_K_M: 193 q4_K tensors, 33 q6_K tensors, CPU buffer
    # (token_embd) 281.81 MiB, CUDA buffer (everything else) 4403.49 MiB.
    from generator.estimate.precision import assign_types

    a = arch("Llama-3.1-8B")
    types = assign_types(a, PRECISIONS.precision("q4_k_m"), PRECISIONS)
    kinds = {}
    for t, st in types:
        kinds[st.id] = kinds.get(st.id, 0) + 1
    assert kinds == {"q4_k": 193, "q6_k": 33, "f32": 65}
    wb = weight_bytes(a, PRECISIONS.precision("q4_k_m"), PRECISIONS)
    assert f"{wb.by_group['embeddings'] / MIB:.2f}" == "281.81"
    assert f"{(wb.total - wb.by_group['embeddings']) / MIB:.2f}" == "4403.49"


def test_q4_0_and_q8_0_by_block_layout():
    a = arch("Llama-2-7B")
    n = count_parameters(a)
    vectors = sum(t.numel for t in a.tensors if not t.is_matrix)
    out = 32000 * 4096
    # q8_0: 34 bytes per 32 weights everywhere; norms F32.
    q8 = (n.total - vectors) * 34 // 32 + vectors * 4
    assert weight_bytes(a, PRECISIONS.precision("q8_0"), PRECISIONS).total == q8
    # q4_0: 18 bytes per 32; the output matrix in q6_K (210 per 256).
    q4 = (n.total - vectors - out) * 18 // 32 + out * 210 // 256 + vectors * 4
    assert weight_bytes(a, PRECISIONS.precision("q4_0"), PRECISIONS).total == q4


def test_quantized_formats_keep_embeddings_16bit_and_count_scales():
    a = arch("Llama-3.1-8B")
    n = count_parameters(a).total
    for pid in ("nf4", "int4"):
        wb = weight_bytes(a, PRECISIONS.precision(pid), PRECISIONS)
        assert wb.by_group["embeddings"] == 128256 * 4096 * 2
        assert wb.by_group["lm_head"] == 128256 * 4096 * 2
        assert wb.total > n * Fraction(1, 2) * Fraction(12, 10)  # far above the naive bits/8
    nf4 = weight_bytes(a, PRECISIONS.precision("nf4"), PRECISIONS)
    linear = sum(t.numel for t in a.tensors if t.is_matrix and t.group in ("attention", "mlp"))
    # NF4 with double quantization: 4 bits + 8-bit absmax per 64 + fp32 per 256 absmax ~ 4.127 bits.
    bits = (nf4.by_group["attention"] + nf4.by_group["mlp"]) * 8 / linear
    assert 4.12 < bits < 4.14


def test_falcon_odd_width_falls_back():
    # 4544 is not a multiple of 256, so K-quants fall back to 32-blocks (llama.cpp tensor_type_fallback).
    from generator.estimate.precision import assign_types

    types = assign_types(arch("Falcon-7B"), PRECISIONS.precision("q4_k_m"), PRECISIONS)
    narrow = {st.id for t, st in types if t.is_matrix and t.row_length == 4544}
    wide = {st.id for t, st in types if t.name == "ffn_down.weight"}  # rows of 4*4544 = 71*256
    # q4_K -> q5_0, attn_qkv q5_K -> q5_1, the (tied) output q8_0 for Falcon
    assert narrow == {"q5_0", "q5_1", "q8_0"}
    assert wide <= {"q4_k", "q5_k", "q6_k"}


# --- KV cache -----------------------------------------------------------------------------------

def test_kv_cache_matches_llama_cpp_logs():
    a = arch("Llama-3.1-8B")
    f16 = PRECISIONS.kv_bytes_per_element("f16")
    assert kv_cache_bytes(a, 512, 1, f16) == 64 * MIB       # "KV self size = 64.00 MiB" at n_ctx 512
    assert kv_cache_bytes(a, 8192, 1, f16) == 1024 * MIB    # "KV self size = 1024.00 MiB" at 8192


def test_kv_q8_0_matches_llama_cpp_issue_11200():
    # Qwen2.5-32B-class model (64 layers, 8 KV heads x 128), 32768 cells, q8_0: "KV self size = 4352.00 MiB".
    cfg = dict(CONFIGS["Qwen2.5-7B"]["config"], num_hidden_layers=64, num_key_value_heads=8, hidden_size=5120,
               num_attention_heads=40, intermediate_size=27648)
    a = parse_architecture(cfg)
    assert kv_cache_bytes(a, 32768, 1, PRECISIONS.kv_bytes_per_element("q8_0")) == 4352 * MIB


def test_kv_matches_vllm_tokens():
    # vLLM log, Llama-3.1-8B: "Available KV cache memory: 19.28 GiB" -> "GPU KV cache size: 157,936 tokens"
    a = arch("Llama-3.1-8B")
    per_token = kv_cache_bytes(a, 1, 1, PRECISIONS.kv_bytes_per_element("bf16"))
    assert per_token == 131072
    assert int(19.28 * GIB // (16 * per_token)) * 16 == 157_936


def test_kv_sliding_window_and_mla():
    g = arch("Gemma-2-9B")  # 42 layers, every other one sliding with a 4096 window, 8 KV heads x 256
    per_token = 2 * 8 * 256 * 2
    assert kv_cache_bytes(g, 8192, 1, Fraction(2)) == 21 * per_token * 8192 + 21 * per_token * 4096
    ds = arch("DeepSeek-V3")  # MLA: 61 layers x (512 + 64) latent elements per token
    assert kv_cache_bytes(ds, 1000, 1, Fraction(2)) == 61 * 576 * 1000 * 2
    # Hidden-size rule of thumb would give 2*61*7168*2 per token: 24.9x more.
    assert 2 * 61 * 7168 * 2 / (61 * 576 * 2) > 24


def test_kv_tensor_parallel_never_below_one_head():
    a = arch("Llama-3.1-70B")  # 8 KV heads
    one = kv_cache_bytes(a, 4096, 1, Fraction(2))
    assert kv_cache_bytes(a, 4096, 1, Fraction(2), tp=8) == one // 8
    assert kv_cache_bytes(a, 4096, 1, Fraction(2), tp=16) == one // 8  # still one head per GPU


# --- activations ---------------------------------------------------------------------------------

def test_korthikanti_formula_reproduced():
    # GPT-style layer (MLP 4h, multi-head, dropout, 16-bit): sbh(34 + 5as/h) bytes (Korthikanti et al.
    # 2022, eq. 1). GPT-2 medium shape: h=1024, a=16.
    cfg = dict(CONFIGS["GPT-2"]["config"], n_embd=1024, n_head=16, n_layer=24)
    a = parse_architecture(cfg)
    s, b, h, heads = 1024, 2, 1024, 16
    got = layer_saved_activations(a, s, b, flash_attention=False, dropout=True)
    assert got == s * b * h * 34 + 5 * heads * s * s * b
    sel = training_activations(a, s, b, checkpointing="selective", dropout=True)
    assert sel.per_layer[0] == s * b * h * 34 + b * heads * s * 4  # no s^2 term; log-sum-exp remains
    full = training_activations(a, s, b, checkpointing="full", dropout=True)
    assert full.per_layer[0] == 2 * s * b * h  # each layer keeps its 16-bit input
    assert full.workspace == got - 5 * heads * s * s * b + b * heads * s * 4


def test_activations_scale_with_layers_and_not_in_inference():
    a = arch("Llama-3.1-8B")
    train = estimate(a, Scenario(workload="train", context=2048), PRECISIONS)
    inf = estimate(a, Scenario(context=2048), PRECISIONS)
    assert train.activation_bytes > 20 * inf.activation_bytes


def test_flash_attention_removes_s_squared():
    a = arch("Llama-3.1-8B")
    fa = estimate(a, Scenario(context=32768), PRECISIONS)
    eager = estimate(a, Scenario(context=32768, flash_attention=False), PRECISIONS)
    # Eager: 32 heads x 32768^2 scores in bf16 plus fp32 softmax = 192 GiB.
    assert eager.activation_bytes - fa.activation_bytes >= 32 * 32768**2 * 6 - 2 * GIB


# --- training -----------------------------------------------------------------------------------

def test_mixed_precision_adam_is_16_bytes_per_param():
    st = full_training_states(1_000_000, "adamw", mixed_precision=True, zero=0, gpus=1)
    assert st.weights + st.gradients + st.optimizer_total == 16_000_000


@pytest.mark.parametrize("stage,gb", [(0, 120.0), (1, 31.40625), (2, 16.640625), (3, 1.875)])
def test_zero_paper_figure_1(stage, gb):
    # Rajbhandari et al. 2019, figure 1: Psi = 7.5B, K = 12, N_d = 64 -> 120 GB, 31.4 GB, 16.6 GB, 1.9 GB.
    st = full_training_states(7_500_000_000, "adamw", mixed_precision=True, zero=stage, gpus=64)
    assert (st.weights + st.gradients + st.optimizer_total) / 1e9 == pytest.approx(gb, abs=1e-6)


def test_training_peak_is_the_largest_phase():
    a = arch("Llama-3.1-8B")
    e = estimate(a, Scenario(workload="train", context=2048), PRECISIONS)
    # At 2k tokens the step (weights 2 + grads 2 + master 4 + moments 8 + foreach temporary 4 bytes per
    # parameter) outweighs forward and backward, which hold activations but no temporary.
    assert e.peak_phase == "optimizer_step"
    assert e.total_bytes == 20 * e.params + GIB
    assert e.gradient_bytes == 2 * e.params and e.optimizer_bytes == 12 * e.params
    big = estimate(a, Scenario(workload="train", context=16384, batch=4), PRECISIONS)
    assert big.peak_phase in ("forward", "backward")


def test_qlora_65b_under_48_gb():
    # Dettmers et al. 2023: QLoRA "finetune a 65B parameter model on a single 48GB GPU".
    a = arch("LLaMA-65B")
    e = estimate(a, Scenario(workload="qlora", context=2048, checkpointing="full"), PRECISIONS)
    assert e.total_bytes < 48e9
    assert e.trainable_params == 80 * 64 * (4 * (8192 + 8192) + 3 * (8192 + 22016))


def test_lora_parameters_by_hand():
    a = arch("Llama-3.1-8B")
    r, h, kv, I = 16, 4096, 1024, 14336
    per_layer = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + I) + (I + h))
    assert lora_parameters(a, r) == 32 * per_layer


# --- fit ----------------------------------------------------------------------------------------

def test_verdicts():
    assert verdict(80, 100) == FITS
    assert verdict(95, 100) == TIGHT
    assert verdict(101, 100) == NO_FIT


def test_devices_context_batch_offload_speed():
    a = arch("Llama-3.1-70B")
    h100 = 81559 * MIB  # nvidia-smi total of an H100 80GB
    s = Scenario(context=8192)
    assert devices_needed(a, s, PRECISIONS, h100) == 2  # 141 GB of bf16 weights
    q4 = Scenario(precision="q4_k_m", context=8192)
    assert devices_needed(a, q4, PRECISIONS, h100) == 1
    ctx = longest_context(a, q4, PRECISIONS, h100)
    assert 8192 < ctx <= 131072
    assert estimate(a, Scenario(precision="q4_k_m", context=ctx), PRECISIONS).total_bytes <= h100
    if ctx < 131072:
        assert estimate(a, Scenario(precision="q4_k_m", context=ctx + 1), PRECISIONS).total_bytes > h100
    assert largest_batch(a, q4, PRECISIONS, h100) >= 1
    off = gguf_offload(a, q4, PRECISIONS, 24 * GIB)
    assert 0 < off.layers_on_gpu < 80
    est = estimate(a, q4, PRECISIONS)
    tps = decode_tokens_per_second(a, est, PRECISIONS, 3.35e12)
    assert 50 < tps < 100  # ~40 GB read per token at 3.35 TB/s


def test_scenario_errors():
    a = arch("Llama-3.1-8B")
    for bad in (Scenario(workload="train", precision="q4_k_m"), Scenario(zero=3, gpus=8),
                Scenario(context=0), Scenario(workload="qlora", precision="bf16"),
                Scenario(lora_rank=8), Scenario(workload="lora", recipe="amp"), Scenario(adapter_dtype="fp32"),
                Scenario(workload="train", precision="fp32", recipe="pure")):
        with pytest.raises(ScenarioError):
            estimate(a, bad, PRECISIONS)


def test_resolved_scenario_is_idempotent():
    for sc in (Scenario(), Scenario(workload="train"), Scenario(workload="qlora"), Scenario(workload="lora")):
        once = sc.resolved(PRECISIONS)
        assert once.resolved(PRECISIONS) == once


def test_chunked_prefill_bounds_the_transient():
    a = arch("Llama-3.1-8B")
    whole = estimate(a, Scenario(context=131072), PRECISIONS)
    chunked = estimate(a, Scenario(context=131072, prefill_chunk=8192), PRECISIONS)
    assert whole.kv_cache_bytes == chunked.kv_cache_bytes == 16 * GIB
    # MLP phase of one layer: 3 x tokens x 14336 x 2 bytes, now for 8192 tokens instead of 131072.
    assert chunked.activation_bytes < whole.activation_bytes / 10
    eager = estimate(a, Scenario(context=16384, prefill_chunk=2048, flash_attention=False), PRECISIONS)
    assert eager.activation_bytes >= 32 * 2048 * 16384 * 6  # chunk x context scores per head
    with pytest.raises(ScenarioError):
        estimate(a, Scenario(workload="train", prefill_chunk=512), PRECISIONS)
