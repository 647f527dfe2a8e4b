"""Rule tests for generator/estimate/architecture.py: layer patterns, biases, norms, defaults, MoE layout,
head_dim and config errors, and the parameter count of every supported model_type.

Every expected value is derived by hand in the test from the config values and the shapes of the
reference implementation (cited: Hugging Face transformers at a release tag, vLLM or llama.cpp at a
commit), or is a published count (cited). Nothing is computed by calling the code under test.

The synthetic configs are tiny (fast) and picked so that a swapped dimension or an off-by-one shows:
hidden 48, intermediate 80, vocabulary 101, 4 query heads of head_dim 16 (so heads * head_dim = 64, not
the hidden size), 2 key/value heads, odd layer counts.

Shapes follow the module's documented convention: (out, in) for a matrix, (experts, out, in) for
stacked experts (ggml's ne[0], the row length, is the input dimension). Tensor names are llama.cpp's
(gguf-py/gguf/constants.py, TENSOR_NAMES, https://github.com/ggml-org/llama.cpp/blob/
0024aa7417efd50a7c2a79e049dfbbbceb0beaaf/gguf-py/gguf/constants.py), without the "blk.N." prefix.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.estimate.architecture import (
    ATTENTION, EMBEDDINGS, EXPERTS, KNOWN_CONFIG_KEYS, LM_HEAD, MLP, NORMS, ROUTER, Architecture, ConfigError,
    count_parameters, parse_architecture,
)
from generator.estimate.memory import kv_cache_bytes

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = yaml.safe_load((ROOT / "tests/fixtures/reference_configs.yaml").read_text())["models"]

# Hugging Face transformers sources, read at release tags (the files of the PyPI wheels of those releases).
TF = "https://github.com/huggingface/transformers/blob/v4.56.2/src/transformers/models/"
TF450 = "https://github.com/huggingface/transformers/blob/v4.50.0/src/transformers/models/"
# vLLM's DeepSeek-V2/V3 model (the DeepSeek reference rules for MoE layers, shared experts, noaux_tc bias).
VLLM_DS = ("https://github.com/vllm-project/vllm/blob/002d6073aa034d4f5545d45021b0e56d1f3c3593/"
           "vllm/model_executor/models/deepseek_v2.py")
VLLM_MTP = ("https://github.com/vllm-project/vllm/blob/03356f8cb59ba27f3d0ce8866d7516b5e32cff65/"
            "vllm/model_executor/models/deepseek_mtp.py")

# Tiny dimensions shared by the synthetic configs.
V, H, I = 101, 48, 80  # vocabulary, hidden, (dense) intermediate
NH, KVH, HD = 4, 2, 16  # query heads, key/value heads, head_dim
Q, KV = NH * HD, KVH * HD  # 64 and 32: q_proj and k_proj/v_proj output widths
BF16 = Fraction(2)

Shapes = dict[str, tuple[str, tuple[int, ...]]]
USED_CONFIGS: list[dict[str, Any]] = []  # every synthetic config, for the known-keys test


def conf(model_type: str, drop: tuple[str, ...] = (), **over: Any) -> dict[str, Any]:
    """A tiny llama-shaped config of `model_type` with 5 layers; `over` replaces keys, `drop` removes them."""
    c: dict[str, Any] = {
        "model_type": model_type, "vocab_size": V, "hidden_size": H, "intermediate_size": I,
        "num_hidden_layers": 5, "num_attention_heads": NH, "num_key_value_heads": KVH, "head_dim": HD,
    }
    c.update(over)
    for k in drop:
        c.pop(k, None)
    USED_CONFIGS.append(c)
    return c


def parse(c: dict[str, Any]) -> Architecture:
    USED_CONFIGS.append(c)
    return parse_architecture(c)


def layer(a: Architecture, i: int | None) -> Shapes:
    """name -> (group, shape) of layer i (None: the tensors outside the repeated blocks)."""
    out = {t.name: (t.group, t.shape) for t in a.tensors if t.layer == i}
    assert len(out) == sum(1 for t in a.tensors if t.layer == i), "duplicate tensor name in one layer"
    return out


def windows(a: Architecture) -> list[int | None]:
    return [at.window for at in a.attention]


def total(a: Architecture) -> int:
    return count_parameters(a).total


def field_of(c: Any) -> str:
    with pytest.raises(ConfigError) as e:
        parse_architecture(c)
    return e.value.field


# Per-layer tensors of the llama layout (LlamaDecoderLayer: input_layernorm, post_attention_layernorm;
# LlamaAttention q/k/v/o; LlamaMLP gate/up/down), TF llama/modeling_llama.py#L149-L151,L210-L220,L276-L277.
LLAMA_LAYER: Shapes = {
    "attn_norm.weight": (NORMS, (H,)),
    "ffn_norm.weight": (NORMS, (H,)),
    "attn_q.weight": (ATTENTION, (Q, H)),
    "attn_k.weight": (ATTENTION, (KV, H)),
    "attn_v.weight": (ATTENTION, (KV, H)),
    "attn_output.weight": (ATTENTION, (H, Q)),
    "ffn_gate.weight": (MLP, (I, H)),
    "ffn_up.weight": (MLP, (I, H)),
    "ffn_down.weight": (MLP, (H, I)),
}
UNTIED_OUTSIDE: Shapes = {
    "token_embd.weight": (EMBEDDINGS, (V, H)),
    "output_norm.weight": (NORMS, (H,)),
    "output.weight": (LM_HEAD, (V, H)),
}
TIED_OUTSIDE: Shapes = {k: v for k, v in UNTIED_OUTSIDE.items() if k != "output.weight"}
ATTN = H * Q + 2 * H * KV + Q * H  # q, k, v, o weights of one layer: 9216
GATED = 3 * H * I  # gate, up, down of one dense layer: 11520


# --------------------------------------------------------------------------------------------------
# 1. Layer patterns (sliding window per layer) and their KV cache


def kv_per_token_layer(kv_heads: int = KVH, head_dim: int = HD) -> int:
    return 2 * kv_heads * head_dim * 2  # K and V, bf16: 128 bytes for 2 heads of 16


def test_gemma3_every_sixth_layer_is_global():
    # Gemma 3: layer i is sliding iff (i + 1) % sliding_window_pattern != 0, default pattern 6:
    # TF450 gemma3/modeling_gemma3.py#L290 `self.is_sliding = bool((layer_idx + 1) % config.sliding_window_pattern)`,
    # TF gemma3/configuration_gemma3.py#L231-L236 (same rule, kwargs.get("sliding_window_pattern", 6)).
    # 13 layers: global at 5 and 11, the other 11 slide.
    a = parse(conf("gemma3_text", num_hidden_layers=13, sliding_window=16))
    assert windows(a) == [16, 16, 16, 16, 16, None, 16, 16, 16, 16, 16, None, 16]
    assert "11 of 13 layers use a 16-token sliding window." in a.notes
    # KV cache at 100 tokens: 2 global layers hold 100 tokens, 11 sliding layers hold 16.
    assert kv_cache_bytes(a, 100, 1, BF16) == (2 * 100 + 11 * 16) * kv_per_token_layer()
    b = parse(conf("gemma3_text", num_hidden_layers=13, sliding_window=16, sliding_window_pattern=4))
    assert [i for i, w in enumerate(windows(b)) if w is None] == [3, 7, 11]
    assert kv_cache_bytes(b, 100, 1, BF16) == (3 * 100 + 10 * 16) * kv_per_token_layer()


def test_gemma3_1b_published_count_and_kv_cache():
    # google/gemma-3-1b-it config.json, as copied in MLC LLM's preset `gemma3_1b_it`:
    # https://github.com/mlc-ai/mlc-llm/blob/01ced331a9e155c5ba4e7625b027a51bee611450/python/mlc_llm/model/model_preset.py
    c = {"model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152, "intermediate_size": 6912,
         "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
         "max_position_embeddings": 32768, "sliding_window": 512, "sliding_window_pattern": 6,
         "attention_bias": False}
    a = parse(c)
    # KerasHub preset metadata, gemma3_1b / gemma3_instruct_1b: "params": 999885952
    # https://github.com/keras-team/keras-hub/blob/46f3b4a000be58c092fe2f1acf87d2fb620aefd0/keras_hub/src/models/gemma3/gemma3_presets.py
    # By hand: 262144*1152 tied embedding + 26 x (q 1152*1024 + k,v 2*1152*256 + o 1024*1152
    #          + 3*1152*6912 + 4 norms of 1152 + q/k norms of 256) + final norm 1152.
    per_layer = 2 * 1152 * 1024 + 2 * 1152 * 256 + 3 * 1152 * 6912 + 4 * 1152 + 2 * 256
    assert 262144 * 1152 + 26 * per_layer + 1152 == 999_885_952
    assert total(a) == 999_885_952
    # Global layers 5, 11, 17, 23 (4 of 26); one KV head of 256: 2*256*2 = 1024 bytes per token and layer.
    assert kv_cache_bytes(a, 8192, 1, BF16) == (4 * 8192 + 22 * 512) * 1024


def test_gemma2_even_layers_slide():
    # TF450 gemma2/modeling_gemma2.py#L270 `self.is_sliding = not bool(layer_idx % 2)`;
    # TF gemma2/configuration_gemma2.py#L175-L178 ("sliding_attention" if (i + 1) % 2).
    a = parse(conf("gemma2", sliding_window=16))
    assert windows(a) == [16, None, 16, None, 16]
    assert kv_cache_bytes(a, 100, 1, BF16) == (3 * 16 + 2 * 100) * kv_per_token_layer()
    # Without a window (sliding_window null) every layer attends fully.
    assert windows(parse(conf("gemma2", sliding_window=None))) == [None] * 5


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_qwen_max_window_layers(model_type):
    # TF qwen2/configuration_qwen2.py#L181 `self.sliding_window = sliding_window if self.use_sliding_window
    # else None` and #L204-L208 "sliding_attention" if sliding_window is not None and i >= max_window_layers;
    # the same in qwen3/configuration_qwen3.py#L187,L212-L216.
    a = parse(conf(model_type, sliding_window=16, use_sliding_window=True, max_window_layers=2))
    assert windows(a) == [None, None, 16, 16, 16]
    # 2 full layers of 100 tokens, 3 sliding ones of 16.
    assert kv_cache_bytes(a, 100, 1, BF16) == (2 * 100 + 3 * 16) * kv_per_token_layer()
    assert windows(parse(conf(model_type, sliding_window=16, use_sliding_window=True, max_window_layers=0))) \
        == [16] * 5
    assert windows(parse(conf(model_type, sliding_window=16, use_sliding_window=True, max_window_layers=5))) \
        == [None] * 5
    assert windows(parse(conf(model_type, sliding_window=16, use_sliding_window=False, max_window_layers=2))) \
        == [None] * 5
    # use_sliding_window defaults to False (TF qwen2/configuration_qwen2.py#L167).
    assert windows(parse(conf(model_type, sliding_window=16, max_window_layers=2))) == [None] * 5


def test_qwen3_moe_use_sliding_window_slides_every_layer():
    # transformers qwen3_moe: Qwen3MoeConfig sets sliding_window = sliding_window if use_sliding_window else None,
    # and every Qwen3MoeAttention layer takes config.sliding_window (modeling_qwen3_moe.py, v5.23.0, L148):
    # there is no max_window_layers split as in Qwen2/Qwen3.
    a = parse(qwen3_moe_conf(sliding_window=16, use_sliding_window=True, max_window_layers=2))
    assert windows(a) == [16] * 7


def test_qwen3_moe_without_use_sliding_window_has_no_window():
    # TF qwen3_moe/configuration_qwen3_moe.py#L207: sliding_window = sliding_window if use_sliding_window else None.
    a = parse(qwen3_moe_conf(sliding_window=16, use_sliding_window=False))
    assert windows(a) == [None] * 7
    assert windows(parse(qwen3_moe_conf(sliding_window=16))) == [None] * 7


# transformers' Qwen2Config defaults max_window_layers to 28 (configuration_qwen2.py#L169).
def test_qwen2_max_window_layers_default_is_28():
    # 30 layers, use_sliding_window with no max_window_layers: transformers slides layers 28 and 29.
    a = parse(conf("qwen2", num_hidden_layers=30, sliding_window=16, use_sliding_window=True))
    assert windows(a) == [None] * 28 + [16, 16]


def test_gpt_oss_alternates_sliding_first():
    # TF gpt_oss/configuration_gpt_oss.py#L102-L105: "sliding_attention" if (i + 1) % 2 else "full_attention".
    a = parse(gpt_oss_conf(sliding_window=16))
    assert windows(a) == [16, None, 16, None, 16]
    assert kv_cache_bytes(a, 100, 1, BF16) == (3 * 16 + 2 * 100) * kv_per_token_layer()


@pytest.mark.parametrize("model_type", ["mistral", "mixtral", "phi3"])
def test_window_on_every_layer(model_type):
    # Mistral, Mixtral and Phi-3 pass config.sliding_window to every layer's attention:
    # TF mistral/modeling_mistral.py#L177, mixtral/modeling_mixtral.py#L289, phi3/modeling_phi3.py#L206.
    extra = {"num_local_experts": 4} if model_type == "mixtral" else {}
    a = parse(conf(model_type, sliding_window=16, **extra))
    assert windows(a) == [16] * 5
    assert kv_cache_bytes(a, 100, 1, BF16) == 5 * 16 * kv_per_token_layer()
    assert kv_cache_bytes(a, 10, 1, BF16) == 5 * 10 * kv_per_token_layer()  # shorter than the window
    assert windows(parse(conf(model_type, **extra))) == [None] * 5
    assert "5 of 5 layers use a 16-token sliding window." in a.notes


def test_no_window_no_note():
    a = parse(conf("llama"))
    assert windows(a) == [None] * 5
    assert not any("sliding window" in n for n in a.notes)
    # Full attention everywhere: 5 layers x 2 x 2 heads x 16 x 100 tokens x 2 bytes.
    assert kv_cache_bytes(a, 100, 1, BF16) == 5 * 100 * kv_per_token_layer()
    assert kv_cache_bytes(a, 100, 3, BF16) == 3 * 5 * 100 * kv_per_token_layer()


def test_explicit_layer_types_override_the_model_rule():
    # A config's layer_types list wins over the default pattern (TF gemma2/configuration_gemma2.py#L174-L178,
    # gpt_oss/configuration_gpt_oss.py#L101-L105: the pattern is only computed when layer_types is None).
    types = ["full_attention", "sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    for c in (conf("gemma2", sliding_window=16, layer_types=types), gpt_oss_conf(sliding_window=16, layer_types=types),
              conf("gemma3_text", sliding_window=16, layer_types=types)):
        a = parse(c)
        assert windows(a) == [None, 16, None, None, 16]
        assert kv_cache_bytes(a, 100, 1, BF16) == (3 * 100 + 2 * 16) * kv_per_token_layer()


@pytest.mark.parametrize("over,field", [
    ({"layer_types": ["full_attention"] * 4}, "layer_types"),  # 4 entries for 5 layers
    ({"layer_types": ["full_attention"] * 6}, "layer_types"),
    ({"layer_types": ["full_attention"] * 4 + ["mystery_attention"]}, "layer_types"),
    ({"layer_types": "sliding_attention"}, "layer_types"),
    ({"layer_types": [0, 1, 0, 1, 0]}, "layer_types"),
    ({"layer_types": ["sliding_attention"] * 5, "sliding_window": None}, "sliding_window"),
])
def test_layer_types_errors(over, field):
    c = conf("gemma2", sliding_window=16)
    c.update(over)
    assert field_of(c) == field


# --------------------------------------------------------------------------------------------------
# 2. Biases


def test_qwen2_qkv_biases_no_o_bias():
    # TF qwen2/modeling_qwen2.py#L134-L137: q/k/v bias=True, o_proj bias=False, whatever attention_bias says.
    for extra in ({}, {"attention_bias": False}, {"attention_bias": True}):
        a = parse(conf("qwen2", **extra))
        assert layer(a, 0) == LLAMA_LAYER | {
            "attn_q.bias": (ATTENTION, (Q,)), "attn_k.bias": (ATTENTION, (KV,)), "attn_v.bias": (ATTENTION, (KV,)),
        }
        assert layer(a, None) == UNTIED_OUTSIDE


ALL_ATTN_BIASES: Shapes = {
    "attn_q.bias": (ATTENTION, (Q,)), "attn_k.bias": (ATTENTION, (KV,)), "attn_v.bias": (ATTENTION, (KV,)),
    "attn_output.bias": (ATTENTION, (H,)),
}


@pytest.mark.parametrize("model_type", ["llama", "olmo2", "qwen3", "gemma2"])
def test_attention_bias_flag(model_type):
    # q/k/v/o bias=config.attention_bias, default False: TF llama/modeling_llama.py#L210-L220 and
    # configuration_llama.py#L181; olmo2/modeling_olmo2.py#L137-L148; qwen3/modeling_qwen3.py#L171-L181;
    # gemma2/modeling_gemma2.py#L180-L190.
    plain = layer(parse(conf(model_type)), 2)
    biased = layer(parse(conf(model_type, attention_bias=True)), 2)
    assert not any(n.endswith(".bias") for n in plain)
    assert biased == plain | ALL_ATTN_BIASES


def test_gpt_oss_attention_bias_defaults_true():
    # TF gpt_oss/configuration_gpt_oss.py#L108 `self.attention_bias = True` (an explicit config value, passed
    # through **kwargs to PretrainedConfig afterwards, overrides it).
    with_bias = layer(parse(gpt_oss_conf()), 0)
    assert {n: with_bias[n] for n in ALL_ATTN_BIASES} == ALL_ATTN_BIASES
    without = layer(parse(gpt_oss_conf(attention_bias=False)), 0)
    assert not set(ALL_ATTN_BIASES) & set(without)
    assert set(with_bias) - set(without) == set(ALL_ATTN_BIASES)


def test_llama_mlp_bias():
    # TF llama/modeling_llama.py#L149-L151: gate/up/down bias=config.mlp_bias (default False, configuration #L183).
    a = parse(conf("llama", mlp_bias=True))
    assert layer(a, 4) == LLAMA_LAYER | {
        "ffn_gate.bias": (MLP, (I,)), "ffn_up.bias": (MLP, (I,)), "ffn_down.bias": (MLP, (H,)),
    }
    assert total(a) == total(parse(conf("llama"))) + 5 * (2 * I + H)


@pytest.mark.parametrize("model_type", ["mistral", "mixtral", "phi3", "qwen2", "olmo2", "qwen3"])
def test_no_mlp_bias_outside_llama(model_type):
    # Qwen2/Mistral/Mixtral/Phi-3/OLMo 2/Qwen3 MLPs are hard-coded bias=False (TF qwen2/modeling_qwen2.py#L40-L42,
    # mistral/modeling_mistral.py#L41-L43, mixtral/modeling_mixtral.py#L63-L65, phi3/modeling_phi3.py#L55-L56,
    # olmo2/modeling_olmo2.py#L207-L209, qwen3/modeling_qwen3.py#L76-L78).
    extra = {"num_local_experts": 4} if model_type == "mixtral" else {}
    a = parse(conf(model_type, mlp_bias=True, **extra))
    assert not any(t.name.startswith("ffn") and t.name.endswith(".bias") for t in a.tensors)


@pytest.mark.parametrize("model_type", ["mistral", "mixtral", "phi3"])
def test_never_attention_bias(model_type):
    # Hard-coded bias=False: TF mistral/modeling_mistral.py#L135-L138, mixtral/modeling_mixtral.py#L247-L250,
    # phi3/modeling_phi3.py#L160-L161.
    extra = {"num_local_experts": 4} if model_type == "mixtral" else {}
    a = parse(conf(model_type, attention_bias=True, **extra))
    assert not any(t.name.endswith(".bias") for t in a.tensors)


# --------------------------------------------------------------------------------------------------
# 3. Norm layouts


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_gemma_four_norms(model_type):
    # input_layernorm, post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm:
    # TF gemma2/modeling_gemma2.py#L250-L254, gemma3/modeling_gemma3.py#L360-L363; Gemma 3 adds per-head
    # q_norm/k_norm of head_dim (gemma3/modeling_gemma3.py#L299-L300).
    a = parse(conf(model_type))
    expected = LLAMA_LAYER | {"post_attention_norm.weight": (NORMS, (H,)), "post_ffw_norm.weight": (NORMS, (H,))}
    if model_type == "gemma3_text":
        expected |= {"attn_q_norm.weight": (NORMS, (HD,)), "attn_k_norm.weight": (NORMS, (HD,))}
    for i in range(5):
        assert layer(a, i) == expected
    assert layer(a, None) == TIED_OUTSIDE


def test_olmo2_post_norms_and_whole_projection_qk_norms():
    # OLMo 2 has no input_layernorm: post_attention_layernorm and post_feedforward_layernorm only
    # (TF olmo2/modeling_olmo2.py#L224-L225), and q_norm/k_norm over the whole projection:
    # RMSNorm(num_attention_heads * head_dim) and RMSNorm(num_key_value_heads * head_dim) (#L149-L150).
    a = parse(conf("olmo2"))
    expected = {k: v for k, v in LLAMA_LAYER.items() if k not in ("attn_norm.weight", "ffn_norm.weight")} | {
        "post_attention_norm.weight": (NORMS, (H,)), "post_ffw_norm.weight": (NORMS, (H,)),
        "attn_q_norm.weight": (NORMS, (Q,)), "attn_k_norm.weight": (NORMS, (KV,)),
    }
    for i in range(5):
        assert layer(a, i) == expected
    assert layer(a, None) == UNTIED_OUTSIDE


@pytest.mark.parametrize("model_type", ["qwen3", "qwen3_moe"])
def test_qwen3_per_head_qk_norms(model_type):
    # TF qwen3/modeling_qwen3.py#L183-L184 and qwen3_moe/modeling_qwen3_moe.py#L147-L148: RMSNorm(head_dim).
    a = parse(conf("qwen3") if model_type == "qwen3" else qwen3_moe_conf())
    for i in range(a.num_layers):
        norms = {k: v for k, v in layer(a, i).items() if v[0] == NORMS}
        assert norms == {"attn_norm.weight": (NORMS, (H,)), "ffn_norm.weight": (NORMS, (H,)),
                         "attn_q_norm.weight": (NORMS, (HD,)), "attn_k_norm.weight": (NORMS, (HD,))}


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "olmo2", "gemma2", "phi3"])
def test_no_per_head_qk_norm(model_type):
    a = parse(conf(model_type))
    assert all(t.shape != (HD,) for t in a.tensors if t.group == NORMS)


def test_gpt_oss_sinks_one_per_head():
    # TF gpt_oss/modeling_gpt_oss.py#L293 `self.sinks = nn.Parameter(torch.empty(config.num_attention_heads))`.
    a = parse(gpt_oss_conf())
    assert [layer(a, i)["attn_sinks.weight"] for i in range(5)] == [(ATTENTION, (NH,))] * 5
    assert not any(t.name == "attn_sinks.weight" for t in parse(conf("llama")).tensors)


# --------------------------------------------------------------------------------------------------
# 4. Defaults: Falcon, GPT-2, Gemma 3, tie_word_embeddings


def falcon_conf(**over: Any) -> dict[str, Any]:
    c = {"model_type": "falcon", "vocab_size": V, "hidden_size": H, "num_hidden_layers": 5, "num_attention_heads": NH}
    c.update(over)
    return c


FALCON_HD = H // NH  # 12: FalconAttention head_dim = hidden_size // num_heads (TF falcon/modeling_falcon.py#L194)


def test_falcon_multi_query_default():
    # FalconConfig defaults: multi_query=True, parallel_attn=True, bias=False, new_decoder_architecture=False,
    # max_position_embeddings=2048 (TF falcon/configuration_falcon.py#L158-L162), ffn_hidden_size None ->
    # 4 * hidden (#L195-L196). Multi-query: qkv out = hidden + 2 * head_dim (modeling_falcon.py#L219-L224),
    # one KV head (#L229). Parallel attention with one norm: input_layernorm only (#L568-L574).
    a = parse(falcon_conf())
    assert layer(a, 0) == {
        "attn_norm.weight": (NORMS, (H,)), "attn_norm.bias": (NORMS, (H,)),
        "attn_qkv.weight": (ATTENTION, (H + 2 * FALCON_HD, H)),  # 72 x 48
        "attn_output.weight": (ATTENTION, (H, H)),
        "ffn_up.weight": (MLP, (4 * H, H)),
        "ffn_down.weight": (MLP, (H, 4 * H)),
    }
    assert layer(a, None) == {"token_embd.weight": (EMBEDDINGS, (V, H)), "output_norm.weight": (NORMS, (H,)),
                              "output_norm.bias": (NORMS, (H,))}  # tied (PretrainedConfig default)
    assert (a.num_kv_heads, a.head_dim, a.intermediate_size, a.gated_mlp) == (1, FALCON_HD, 4 * H, False)
    assert total(a) == V * H + 5 * (2 * H + (H + 2 * FALCON_HD) * H + H * H + 2 * 4 * H * H) + 2 * H
    # KV cache: one head of 12 per layer: 2 * 12 * 2 bytes per token and layer.
    assert kv_cache_bytes(a, 100, 1, BF16) == 5 * 100 * 2 * 1 * FALCON_HD * 2
    assert a.max_context == 2048
    assert any("2048" in n for n in a.notes)
    assert parse(falcon_conf(multi_query=True)) == a


def test_falcon_multi_query_false_is_multi_head():
    # modeling_falcon.py#L223: qkv_out_dim = 3 * hidden_size; all heads are key/value heads (#L229).
    a = parse(falcon_conf(multi_query=False))
    assert layer(a, 3)["attn_qkv.weight"] == (ATTENTION, (3 * H, H))
    assert a.num_kv_heads == NH
    assert kv_cache_bytes(a, 100, 1, BF16) == 5 * 100 * 2 * NH * FALCON_HD * 2


def test_falcon_new_decoder_architecture():
    # modeling_falcon.py#L219: qkv out = (2 * num_kv_heads + num_heads) * head_dim; num_ln_in_parallel_attn
    # None -> 2 for the new architecture (#L561-L562): ln_attn and ln_mlp, LayerNorms with bias (#L568-L572).
    a = parse(falcon_conf(new_decoder_architecture=True, num_kv_heads=2, multi_query=True))
    assert layer(a, 1) == {
        "attn_norm.weight": (NORMS, (H,)), "attn_norm.bias": (NORMS, (H,)),
        "attn_norm_2.weight": (NORMS, (H,)), "attn_norm_2.bias": (NORMS, (H,)),
        "attn_qkv.weight": (ATTENTION, ((2 * 2 + NH) * FALCON_HD, H)),  # 96 x 48
        "attn_output.weight": (ATTENTION, (H, H)),
        "ffn_up.weight": (MLP, (4 * H, H)),
        "ffn_down.weight": (MLP, (H, 4 * H)),
    }
    assert a.num_kv_heads == 2
    assert total(a) == V * H + 5 * (4 * H + (2 * 2 + NH) * FALCON_HD * H + H * H + 8 * H * H) + 2 * H
    # num_kv_heads defaults to num_attention_heads (configuration_falcon.py#L184).
    b = parse(falcon_conf(new_decoder_architecture=True))
    assert layer(b, 0)["attn_qkv.weight"] == (ATTENTION, ((2 * NH + NH) * FALCON_HD, H)) and b.num_kv_heads == NH
    # num_ln_in_parallel_attn = 1: one input_layernorm (#L573-L574).
    c = parse(falcon_conf(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=1))
    assert {k for k, v in layer(c, 0).items() if v[0] == NORMS} == {"attn_norm.weight", "attn_norm.bias"}


def test_falcon_sequential_attention_has_ffn_norm():
    # parallel_attn False: input_layernorm and post_attention_layernorm (modeling_falcon.py#L564-L566).
    a = parse(falcon_conf(parallel_attn=False))
    assert {k: v for k, v in layer(a, 0).items() if v[0] == NORMS} == {
        "attn_norm.weight": (NORMS, (H,)), "attn_norm.bias": (NORMS, (H,)),
        "ffn_norm.weight": (NORMS, (H,)), "ffn_norm.bias": (NORMS, (H,)),
    }


def test_falcon_explicit_sizes_bias_and_untied():
    a = parse(falcon_conf(ffn_hidden_size=100, bias=True, tie_word_embeddings=False, max_position_embeddings=4096))
    # FalconLinear(..., bias=config.bias) for query_key_value, dense, dense_h_to_4h, dense_4h_to_h.
    assert layer(a, 2) == {
        "attn_norm.weight": (NORMS, (H,)), "attn_norm.bias": (NORMS, (H,)),
        "attn_qkv.weight": (ATTENTION, (H + 2 * FALCON_HD, H)), "attn_qkv.bias": (ATTENTION, (H + 2 * FALCON_HD,)),
        "attn_output.weight": (ATTENTION, (H, H)), "attn_output.bias": (ATTENTION, (H,)),
        "ffn_up.weight": (MLP, (100, H)), "ffn_up.bias": (MLP, (100,)),
        "ffn_down.weight": (MLP, (H, 100)), "ffn_down.bias": (MLP, (H,)),
    }
    assert layer(a, None)["output.weight"] == (LM_HEAD, (V, H))
    assert a.intermediate_size == 100
    assert a.max_context == 4096 and not a.notes


def test_falcon_errors():
    assert field_of(falcon_conf(num_attention_heads=5)) == "num_attention_heads"  # 48 % 5 != 0
    assert field_of(falcon_conf(new_decoder_architecture=True, num_kv_heads=3)) == "num_kv_heads"  # 4 % 3


# FalconAttention ignores a head_dim key: head_dim = hidden_size // num_heads (transformers falcon/modeling_falcon.py#L194).
def test_falcon_head_dim_key_is_ignored_by_transformers():
    a = parse(falcon_conf(head_dim=8))
    assert layer(a, 0)["attn_qkv.weight"] == (ATTENTION, (H + 2 * FALCON_HD, H))


def gpt2_conf(**over: Any) -> dict[str, Any]:
    c = {"model_type": "gpt2", "vocab_size": V, "n_embd": H, "n_layer": 5, "n_head": NH}
    c.update(over)
    return c


def test_gpt2_defaults():
    # GPT2Config: n_positions=1024, n_inner=None (TF gpt2/configuration_gpt2.py#L141,L145); GPT2Block
    # inner_dim = n_inner or 4 * hidden (modeling_gpt2.py#L386); tie_word_embeddings defaults to True
    # (TF ../configuration_utils.py#L220). Conv1D c_attn (3h), c_proj, c_fc, c_proj with biases, ln_1, ln_2,
    # ln_f LayerNorms with bias, wte and wpe.
    a = parse(gpt2_conf())
    assert layer(a, 0) == {
        "attn_norm.weight": (NORMS, (H,)), "attn_norm.bias": (NORMS, (H,)),
        "attn_qkv.weight": (ATTENTION, (3 * H, H)), "attn_qkv.bias": (ATTENTION, (3 * H,)),
        "attn_output.weight": (ATTENTION, (H, H)), "attn_output.bias": (ATTENTION, (H,)),
        "ffn_norm.weight": (NORMS, (H,)), "ffn_norm.bias": (NORMS, (H,)),
        "ffn_up.weight": (MLP, (4 * H, H)), "ffn_up.bias": (MLP, (4 * H,)),
        "ffn_down.weight": (MLP, (H, 4 * H)), "ffn_down.bias": (MLP, (H,)),
    }
    assert layer(a, None) == {"token_embd.weight": (EMBEDDINGS, (V, H)),
                              "position_embd.weight": (EMBEDDINGS, (1024, H)),
                              "output_norm.weight": (NORMS, (H,)), "output_norm.bias": (NORMS, (H,))}
    assert (a.max_context, a.intermediate_size, a.head_dim, a.num_kv_heads, a.gated_mlp) == (1024, 4 * H, 12, NH, False)
    inner = 4 * H
    assert total(a) == V * H + 1024 * H + 5 * (4 * H * H + 9 * H + 2 * inner * H + inner) + 2 * H
    # Multi-head attention: 4 heads of 12 per layer.
    assert kv_cache_bytes(a, 100, 1, BF16) == 5 * 100 * 2 * NH * 12 * 2


def test_gpt2_explicit_values():
    a = parse(gpt2_conf(n_positions=30, n_inner=100, tie_word_embeddings=False))
    assert layer(a, None)["position_embd.weight"] == (EMBEDDINGS, (30, H))
    assert layer(a, None)["output.weight"] == (LM_HEAD, (V, H))
    assert layer(a, 4)["ffn_up.weight"] == (MLP, (100, H)) and layer(a, 4)["ffn_down.weight"] == (MLP, (H, 100))
    assert a.max_context == 30
    assert total(a) == 2 * V * H + 30 * H + 5 * (4 * H * H + 9 * H + 2 * 100 * H + 100) + 2 * H
    assert field_of(gpt2_conf(n_head=5)) == "n_head"  # 48 % 5 != 0


# Gemma3TextConfig.__init__ defaults, transformers commit 008f5c8c:
# https://github.com/huggingface/transformers/blob/008f5c8c29be84d4721dc6d1e0fcd72300580be4/src/transformers/models/gemma3/configuration_gemma3.py
# vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
# num_key_value_heads=4, head_dim=256, max_position_embeddings=131_072, tie_word_embeddings=True,
# attention_bias=False, sliding_window=4096, sliding_window_pattern=6.


@pytest.mark.parametrize("config", [
    {"model_type": "gemma3", "text_config": {}},
    {"model_type": "gemma3_text"},
])
def test_gemma3_text_defaults(config):
    a = parse(config)
    assert (a.vocab_size, a.hidden_size, a.intermediate_size, a.num_layers) == (262_208, 2304, 9216, 26)
    assert (a.num_heads, a.num_kv_heads, a.head_dim, a.max_context, a.tied_embeddings) == (8, 4, 256, 131_072, True)
    assert [i for i, w in enumerate(windows(a)) if w is None] == [5, 11, 17, 23]
    assert {w for w in windows(a) if w} == {4096}
    assert not any(t.name.endswith(".bias") for t in a.tensors)
    h, q, kv = 2304, 8 * 256, 4 * 256
    per_layer = 2 * h * q + 2 * h * kv + 3 * h * 9216 + 4 * h + 2 * 256
    assert total(a) == 262_208 * h + 26 * per_layer + h


def test_gemma3_multimodal_sparse_text_config():
    # A multimodal Gemma 3 config may name only some text keys; the rest come from Gemma3TextConfig's defaults.
    a = parse({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
               "text_config": {"model_type": "gemma3_text", "hidden_size": H, "intermediate_size": I,
                               "num_hidden_layers": 7, "sliding_window": 16}})
    q, kv = 8 * 256, 4 * 256  # default heads 8 and 4 of head_dim 256
    assert layer(a, 6) == {
        "attn_norm.weight": (NORMS, (H,)), "ffn_norm.weight": (NORMS, (H,)),
        "post_attention_norm.weight": (NORMS, (H,)), "post_ffw_norm.weight": (NORMS, (H,)),
        "attn_q.weight": (ATTENTION, (q, H)), "attn_k.weight": (ATTENTION, (kv, H)),
        "attn_v.weight": (ATTENTION, (kv, H)), "attn_output.weight": (ATTENTION, (H, q)),
        "attn_q_norm.weight": (NORMS, (256,)), "attn_k_norm.weight": (NORMS, (256,)),
        "ffn_gate.weight": (MLP, (I, H)), "ffn_up.weight": (MLP, (I, H)), "ffn_down.weight": (MLP, (H, I)),
    }
    assert layer(a, None) == {"token_embd.weight": (EMBEDDINGS, (262_208, H)), "output_norm.weight": (NORMS, (H,))}
    assert total(a) == 262_208 * H + 7 * (2 * H * q + 2 * H * kv + 3 * H * I + 4 * H + 2 * 256) + H
    assert windows(a) == [16, 16, 16, 16, 16, None, 16]
    assert a.model_type == "gemma3" and a.max_context == 131_072
    assert any("vision" in n for n in a.notes)


def test_gemma3_text_config_errors():
    assert field_of({"model_type": "gemma3", "hidden_size": H}) == "text_config"
    assert field_of({"model_type": "gemma3", "text_config": [1, 2]}) == "text_config"
    assert field_of({"model_type": "gemma3", "text_config": {"hidden_size": -1}}) == "text_config.hidden_size"
    assert field_of({"model_type": "gemma3", "text_config": {"num_key_value_heads": 16}}) \
        == "text_config.num_key_value_heads"


# Gemma3TextConfig keeps an explicit sliding_window=None: no sliding layers (not the 4096 default).
def test_gemma3_explicit_null_sliding_window_means_no_window():
    a = parse({"model_type": "gemma3", "text_config": {"num_hidden_layers": 7, "sliding_window": None}})
    assert windows(a) == [None] * 7


# tie_word_embeddings defaults, TF configuration_<model>.py: llama #L178 False, mistral #L133 False,
# qwen2 #L164 False, qwen3 #L169 False, qwen3_moe #L183 False, mixtral #L145 False, gemma2 #L136 True,
# gemma3 #L185 True, phi3 #L141 False, deepseek_v3 #L186 False, gpt_oss #L60 False, olmo2 #L121 False;
# GPT-2 and Falcon take PretrainedConfig's default True (TF ../configuration_utils.py#L220).
@pytest.mark.parametrize("model_type,tied", [
    ("llama", False), ("mistral", False), ("qwen2", False), ("qwen3", False), ("qwen3_moe", False),
    ("mixtral", False), ("gemma2", True), ("gemma3", True), ("gemma3_text", True), ("phi3", False),
    ("deepseek_v3", False), ("gpt_oss", False), ("olmo2", False), ("gpt2", True), ("falcon", True),
])
def test_tie_word_embeddings_default(model_type, tied):
    c = MINIMAL[model_type]()
    a = parse(c)
    assert a.tied_embeddings is tied
    assert ("output.weight" in layer(a, None)) is (not tied)
    flipped = dict(c, tie_word_embeddings=not tied)
    if model_type == "gemma3":
        flipped = dict(c, text_config=dict(c["text_config"], tie_word_embeddings=not tied))
    b = parse(flipped)
    assert total(b) - total(a) == (V * H if tied else -V * H)


# --------------------------------------------------------------------------------------------------
# 5. Mixture of experts


def qwen3_moe_conf(**over: Any) -> dict[str, Any]:
    c = conf("qwen3_moe", num_hidden_layers=7, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24)
    c.update(over)
    return c


def mixtral_conf(**over: Any) -> dict[str, Any]:
    return conf("mixtral", num_local_experts=4, **over)


def gpt_oss_conf(**over: Any) -> dict[str, Any]:
    return conf("gpt_oss", num_local_experts=6, **over)


QWEN3_LAYER = LLAMA_LAYER | {"attn_q_norm.weight": (NORMS, (HD,)), "attn_k_norm.weight": (NORMS, (HD,))}


def test_qwen3_moe_sparse_step_and_mlp_only_layers():
    # Qwen3MoeDecoderLayer (TF qwen3_moe/modeling_qwen3_moe.py#L295-L300): sparse MoE block iff
    # layer_idx not in mlp_only_layers and (layer_idx + 1) % decoder_sparse_step == 0, otherwise a dense
    # Qwen3MoeMLP of intermediate_size. Router nn.Linear(hidden, num_experts, bias=False) (#L221).
    # 7 layers, step 2, mlp_only_layers [3]: (i + 1) % 2 == 0 -> 1, 3, 5; minus 3 -> MoE at 1 and 5.
    a = parse(qwen3_moe_conf(decoder_sparse_step=2, mlp_only_layers=[3]))
    moe_layer = {k: v for k, v in QWEN3_LAYER.items() if not k.startswith("ffn_") or k == "ffn_norm.weight"} | {
        "ffn_gate_inp.weight": (ROUTER, (4, H)),
        "ffn_gate_exps.weight": (EXPERTS, (4, 24, H)),
        "ffn_up_exps.weight": (EXPERTS, (4, 24, H)),
        "ffn_down_exps.weight": (EXPERTS, (4, H, 24)),
    }
    for i in range(7):
        assert layer(a, i) == (moe_layer if i in (1, 5) else QWEN3_LAYER), i
    assert (a.moe_layers, a.num_experts, a.experts_per_token, a.intermediate_size) == (2, 4, 2, 24)
    n = total(a)
    assert n == 2 * V * H + H + 7 * (ATTN + 2 * H + 2 * HD) + 2 * (4 * H + 3 * 4 * 24 * H) + 5 * GATED
    # Each token runs 2 of 4 experts: the idle half of the routed experts is not active.
    assert count_parameters(a).active == n - 2 * (4 - 2) * 3 * 24 * H
    # Defaults decoder_sparse_step=1, mlp_only_layers=[] (configuration_qwen3_moe.py#L190,L197,L232): all MoE.
    b = parse(qwen3_moe_conf())
    assert b.moe_layers == 7 and all("ffn_gate_exps.weight" in layer(b, i) for i in range(7))
    assert total(b) == 2 * V * H + H + 7 * (ATTN + 2 * H + 2 * HD + 4 * H + 3 * 4 * 24 * H)


def test_mixtral_moe_layout_and_default_top_k():
    # MixtralSparseMoeBlock: gate nn.Linear(hidden, num_experts, bias=False), experts w1/w3 (ffn_dim, hidden),
    # w2 (hidden, ffn_dim) (TF mixtral/modeling_mixtral.py#L63-L65,L95); num_experts_per_tok=2
    # (configuration_mixtral.py#L149).
    a = parse(mixtral_conf())
    expected = {k: v for k, v in LLAMA_LAYER.items() if not k.startswith("ffn_") or k == "ffn_norm.weight"} | {
        "ffn_gate_inp.weight": (ROUTER, (4, H)),
        "ffn_gate_exps.weight": (EXPERTS, (4, I, H)),
        "ffn_up_exps.weight": (EXPERTS, (4, I, H)),
        "ffn_down_exps.weight": (EXPERTS, (4, H, I)),
    }
    for i in range(5):
        assert layer(a, i) == expected
    assert (a.experts_per_token, a.num_experts, a.moe_layers, a.intermediate_size) == (2, 4, 5, I)
    c = count_parameters(a)
    assert c.total == 2 * V * H + H + 5 * (ATTN + 2 * H + 4 * H + 4 * GATED)
    assert c.by_group[EXPERTS] == 5 * 4 * GATED and c.by_group[ROUTER] == 5 * 4 * H
    # active = total - experts * (E - k) / E = total - 5 layers x 2 idle experts x 3*I*H
    assert c.active == c.total - 5 * (4 - 2) * GATED
    k3 = count_parameters(parse(mixtral_conf(num_experts_per_tok=3)))
    assert k3.active == k3.total - 5 * (4 - 3) * GATED
    every = count_parameters(parse(mixtral_conf(num_experts_per_tok=4)))  # k == E is allowed: all active
    assert every.active == every.total


def test_gpt_oss_fused_experts_router_bias_and_default_top_k():
    # GptOssExperts (TF gpt_oss/modeling_gpt_oss.py#L74-L77): gate_up_proj (E, hidden, 2*I) with bias (E, 2*I),
    # down_proj (E, I, hidden) with bias (E, hidden); GptOssTopKRouter weight (E, hidden) and bias (E)
    # (#L144-L145); num_experts_per_tok=4 (configuration_gpt_oss.py#L74). Stored here as (E, out, in).
    a = parse(gpt_oss_conf())
    assert layer(a, 3) == {k: v for k, v in LLAMA_LAYER.items() if not k.startswith("ffn_") or k == "ffn_norm.weight"} \
        | ALL_ATTN_BIASES | {
        "attn_sinks.weight": (ATTENTION, (NH,)),
        "ffn_gate_inp.weight": (ROUTER, (6, H)), "ffn_gate_inp.bias": (ROUTER, (6,)),
        "ffn_gate_up_exps.weight": (EXPERTS, (6, 2 * I, H)), "ffn_gate_up_exps.bias": (EXPERTS, (6, 2 * I)),
        "ffn_down_exps.weight": (EXPERTS, (6, H, I)), "ffn_down_exps.bias": (EXPERTS, (6, H)),
    }
    assert a.experts_per_token == 4
    one_expert = 2 * I * H + 2 * I + I * H + H
    c = count_parameters(a)
    assert c.total == 2 * V * H + H + 5 * (ATTN + (Q + 2 * KV + H) + NH + 2 * H + 6 * H + 6 + 6 * one_expert)
    assert c.active == c.total - 5 * (6 - 4) * one_expert


@pytest.mark.parametrize("make", [lambda: mixtral_conf(num_experts_per_tok=5),
                                  lambda: gpt_oss_conf(num_experts_per_tok=7),
                                  lambda: qwen3_moe_conf(num_experts_per_tok=5),
                                  lambda: deepseek_conf(num_experts_per_tok=7)])
def test_top_k_above_experts(make):
    assert field_of(make()) == "num_experts_per_tok"


def deepseek_conf(**over: Any) -> dict[str, Any]:
    c = {"model_type": "deepseek_v3", "vocab_size": V, "hidden_size": H, "intermediate_size": I,
         "num_hidden_layers": 5, "num_attention_heads": NH, "moe_intermediate_size": 14, "n_routed_experts": 6,
         "n_shared_experts": 3, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 2,
         "q_lora_rank": 20, "kv_lora_rank": 12, "qk_nope_head_dim": 9, "qk_rope_head_dim": 4, "v_head_dim": 10}
    c.update(over)
    USED_CONFIGS.append(c)
    return c


# DeepSeek tiny dimensions: q/k head 9 + 4 = 13, 4 heads -> q_b out 52; kv_b out 4 * (9 + 10) = 76;
# o_proj in 4 * 10 = 40; kv_a out 12 + 4 = 16; routed experts 6 of 14; shared experts 3 * 14 = 42.
DS_ATTN: Shapes = {
    "attn_norm.weight": (NORMS, (H,)), "ffn_norm.weight": (NORMS, (H,)),
    "attn_q_a.weight": (ATTENTION, (20, H)), "attn_q_a_norm.weight": (NORMS, (20,)),
    "attn_q_b.weight": (ATTENTION, (52, 20)),
    "attn_kv_a_mqa.weight": (ATTENTION, (16, H)), "attn_kv_a_norm.weight": (NORMS, (12,)),
    "attn_kv_b.weight": (ATTENTION, (76, 12)),
    "attn_output.weight": (ATTENTION, (H, 40)),
}
DS_DENSE: Shapes = DS_ATTN | {"ffn_gate.weight": (MLP, (I, H)), "ffn_up.weight": (MLP, (I, H)),
                              "ffn_down.weight": (MLP, (H, I))}
DS_MOE: Shapes = DS_ATTN | {
    "ffn_gate_inp.weight": (ROUTER, (6, H)), "exp_probs_b.bias": (ROUTER, (6,)),
    "ffn_gate_exps.weight": (EXPERTS, (6, 14, H)), "ffn_up_exps.weight": (EXPERTS, (6, 14, H)),
    "ffn_down_exps.weight": (EXPERTS, (6, H, 14)),
    # Shared experts run for every token, so they are not in the routed-experts group the active count scales.
    "ffn_gate_shexp.weight": (MLP, (42, H)), "ffn_up_shexp.weight": (MLP, (42, H)),
    "ffn_down_shexp.weight": (MLP, (H, 42)),
}
DS_ATTN_N = 20 * H + 20 + 52 * 20 + 16 * H + 12 + 76 * 12 + H * 40 + 2 * H  # attention and the two norms
DS_MOE_N = 6 * H + 6 + 3 * 6 * 14 * H + 3 * 42 * H  # router, e_score_correction_bias, routed and shared experts


def test_deepseek_v3_layers():
    # MLA shapes: TF deepseek_v3/modeling_deepseek_v3.py#L342-L365 (q_a_proj hidden->q_lora_rank, q_a_layernorm,
    # q_b_proj q_lora_rank->heads*(nope+rope), kv_a_proj_with_mqa hidden->kv_lora_rank+rope, kv_a_layernorm,
    # kv_b_proj kv_lora_rank->heads*(nope+v), o_proj heads*v->hidden). MoE layer rule, shared experts of
    # moe_intermediate_size * n_shared_experts, e_score_correction_bias iff topk_method == "noaux_tc": VLLM_DS
    # (DeepseekV2DecoderLayer is_moe_layer: layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0).
    # 5 layers, first_k_dense_replace 1, moe_layer_freq 2: MoE at 2 and 4.
    a = parse(deepseek_conf())
    for i in range(5):
        assert layer(a, i) == (DS_MOE if i in (2, 4) else DS_DENSE), i
    assert layer(a, None) == UNTIED_OUTSIDE
    assert (a.moe_layers, a.num_experts, a.experts_per_token, a.shared_expert_intermediate) == (2, 6, 2, 42)
    assert (a.num_kv_heads, a.head_dim, a.intermediate_size, a.gated_mlp) == (NH, 13, 14, True)
    assert a.max_context is None and parse(deepseek_conf(max_position_embeddings=163840)).max_context == 163840
    c = count_parameters(a)
    assert c.total == 2 * V * H + H + 5 * DS_ATTN_N + 3 * GATED + 2 * DS_MOE_N
    assert c.active == c.total - 2 * (6 - 2) * 3 * 14 * H
    # MLA caches kv_lora_rank + qk_rope_head_dim = 16 elements per token and layer.
    assert kv_cache_bytes(a, 100, 1, BF16) == 5 * 16 * 100 * 2
    assert kv_cache_bytes(a, 100, 3, BF16) == 3 * 5 * 16 * 100 * 2


def test_deepseek_v3_layer_frequency_rules():
    assert [i for i in range(5) if "ffn_gate_exps.weight" in layer(parse(deepseek_conf(first_k_dense_replace=0)), i)] \
        == [0, 2, 4]
    a = parse(deepseek_conf(moe_layer_freq=None))  # VLLM_DS: getattr(config, "moe_layer_freq", 1)
    assert [i for i in range(5) if "ffn_gate_exps.weight" in layer(a, i)] == [1, 2, 3, 4]
    b = parse(deepseek_conf(first_k_dense_replace=0, moe_layer_freq=1))
    assert b.moe_layers == 5
    c = parse(deepseek_conf(first_k_dense_replace=3, moe_layer_freq=1))
    assert [i for i in range(5) if "ffn_gate_exps.weight" in layer(c, i)] == [3, 4] and c.moe_layers == 2


def test_deepseek_v3_options():
    # No q_lora_rank (JSON null, as DeepSeek-V2-Lite): q_proj hidden -> heads * 13 = 52, no bias.
    a = parse(deepseek_conf(q_lora_rank=None))
    attn = {k: v for k, v in layer(a, 0).items() if v[0] != MLP}
    assert attn == {k: v for k, v in DS_ATTN.items() if not k.startswith("attn_q_")} | {
        "attn_q.weight": (ATTENTION, (52, H))}
    assert total(a) == total(parse(deepseek_conf())) - 5 * (20 * H + 20 + 52 * 20) + 5 * 52 * H
    # topk_method other than noaux_tc: no e_score_correction_bias.
    g = parse(deepseek_conf(topk_method="greedy"))
    assert not any(t.name == "exp_probs_b.bias" for t in g.tensors)
    assert total(g) == total(parse(deepseek_conf())) - 2 * 6
    assert parse(deepseek_conf(topk_method="noaux_tc")) == parse(deepseek_conf())
    # No shared experts.
    s = parse(deepseek_conf(n_shared_experts=0))
    assert not any("shexp" in t.name for t in s.tensors) and s.shared_expert_intermediate == 0
    assert total(s) == total(parse(deepseek_conf())) - 2 * 3 * 42 * H
    # attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj get biases (TF modeling_deepseek_v3.py#L345,L349-L365).
    b = layer(parse(deepseek_conf(attention_bias=True)), 0)
    assert {k: v for k, v in b.items() if k.endswith(".bias")} == {
        "attn_q_a.bias": (ATTENTION, (20,)), "attn_kv_a_mqa.bias": (ATTENTION, (16,)),
        "attn_output.bias": (ATTENTION, (H,))}
    # tie_word_embeddings default False (TF configuration_deepseek_v3.py#L186).
    assert parse(deepseek_conf(tie_word_embeddings=True)).tensors == tuple(
        t for t in parse(deepseek_conf()).tensors if t.name != "output.weight")


def test_deepseek_v3_mtp_reported_apart():
    # Each multi-token-prediction module in the checkpoint (VLLM_MTP, DeepSeekMultiTokenPredictorLayer and the
    # per-layer embed_tokens it loads): enorm and hnorm (hidden each), eh_proj (hidden, 2*hidden), shared_head
    # norm (hidden) and head (vocab, hidden), embed_tokens (vocab, hidden), and one decoder layer at index
    # num_hidden_layers + j, which is an MoE layer here (5 >= 1 and 5 % 1 == 0 with moe_layer_freq 1).
    a = parse(deepseek_conf(moe_layer_freq=1, num_nextn_predict_layers=1))
    mtp = DS_ATTN_N + DS_MOE_N + 3 * H + 2 * H * H + 2 * V * H
    assert a.extra_params == {"multi_token_prediction": mtp}
    assert any(f"{mtp:,} parameters" in n for n in a.notes)
    assert total(a) == total(parse(deepseek_conf(moe_layer_freq=1)))  # not in the main count
    two = parse(deepseek_conf(moe_layer_freq=1, num_nextn_predict_layers=2))
    assert two.extra_params == {"multi_token_prediction": 2 * mtp}
    none = parse(deepseek_conf(num_nextn_predict_layers=0))
    assert none.extra_params == {} and not any("multi-token" in n for n in none.notes)


# DeepseekV3Config defaults n_shared_experts=1 and first_k_dense_replace=3 (transformers configuration_deepseek_v3.py#L164,L175; DeepSeek's configuration_deepseek.py too).
def test_deepseek_v3_defaults_match_transformers():
    a = parse(deepseek_conf(n_shared_experts=None, first_k_dense_replace=None, moe_layer_freq=1))
    assert a.shared_expert_intermediate == 14
    assert [i for i in range(5) if "ffn_gate_exps.weight" in layer(a, i)] == [3, 4]


# --------------------------------------------------------------------------------------------------
# 6. head_dim and config errors


def test_head_dim_explicit_or_derived():
    explicit = parse(conf("llama"))  # head_dim 16 given: q out 4 * 16 = 64 while hidden is 48
    assert explicit.head_dim == HD and layer(explicit, 0)["attn_q.weight"] == (ATTENTION, (64, H))
    derived = parse(conf("llama", drop=("head_dim",)))  # hidden / heads = 12
    assert derived.head_dim == 12
    assert layer(derived, 0)["attn_k.weight"] == (ATTENTION, (2 * 12, H))
    assert layer(derived, 0)["attn_output.weight"] == (ATTENTION, (H, 48))
    assert derived.attention[0].k_dim == derived.attention[0].v_dim == 12
    assert kv_cache_bytes(derived, 10, 1, BF16) == 5 * 10 * 2 * KVH * 12 * 2
    # num_key_value_heads defaults to num_attention_heads (LlamaConfig: "will default to num_attention_heads").
    mha = parse(conf("llama", drop=("num_key_value_heads",)))
    assert mha.num_kv_heads == NH and layer(mha, 0)["attn_v.weight"] == (ATTENTION, (Q, H))


def test_rows_are_input_dimension():
    a = parse(conf("llama"))
    t = {x.name: x for x in a.tensors if x.layer == 0}
    assert t["ffn_down.weight"].row_length == I and t["attn_output.weight"].row_length == Q
    assert t["attn_q.weight"].row_length == H and not t["attn_norm.weight"].is_matrix


@pytest.mark.parametrize("config,field", [
    (conf("llama", num_key_value_heads=8), "num_key_value_heads"),  # more KV heads than heads
    (conf("llama", num_key_value_heads=3), "num_key_value_heads"),  # 4 % 3
    (conf("llama", drop=("head_dim",), num_attention_heads=5, num_key_value_heads=5), "num_attention_heads"),
    (conf("llama", vocab_size=10**9 + 1), "vocab_size"),
    (conf("llama", hidden_size=-48), "hidden_size"),
    (conf("llama", hidden_size=0), "hidden_size"),
    (conf("llama", num_hidden_layers=True), "num_hidden_layers"),  # a bool is not an integer
    (conf("llama", num_hidden_layers=5.0), "num_hidden_layers"),
    (conf("llama", head_dim="16"), "head_dim"),
    (conf("llama", drop=("intermediate_size",)), "intermediate_size"),
    (conf("llama", tie_word_embeddings="yes"), "tie_word_embeddings"),
    (conf("llama", tie_word_embeddings=1), "tie_word_embeddings"),
    (conf("qwen2", sliding_window=16, use_sliding_window=True, max_window_layers=-1), "max_window_layers"),
    (qwen3_moe_conf(mlp_only_layers=[True]), "mlp_only_layers"),
    (qwen3_moe_conf(mlp_only_layers="3"), "mlp_only_layers"),
    (deepseek_conf(first_k_dense_replace=-1), "first_k_dense_replace"),
    (deepseek_conf(n_shared_experts=-1), "n_shared_experts"),
    (deepseek_conf(num_nextn_predict_layers=-1), "num_nextn_predict_layers"),
    (deepseek_conf(moe_layer_freq=0), "moe_layer_freq"),
    ({"hidden_size": H}, "model_type"),
    ({"model_type": 3}, "model_type"),
    ({"model_type": "bert"}, "model_type"),
    ([("model_type", "llama")], "config"),
])
def test_errors_name_the_field(config, field):
    assert field_of(config) == field


def test_error_messages():
    # 5 KV heads for 4 heads is "more KV heads", not merely "not divisible".
    with pytest.raises(ConfigError, match="exceed"):
        parse_architecture(conf("llama", num_key_value_heads=5))
    with pytest.raises(ConfigError, match="not divisible"):
        parse_architecture(conf("llama", num_key_value_heads=3))
    with pytest.raises(ConfigError, match="absurdly large"):
        parse_architecture(conf("llama", vocab_size=10**9 + 1))
    with pytest.raises(ConfigError, match="at least 1"):
        parse_architecture(conf("llama", hidden_size=-48))
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_architecture(conf("llama", num_hidden_layers=True))
    with pytest.raises(ConfigError, match="list of strings"):
        parse_architecture(conf("gemma2", sliding_window=16, layer_types=[0, 1, 0, 1, 0]))
    with pytest.raises(ConfigError, match="unknown layer type 'mystery_attention'"):
        parse_architecture(conf("gemma2", sliding_window=16, layer_types=["mystery_attention"] * 5))
    with pytest.raises(ConfigError, match="must be a string"):
        parse_architecture({"model_type": 3})
    with pytest.raises(ConfigError, match="unsupported model_type 'bert'"):
        parse_architecture({"model_type": "bert"})


def test_limits_are_inclusive():
    a = parse(conf("llama", vocab_size=10**9, num_hidden_layers=1))  # 10**9 itself is accepted
    assert layer(a, None)["token_embd.weight"] == (EMBEDDINGS, (10**9, H))
    assert parse(conf("llama", num_hidden_layers=1)).num_layers == 1


# --------------------------------------------------------------------------------------------------
# 7. Parameter totals of every supported model_type, by hand


def test_llama_inventory_and_groups():
    a = parse(conf("llama"))
    for i in range(5):
        assert layer(a, i) == LLAMA_LAYER
    assert layer(a, None) == UNTIED_OUTSIDE
    assert {t.layer for t in a.tensors} == {None, 0, 1, 2, 3, 4}
    c = count_parameters(a)
    assert dict(c.by_group) == {EMBEDDINGS: V * H, ATTENTION: 5 * ATTN, MLP: 5 * GATED, EXPERTS: 0, ROUTER: 0,
                                NORMS: 5 * 2 * H + H, LM_HEAD: V * H}
    assert c.total == c.active == 2 * V * H + H + 5 * (ATTN + GATED + 2 * H) == 113_904
    assert (a.num_heads, a.num_kv_heads, a.head_dim, a.intermediate_size, a.gated_mlp, a.num_experts) \
        == (NH, KVH, HD, I, True, 0)
    assert a.max_context is None and parse(conf("llama", max_position_embeddings=77)).max_context == 77


def test_phi3_fused_qkv_and_gate_up():
    # Phi3Attention qkv_proj out = heads*head_dim + 2*kv_heads*head_dim, no bias; Phi3MLP gate_up_proj
    # (2*I, hidden), down_proj (hidden, I) (TF phi3/modeling_phi3.py#L55-L56,L159-L161).
    a = parse(conf("phi3"))
    for i in range(5):
        assert layer(a, i) == {
            "attn_norm.weight": (NORMS, (H,)), "ffn_norm.weight": (NORMS, (H,)),
            "attn_qkv.weight": (ATTENTION, (Q + 2 * KV, H)), "attn_output.weight": (ATTENTION, (H, Q)),
            "ffn_up.weight": (MLP, (2 * I, H)), "ffn_down.weight": (MLP, (H, I)),
        }
    assert layer(a, None) == UNTIED_OUTSIDE


# Hand formulas, per model type, for the tiny config of each (5 layers unless the config says otherwise).
def _expected_totals() -> list[tuple[str, dict[str, Any], int]]:
    emb, n = V * H, 5
    return [
        ("llama", conf("llama"), 2 * emb + H + n * (ATTN + GATED + 2 * H)),
        ("mistral", conf("mistral", sliding_window=16), 2 * emb + H + n * (ATTN + GATED + 2 * H)),
        ("qwen2", conf("qwen2"), 2 * emb + H + n * (ATTN + Q + 2 * KV + GATED + 2 * H)),
        ("qwen3", conf("qwen3"), 2 * emb + H + n * (ATTN + GATED + 2 * H + 2 * HD)),
        ("qwen3_moe", qwen3_moe_conf(decoder_sparse_step=2, mlp_only_layers=[3]),
         2 * emb + H + 7 * (ATTN + 2 * H + 2 * HD) + 2 * (4 * H + 3 * 4 * 24 * H) + 5 * GATED),
        ("mixtral", mixtral_conf(), 2 * emb + H + n * (ATTN + 2 * H + 4 * H + 4 * GATED)),
        ("gemma2", conf("gemma2"), emb + H + n * (ATTN + GATED + 4 * H)),
        ("gemma3", {"model_type": "gemma3", "text_config": conf("gemma3_text")},
         emb + H + n * (ATTN + GATED + 4 * H + 2 * HD)),
        ("gemma3_text", conf("gemma3_text"), emb + H + n * (ATTN + GATED + 4 * H + 2 * HD)),
        ("phi3", conf("phi3", intermediate_size=70),
         2 * emb + H + n * (H * (Q + 2 * KV) + Q * H + 2 * 70 * H + 70 * H + 2 * H)),
        ("olmo2", conf("olmo2"), 2 * emb + H + n * (ATTN + GATED + 2 * H + Q + KV)),
        ("gpt_oss", gpt_oss_conf(),
         2 * emb + H + n * (ATTN + Q + 2 * KV + H + NH + 2 * H + 6 * H + 6
                            + 6 * (2 * I * H + 2 * I + I * H + H))),
        ("deepseek_v3", deepseek_conf(), 2 * emb + H + n * DS_ATTN_N + 3 * GATED + 2 * DS_MOE_N),
        ("gpt2", gpt2_conf(n_positions=30), emb + 30 * H + n * (4 * H * H + 9 * H + 2 * 4 * H * H + 4 * H) + 2 * H),
        ("falcon", falcon_conf(),
         emb + n * (2 * H + (H + 2 * FALCON_HD) * H + H * H + 2 * 4 * H * H) + 2 * H),
    ]


@pytest.mark.parametrize("model_type,config,expected", _expected_totals(), ids=[t[0] for t in _expected_totals()])
def test_total_by_hand(model_type, config, expected):
    a = parse(config)
    assert a.model_type == model_type
    assert total(a) == expected


def test_every_supported_type_has_a_total_test():
    from generator.estimate.architecture import SUPPORTED_MODEL_TYPES

    assert sorted(t[0] for t in _expected_totals()) == sorted(SUPPORTED_MODEL_TYPES)


def test_olmo2_7b_published_count():
    # allenai/OLMo-2-1124-7B safetensors metadata (revision 7df9a82518afdecae4e8c026b27adccc8c1f0032):
    # total 7,298,617,344 (F32), https://huggingface.co/allenai/OLMo-2-1124-7B
    # By hand: 2 x 100352*4096 (untied) + 32 x (4 x 4096^2 + 3 x 4096*11008 + post norms 2 x 4096
    #          + q_norm 4096 + k_norm 4096) + 4096.
    per_layer = 4 * 4096**2 + 3 * 4096 * 11008 + 4 * 4096
    assert 2 * 100352 * 4096 + 32 * per_layer + 4096 == 7_298_617_344
    assert total(parse_architecture(CONFIGS["OLMo-2-1124-7B"]["config"])) == 7_298_617_344


# --------------------------------------------------------------------------------------------------
# Minimal configs per model type (tie defaults) and the known-keys check


MINIMAL = {
    "llama": lambda: conf("llama"),
    "mistral": lambda: conf("mistral"),
    "qwen2": lambda: conf("qwen2"),
    "qwen3": lambda: conf("qwen3"),
    "qwen3_moe": lambda: qwen3_moe_conf(),
    "mixtral": lambda: mixtral_conf(),
    "gemma2": lambda: conf("gemma2"),
    "gemma3": lambda: {"model_type": "gemma3", "text_config": conf("gemma3_text")},
    "gemma3_text": lambda: conf("gemma3_text"),
    "phi3": lambda: conf("phi3"),
    "deepseek_v3": lambda: deepseek_conf(),
    "gpt_oss": lambda: gpt_oss_conf(),
    "olmo2": lambda: conf("olmo2"),
    "gpt2": lambda: gpt2_conf(),
    "falcon": lambda: falcon_conf(),
}


def test_every_key_the_estimator_reads_is_known():
    # The catalog reports config keys outside KNOWN_CONFIG_KEYS as unknown; every key these tests feed the
    # estimator (the fields of the transformers configs above) must be accepted.
    for make in MINIMAL.values():
        make()
    _expected_totals()
    keys: set[str] = set()
    for c in USED_CONFIGS:
        if isinstance(c, dict):
            keys |= set(c)
            if isinstance(c.get("text_config"), dict):
                keys |= set(c["text_config"])
    keys |= {"head_dim", "use_sliding_window", "max_window_layers", "layer_types", "sliding_window_pattern",
             "mlp_bias", "attention_bias", "topk_method", "num_nextn_predict_layers", "multi_query",
             "parallel_attn", "bias", "new_decoder_architecture", "num_kv_heads", "ffn_hidden_size",
             "num_ln_in_parallel_attn", "n_inner", "n_positions", "max_position_embeddings", "text_config"}
    assert keys <= KNOWN_CONFIG_KEYS, sorted(keys - KNOWN_CONFIG_KEYS)
