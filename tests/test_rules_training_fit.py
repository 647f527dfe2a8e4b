"""Rule tests for generator/estimate/training.py, scenario.py, fit.py and rules.py: optimizer states, ZeRO,
LoRA/QLoRA, the training phases, tensor-parallel weights, scenario validation, device fit and the rules of thumb.

Every expected value is derived by hand in the test body from the config values (tiny synthetic configs) or
taken from a cited publication or library source.

The DENSE config used throughout (llama, h=64, 8 heads of 8, 2 KV heads, I=160, V=256, 2 layers, untied):
  token_embd 256*64 = 16384; per layer q 64*64 = 4096, k 16*64 = 1024, v 1024, o 4096, gate/up/down 3*160*64
  = 30720, two norms 128 -> 41088; output_norm 64; lm_head 16384.
  P = 16384 + 2*41088 + 64 + 16384 = 115008 parameters; bf16: 230016 bytes, of which norms (2*128 + 64)*2 = 640.
Its inference activations per token (see tests/test_rules_memory.py): layer peak 1216 bytes, logits 1024 per
kept position; its KV cache 2 layers x 2 x 2 heads x 8 x 2 bytes = 128 bytes per token.
Its training activations (flash, no dropout) per token: 2144 per layer, 2*64*2 + 256*10 = 2816 outside.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.estimate.architecture import Architecture, Tensor, parse_architecture
from generator.estimate.fit import (
    FITS, NO_FIT, TIGHT, decode_tokens_per_second, devices_needed, gguf_offload, largest_batch, longest_context,
    verdict,
)
from generator.estimate.precision import PrecisionError, parse_precision_catalog
from generator.estimate.rules import rules_of_thumb
from generator.estimate.scenario import DEFAULT_OVERHEAD_BYTES, GIB, Scenario, ScenarioError, estimate
from generator.estimate.training import (
    full_training_states, lora_modules_per_layer, lora_parameters, lora_targets, optimizer_state_bytes,
    step_temporary_bytes, zero_share,
)

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = parse_precision_catalog(yaml.safe_load((ROOT / "data/precisions.yaml").read_text()))

DENSE: dict[str, Any] = {
    "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
}
P = 115008  # DENSE parameters, derived in the module docstring
# Mixtral-style: 4 experts (I=32), 2 per token; per layer attention 10240, router 4*64 = 256,
# experts 3 x (4, 32, 64) = 24576, norms 128 -> 35200; total 16384 + 2*35200 + 64 + 16384 = 103232.
MOE: dict[str, Any] = {
    "model_type": "mixtral", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
    "max_position_embeddings": 4096,
}
# DeepSeek-V3-style, layer 0 dense (I=96), layer 1 MoE (4 experts of 16, 2 per token, shared MLP 4*16 = 64).
DEEPSEEK: dict[str, Any] = {
    "model_type": "deepseek_v3", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
    "moe_intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "n_routed_experts": 4,
    "n_shared_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "kv_lora_rank": 16,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 16, "max_position_embeddings": 4096,
}
# gpt-oss-style: experts stored as fused 3-D parameters (gate_up (E, 2I, h), down (E, h, I)).
GPT_OSS: dict[str, Any] = {
    "model_type": "gpt_oss", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8, "num_local_experts": 4,
    "num_experts_per_tok": 2, "sliding_window": 16, "max_position_embeddings": 4096,
}


def parse(config: dict[str, Any], **overrides: Any) -> Architecture:
    return parse_architecture({**config, **overrides})


# --- optimizer states ----------------------------------------------------------------------------

def test_optimizer_bytes_per_parameter() -> None:
    # torch.optim.AdamW: exp_avg + exp_avg_sq in fp32 = 8 B/param; SGD with momentum: one fp32 buffer;
    # Lion (Chen et al. 2023, arXiv 2302.06675): one fp32 momentum.
    assert optimizer_state_bytes("adamw", params=1000) == 8000
    assert optimizer_state_bytes("sgd", params=1000) == 4000
    assert optimizer_state_bytes("lion", params=1000) == 4000
    # bitsandbytes AdamW8bit: two uint8 states plus, per 256-value block, one fp32 absmax for each state
    # (bitsandbytes-foundation/bitsandbytes 51294d909e914f80d2f2c85f9e9229dd4386ef85,
    # bitsandbytes/optim/optimizer.py, Optimizer2State.init_state: blocks = n // 256 (+1), absmax1 and absmax2
    # float32): 2 + 2*4/256 bytes per parameter, rounded up to whole bytes.
    assert optimizer_state_bytes("adamw_8bit", params=2560) == 2 * 2560 + 2560 * 8 // 256 == 5200
    assert optimizer_state_bytes("adamw_8bit", params=1000) == 2000 + 32  # 31.25 -> 32
    # A bare count has no shapes, so Adafactor's factored state cannot be sized: 0.
    assert optimizer_state_bytes("adafactor", params=1000) == 0
    with pytest.raises(ValueError):
        optimizer_state_bytes("adam", params=1000)


def test_optimizer_state_over_a_tensor_list() -> None:
    tensors = [Tensor("w.weight", "mlp", (10, 20)), Tensor("b.bias", "mlp", (10,))]
    assert optimizer_state_bytes("adamw", tensors) == (200 + 10) * 8
    assert optimizer_state_bytes("sgd", tensors) == 210 * 4


def test_adafactor_factored_state_on_real_tensors() -> None:
    # Shazeer & Stern 2018, "Adafactor", arXiv 1804.04235, section 3: an n x m matrix keeps row and column
    # statistics, n + m values, instead of n*m; vectors keep the full second moment; no first moment by
    # default (beta1 = 0). Hugging Face's implementation keeps them in fp32 and, for a stacked (E, r, c) tensor,
    # rows of shape (E, r) and columns (E, c) (huggingface/transformers ad1fc9639f2e7b6808a2ca982c0a9b3134d76ee8,
    # src/transformers/optimization.py, Adafactor.step: exp_avg_sq_row = zeros(grad_shape[:-1]),
    # exp_avg_sq_col = zeros(grad_shape[:-2] + grad_shape[-1:])).
    dense = parse(DENSE)
    values = (256 + 64                          # token_embd (256, 64)
              + 2 * ((64 + 64)                  # attn_q (64, 64)
                     + 2 * (16 + 64)            # attn_k, attn_v (16, 64)
                     + (64 + 64)                # attn_output (64, 64)
                     + 2 * (160 + 64)           # ffn_gate, ffn_up (160, 64)
                     + (64 + 160)               # ffn_down (64, 160)
                     + 64 + 64)                 # two norm vectors
              + 64                              # output_norm
              + 256 + 64)                       # output (256, 64)
    assert values == 3136
    assert optimizer_state_bytes("adafactor", dense.tensors) == values * 4 == 12544
    # Stacked experts: (4, 32, 64) keeps 4 x (32 + 64) values.
    moe = parse(MOE)
    experts = [t for t in moe.tensors if t.group == "experts"]
    assert len(experts) == 6
    assert optimizer_state_bytes("adafactor", experts) == 6 * 4 * (32 + 64) * 4 == 9216


@pytest.mark.parametrize("opt,copies", [("adamw", 1), ("sgd", 1), ("lion", 1), ("adafactor", 1), ("adamw_8bit", 0)])
def test_step_temporaries(opt: str, copies: int) -> None:
    # PyTorch's foreach implementations hold intermediates "roughly the size of the parameters" during step()
    # (torch.optim documentation, "Algorithms" / foreach); bitsandbytes' fused 8-bit kernels update in place.
    assert step_temporary_bytes(opt, 1000, 4) == copies * 1000 * 4
    assert step_temporary_bytes(opt, 1000, 2) == copies * 1000 * 2


# --- ZeRO ----------------------------------------------------------------------------------------

def test_zero_share_stage_threshold_and_ceiling() -> None:
    assert zero_share(10, 2, 2, 4) == 3    # partitioned from stage 2 at stage 2: ceil(10/4)
    assert zero_share(10, 2, 3, 4) == 3    # and at any later stage
    assert zero_share(10, 3, 2, 4) == 10   # not yet partitioned
    assert zero_share(10, 1, 0, 4) == 10   # no ZeRO


def test_full_training_states_by_zero_stage() -> None:
    # Rajbhandari et al. 2019 (ZeRO, arXiv 1910.02054), section 5: stage 1 partitions the optimizer states
    # (fp32 master weights included), stage 2 also the gradients, stage 3 also the 16-bit parameters.
    # P = 1001 parameters over 3 GPUs, mixed-precision AdamW: weights 2P = 2002, gradients 2002, master 4P =
    # 4004, moments 8P = 8008, step temporaries 4P = 4004.
    def parts(zero: int) -> tuple[int, int, int, int, int]:
        st = full_training_states(1001, "adamw", mixed_precision=True, zero=zero, gpus=3)
        return st.weights, st.gradients, st.master_weights, st.optimizer, st.step_temporary

    assert parts(0) == (2002, 2002, 4004, 8008, 4004)
    # ceil(4004/3) = 1335 (1334.67), ceil(8008/3) = 2670 (2669.33)
    assert parts(1) == (2002, 2002, 1335, 2670, 1335)
    assert parts(2) == (2002, 668, 1335, 2670, 1335)  # ceil(2002/3) = 668
    assert parts(3) == (668, 668, 1335, 2670, 1335)
    st = full_training_states(1001, "adamw", mixed_precision=True, zero=2, gpus=3)
    assert st.optimizer_total == 1335 + 2670


def test_full_training_states_fp32() -> None:
    # Pure fp32: 4-byte weights and gradients, no master copy, 8 B of Adam moments: 4 + 4 + 8 per parameter.
    st = full_training_states(1000, "adamw", mixed_precision=False, zero=0, gpus=1)
    assert (st.weights, st.gradients, st.master_weights, st.optimizer) == (4000, 4000, 0, 8000)
    assert st.step_temporary == 4000  # the step works on fp32 values either way
    sgd = full_training_states(1000, "sgd", mixed_precision=True, zero=0, gpus=1)
    assert (sgd.weights, sgd.master_weights, sgd.optimizer) == (2000, 4000, 4000)


# --- LoRA and QLoRA ------------------------------------------------------------------------------

def test_lora_parameters_per_group() -> None:
    a = parse(DENSE)
    r = 4
    # LoRA (Hu et al. 2021, arXiv 2106.09685): A (r x d_in) and B (d_out x r) per adapted matrix.
    attention = r * ((64 + 64) + (16 + 64) + (16 + 64) + (64 + 64))  # q, k, v, o: 1664 per layer
    mlp = r * 3 * (160 + 64)                                          # gate, up, down: 2688 per layer
    assert lora_parameters(a, r, ("attention",)) == 2 * attention == 3328
    assert lora_parameters(a, r, ("mlp",)) == 2 * mlp == 5376
    assert lora_parameters(a, r) == 2 * (attention + mlp) == 8704
    assert lora_parameters(a, r, ("experts",)) == 0
    moe = parse(MOE)
    # Per expert: 3 matrices (32 x 64 or 64 x 32) per expert, 4 experts: 4 * 3 * r * (32 + 64) per layer.
    assert lora_parameters(moe, r, ("experts",)) == 2 * 4 * 3 * r * 96 == 9216
    assert lora_parameters(moe, r) == 3328 + 9216  # the router is not adapted


def test_lora_skips_gpt_oss_fused_experts() -> None:
    # gpt-oss stores experts as 3-D nn.Parameters (transformers GptOssExperts), which PEFT's LoRA layers do
    # not wrap; attention (q, k, v, o with biases, sinks) is adapted.
    a = parse(GPT_OSS)
    assert lora_parameters(a, 4, ("experts",)) == 0
    assert lora_targets(a, ("experts",)) == ()
    assert lora_parameters(a, 4) == 2 * 4 * ((64 + 64) + 2 * (16 + 64) + (64 + 64)) == 3328
    assert lora_modules_per_layer(a) == 4


def test_lora_modules_per_layer() -> None:
    assert lora_modules_per_layer(parse(DENSE)) == 4 + 3
    assert lora_modules_per_layer(parse(DENSE), ("attention",)) == 4
    assert lora_modules_per_layer(parse(DENSE), ("experts",)) == 0
    # MoE: a token passes through experts_per_token = 2 experts, each with 3 adapted matrices.
    assert lora_modules_per_layer(parse(MOE)) == 4 + 3 * 2
    # DeepSeek: layer 0 dense (q, kv_a, kv_b, o + 3 MLP = 7), layer 1 MoE (4 + 3*2 routed + 3 shared = 13).
    ds = parse(DEEPSEEK)
    assert lora_modules_per_layer(ds) == 13
    assert lora_modules_per_layer(ds, ("experts",)) == 6


def test_lora_estimate_states_and_phases() -> None:
    a = parse(DENSE)
    e = estimate(a, Scenario(workload="lora", context=8, overhead_bytes=0), PRECISIONS)
    tr = 16 * 2 * (416 + 672)  # default rank 16; per layer r*(416 attention + 672 MLP) inputs+outputs
    assert e.scenario.lora_rank == 16 and e.trainable_params == tr == 34816
    # bf16 base + bf16 adapters; gradients 2 B; fp32 master 4 B + AdamW 8 B per adapter parameter.
    assert e.weights_bytes == 230016 + 2 * tr == 299648
    assert e.gradient_bytes == 2 * tr
    assert e.optimizer_bytes == 4 * tr + 8 * tr
    # Activations, T = 8: per layer 2144*8 + 7 modules * 8 * 16 * 2 = 18944; outside 2816*8 = 22528.
    assert e.activation_bytes == 2 * 18944 + 22528 == 60416
    fwd, bwd, step = e.phases
    assert fwd.parts == {"weights": 299648, "optimizer": 417792, "gradients": 0, "activations": 60416, "overhead": 0}
    # Backward walk: after both layers all adapter gradients (69632) exist and 2*b*s*h*2 = 2048 of working
    # activations remain: 69632 + 2048 > 0 + 60416 (start) and > 34816 + 18944 + 2048 (after one layer).
    assert bwd.parts == {"weights": 299648, "optimizer": 417792, "gradients": 69632, "activations": 2048,
                         "overhead": 0}
    # Step: fp32 master (4 B) foreach temporary, 1 copy x 34816 x 4.
    assert step.parts == {"weights": 299648, "optimizer": 417792 + 139264, "gradients": 69632, "activations": 0,
                          "overhead": 0}
    assert e.peak_phase == "optimizer_step" and e.total_bytes == 926336


def test_lora_zero_partitions_and_no_zero3_gather() -> None:
    a = parse(DENSE)
    tr = 34816
    z3 = estimate(a, Scenario(workload="lora", context=8, zero=3, gpus=2, overhead_bytes=0), PRECISIONS)
    assert z3.weights_bytes == 230016 // 2 + 2 * tr // 2
    assert z3.gradient_bytes == tr and z3.optimizer_bytes == (4 + 8) * tr // 2
    # The frozen base is not gathered layer by layer for LoRA here: activations as without ZeRO.
    assert z3.activation_bytes == 60416
    assert z3.phases[0].parts["activations"] == 60416
    z2 = estimate(a, Scenario(workload="lora", context=8, zero=2, gpus=2, overhead_bytes=0), PRECISIONS)
    assert z2.weights_bytes == 230016 + 2 * tr  # stage 2 keeps weights whole
    assert z2.gradient_bytes == tr              # but splits gradients


def test_qlora_defaults_and_states() -> None:
    a = parse(DENSE)
    s = Scenario(workload="qlora").resolved(PRECISIONS)
    # QLoRA (Dettmers et al. 2023, arXiv 2305.14314): NF4 base, paged 8-bit AdamW; rank 64 (their setup).
    assert (s.precision, s.optimizer, s.lora_rank) == ("nf4", "adamw_8bit", 64)
    e = estimate(a, Scenario(workload="qlora", context=8, overhead_bytes=0), PRECISIONS)
    tr = 64 * 2 * 1088
    assert e.trainable_params == tr == 139264
    # bf16 adapters trained directly: no fp32 master; AdamW8bit 2 + 8/256 B: 278528 + 4352.
    assert e.optimizer_bytes == 2 * tr + tr // 32 == 282880
    assert e.gradient_bytes == 2 * tr
    assert e.phases[2].parts["optimizer"] == 282880  # fused 8-bit kernel: no step temporaries
    # Adapters are 2 B each on top of the NF4 base: rank 64 vs rank 8 differ by 2 * (139264 - 17408).
    e8 = estimate(a, Scenario(workload="qlora", lora_rank=8, context=8, overhead_bytes=0), PRECISIONS)
    assert e.weights_bytes - e8.weights_bytes == 2 * (tr - 17408)
    # With a foreach optimizer the step temporaries are bf16 (no master): 1 x 139264 x 2.
    adam = estimate(a, Scenario(workload="qlora", optimizer="adamw", context=8, overhead_bytes=0), PRECISIONS)
    assert adam.phases[2].parts["optimizer"] == 8 * tr + 2 * tr


# --- full-training phases ------------------------------------------------------------------------
#
# DENSE, bf16, AdamW, no ZeRO: weights 2P = 230016, gradients 230016, master 4P + moments 8P = 1380096,
# step temporaries 4P = 460032. Per-layer gradients 2*41088 = 82176; outside the layers 230016 - 2*82176 = 65664.
# Activations: 2144*T per layer, 2816*T outside, total 7104*T.

def train(tokens_s: int, batch: int = 1, **kw: Any) -> Any:
    return estimate(parse(DENSE), Scenario(workload="train", context=tokens_s, batch=batch, overhead_bytes=0, **kw),
                    PRECISIONS)


def test_training_phases_small_batch_peaks_at_the_step() -> None:
    e = train(8)  # T = 8
    assert (e.params, e.trainable_params) == (P, P)
    fwd, bwd, step = e.phases
    assert fwd.parts == {"weights": 230016, "optimizer": 1380096, "gradients": 0, "activations": 7104 * 8,
                         "overhead": 0}
    # Backward walk, T = 8: start 65664 + 56832 = 122496; after layer 1: 147840 + (2144*8 + 2*8*64*2) = 167040;
    # after layer 0: 230016 + 2048 = 232064, the largest.
    assert bwd.parts == {"weights": 230016, "optimizer": 1380096, "gradients": 230016, "activations": 2048,
                         "overhead": 0}
    assert step.parts == {"weights": 230016, "optimizer": 1380096 + 460032, "gradients": 230016,
                          "activations": 0, "overhead": 0}
    assert step.total == 20 * P == 2300160
    assert e.peak_phase == "optimizer_step" and e.total_bytes == 2300160
    assert e.activation_bytes == 56832 and e.gradient_bytes == 2 * P and e.optimizer_bytes == 12 * P


def test_training_phases_large_batch_peaks_in_backward() -> None:
    e = train(256, batch=2)  # T = 512: activations 7104*512 = 3637248
    fwd, bwd, step = e.phases
    assert fwd.total == 230016 + 1380096 + 3637248
    # The walk never beats its start: after layer 1, 147840 + 2144*512 + 256*512 < 65664 + 3637248.
    assert bwd.parts["gradients"] == 65664 and bwd.parts["activations"] == 3637248
    assert bwd.total == 5313024
    assert e.peak_phase == "backward"


@pytest.mark.parametrize("s,grads,acts", [
    # T = 20: after layer 1, 147840 + 2400*20 = 195840 < 65664 + 142080 = 207744; after layer 0,
    # 230016 + 5120 = 235136 > 207744.
    (20, 230016, 256 * 20),
    # T = 24: after layer 0, 230016 + 6144 = 236160 is not above the start 65664 + 170496 = 236160.
    (24, 65664, 7104 * 24),
])
def test_backward_walk_edges(s: int, grads: int, acts: int) -> None:
    bwd = train(s).phases[1]
    assert (bwd.parts["gradients"], bwd.parts["activations"]) == (grads, acts)


def test_gradient_accumulation_holds_gradients_in_forward() -> None:
    e = train(8, gradient_accumulation=2)
    fwd, bwd, _ = e.phases
    assert fwd.parts["gradients"] == 230016
    # With gradients held, the backward walk only looks for the largest activations: its start.
    assert bwd.parts["gradients"] == 230016 and bwd.parts["activations"] == 56832


def test_zero3_gathers_the_largest_layer() -> None:
    e = train(8, zero=3, gpus=2)
    # One layer's 16-bit parameters gathered: 41088 * 2 = 82176.
    assert e.activation_bytes == 56832 + 82176
    assert e.phases[0].parts["activations"] == 56832 + 82176
    # States: each partitioned over 2 GPUs (P is even).
    assert (e.weights_bytes, e.gradient_bytes, e.optimizer_bytes) == (P, P, 6 * P)
    assert e.weights_by_type == {"bf16": P}  # the per-GPU share under ZeRO-3
    # DeepSeek: layer 0 (dense) has 128 + 4096 + 1536 + 16 + 1536 + 4096 + 3*96*64 = 29840 parameters; layer 1
    # (MoE) 11408 attention and norms + router 256 + bias 4 + experts 3*4*16*64 + shared 3*64*64 = 36244.
    ds = estimate(parse(DEEPSEEK), Scenario(workload="train", context=8, zero=3, gpus=2, overhead_bytes=0),
                  PRECISIONS)
    # Activations T = 8: 2 layers x 2080*8 + 2816*8 = 55808, plus 2 x 36244.
    assert ds.activation_bytes == 55808 + 2 * 36244


def test_training_fp32_states() -> None:
    e = train(8, precision="fp32")
    assert (e.weights_bytes, e.gradient_bytes, e.optimizer_bytes) == (4 * P, 4 * P, 8 * P)
    assert e.weights_by_type == {"f32": 4 * P}
    assert train(8).weights_by_type == {"bf16": 2 * P}


def test_inference_estimate_total_and_default_overhead() -> None:
    a = parse(DENSE)
    e = estimate(a, Scenario(context=8), PRECISIONS)
    # weights 230016 + KV 128*8 + activations 1216*8 + 1024 + overhead 1 GiB.
    assert e.phases[0].parts == {"weights": 230016, "kv_cache": 1024, "activations": 10752, "overhead": GIB}
    assert DEFAULT_OVERHEAD_BYTES == GIB == 2**30
    assert e.total_bytes == 241792 + GIB


# --- tensor parallelism: weights per GPU ----------------------------------------------------------

def test_tensor_parallel_weights_replicate_norms_and_routers() -> None:
    a = parse(DENSE)
    one = estimate(a, Scenario(context=8, gpus=1), PRECISIONS)
    assert one.weights_bytes == 2 * P == 230016
    # Norms replicated (640 B), the rest split: 640 + ceil(229376 / 3) = 640 + 76459.
    three = estimate(a, Scenario(context=8, gpus=3), PRECISIONS)
    assert three.weights_bytes == 640 + 76459 == 77099
    assert estimate(a, Scenario(context=8, gpus=2), PRECISIONS).weights_bytes == 640 + 114688
    # MoE: norms 640 + routers 2 layers x 256 x 2 B = 1024 replicated; the rest 206464 - 1664 = 204800 split.
    moe = estimate(parse(MOE), Scenario(context=8, gpus=3), PRECISIONS)
    assert moe.weights_bytes == 1664 + 68267  # ceil(204800 / 3) = 68267


def test_tensor_parallel_kv_and_activations_in_an_estimate() -> None:
    a = parse(DENSE, num_key_value_heads=8)
    # 8 KV heads over 3 GPUs: 3 per GPU: 2 layers x 2 x 3 x 8 x 2 B = 192 B per token, 10 tokens.
    e = estimate(a, Scenario(context=10, gpus=3), PRECISIONS)
    assert e.kv_cache_bytes == 1920
    # MLA latent replicated: 2 layers x 24 x 10 tokens x 2 B on every GPU.
    ds = parse(DEEPSEEK)
    assert estimate(ds, Scenario(context=10, gpus=2), PRECISIONS).kv_cache_bytes == 960
    assert estimate(ds, Scenario(context=10, gpus=4), PRECISIONS).kv_cache_bytes == 960


# --- scenario validation and defaults -------------------------------------------------------------

def test_resolved_defaults() -> None:
    inf = Scenario().resolved(PRECISIONS)
    assert (inf.precision, inf.kv_precision, inf.optimizer, inf.lora_rank) == ("bf16", "bf16", None, None)
    # llama.cpp's KV cache defaults to f16 (--cache-type-k/v f16); GGUF precisions get it.
    assert Scenario(precision="q4_k_m").resolved(PRECISIONS).kv_precision == "f16"
    assert Scenario(precision="nf4").resolved(PRECISIONS).kv_precision == "bf16"
    assert Scenario(precision="q4_k_m", kv_precision="q8_0").resolved(PRECISIONS).kv_precision == "q8_0"
    tr = Scenario(workload="train").resolved(PRECISIONS)
    assert (tr.optimizer, tr.lora_rank) == ("adamw", None)
    lora = Scenario(workload="lora").resolved(PRECISIONS)
    assert (lora.precision, lora.optimizer, lora.lora_rank) == ("bf16", "adamw", 16)
    q = Scenario(workload="qlora", lora_rank=8, optimizer="sgd").resolved(PRECISIONS)
    assert (q.lora_rank, q.optimizer) == (8, "sgd")


@pytest.mark.parametrize("kw", [
    {"context": 1}, {"context": 10_000_000}, {"batch": 1_000_000}, {"gpus": 100_000},
    {"prefill_chunk": 1}, {"prefill_chunk": 10_000_000}, {"overhead_bytes": 0}, {"overhead_bytes": 1024 * GIB},
    {"workload": "train", "gradient_accumulation": 1_000_000}, {"workload": "train", "precision": "fp32"},
    {"workload": "train", "precision": "fp16"}, {"workload": "train", "zero": 1, "gpus": 2},
    {"workload": "lora", "lora_rank": 1}, {"workload": "lora", "lora_rank": 65_536},
    {"workload": "lora", "precision": "q4_k_m"}, {"workload": "lora", "lora_targets": ("mlp",)},
])
def test_resolved_accepts_the_limits(kw: dict[str, Any]) -> None:
    Scenario(**kw).resolved(PRECISIONS)


@pytest.mark.parametrize("kw", [
    {"workload": "serve"},
    {"context": 0}, {"context": 10_000_001}, {"batch": 0}, {"batch": 1_000_001},
    {"gpus": 0}, {"gpus": 100_001},
    {"workload": "train", "gradient_accumulation": 0}, {"workload": "train", "gradient_accumulation": 1_000_001},
    {"prefill_chunk": 0}, {"prefill_chunk": 10_000_001}, {"workload": "train", "prefill_chunk": 512},
    {"workload": "train", "precision": "q4_k_m"}, {"workload": "train", "precision": "nf4"},
    {"workload": "qlora", "precision": "bf16"},
    {"workload": "train", "optimizer": "adam"}, {"workload": "train", "checkpointing": "some"},
    {"workload": "train", "zero": 4, "gpus": 2}, {"zero": 1, "gpus": 2},
    {"workload": "train", "zero": 2, "gpus": 1},           # ZeRO needs more than one GPU
    {"workload": "train", "gpus": 2},                       # several GPUs need a ZeRO stage
    {"workload": "lora", "lora_rank": 0}, {"workload": "lora", "lora_rank": 65_537},
    {"workload": "lora", "lora_targets": ("embeddings",)}, {"workload": "lora", "lora_targets": ()},
    {"workload": "train", "lora_rank": 8}, {"lora_rank": 8},
    {"optimizer": "adamw"}, {"checkpointing": "full"},
    {"overhead_bytes": -1}, {"overhead_bytes": 1024 * GIB + 1},
])
def test_resolved_rejects(kw: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError):
        Scenario(**kw).resolved(PRECISIONS)


def test_unknown_kv_precision_is_a_precision_error() -> None:
    with pytest.raises(PrecisionError):
        Scenario(kv_precision="q3").resolved(PRECISIONS)


def test_lora_without_adaptable_layers_is_an_error() -> None:
    with pytest.raises(ScenarioError):
        estimate(parse(DENSE), Scenario(workload="lora", lora_targets=("experts",)), PRECISIONS)


# --- fit ----------------------------------------------------------------------------------------

def test_verdict_thresholds() -> None:
    # Tight above 90 % of the usable memory, no fit above it.
    assert verdict(850, 1000) == FITS
    assert verdict(900, 1000) == FITS     # exactly 90 %
    assert verdict(901, 1000) == TIGHT
    assert verdict(1000, 1000) == TIGHT   # exactly full: fits, but tight
    assert verdict(1001, 1000) == NO_FIT


# Per-GPU inference totals of DENSE at context 8, batch 1, bf16, no overhead (hand-derived):
#   n=1: 230016 + KV 1024 + activations 9728 + 1024 = 241792
#   n=2: 640 + 114688 + KV 512 (1 KV head) + layer peak 2048 + 3*8*80*2 + logits 512 = 122240
#   n=4: 640 + 57344 + 512 + 2048 + 3*8*40*2 + 256 = 62720
#   n=8: 640 + 28672 + 512 + 2048 + attention 8*(1 + 2)*8*2 + 8*8*2 + 1024 = 1536 (> MLP 960) + 128 = 33536
#   n=16 would be 640 + 14336 + 512 + 2048 + 1536 + 64 = 19136, but 8 heads do not split over 16 GPUs.
@pytest.mark.parametrize("usable,n", [
    (241792, 1), (241791, 2), (122240, 2), (122239, 4), (62720, 4), (62719, 8), (33536, 8), (33535, None),
])
def test_devices_needed_for_inference(usable: int, n: int | None) -> None:
    assert devices_needed(parse(DENSE), Scenario(context=8, overhead_bytes=0), PRECISIONS, usable) == n


# Per-GPU training peaks of DENSE at context 8 (T = 8), bf16 AdamW, no overhead:
#   n=1 (no ZeRO): optimizer step 20P = 2300160
#   n=2 ZeRO-3: step (2 + 2 + 4 + 8 + 4)P / 2 = 1150080 (ZeRO-2 would keep 2P weights whole: 1265088)
#   n=4 ZeRO-3: step 20P/4 = 575040 (forward 541536 and backward 557952 are lower)
@pytest.mark.parametrize("usable,n", [(2300160, 1), (2300159, 2), (1150080, 2), (1150079, 4)])
def test_devices_needed_for_training_uses_zero3(usable: int, n: int) -> None:
    s = Scenario(workload="train", context=8, overhead_bytes=0)
    assert devices_needed(parse(DENSE), s, PRECISIONS, usable) == n


def test_devices_needed_keeps_the_scenarios_zero_stage() -> None:
    # ZeRO-1 over 2 GPUs: weights 2P + gradients 2P whole, (4P + 8P + 4P)/2 partitioned: 12P = 1380096.
    # Over 4: 2P + 2P + 16P/4 = 8P = 920064.
    s = Scenario(workload="train", context=8, zero=1, gpus=2, overhead_bytes=0)
    assert devices_needed(parse(DENSE), s, PRECISIONS, 1380096) == 2
    assert devices_needed(parse(DENSE), s, PRECISIONS, 1380095) == 4


def test_devices_needed_skips_failing_scenarios() -> None:
    s = Scenario(workload="lora", lora_targets=("experts",), context=8)
    assert devices_needed(parse(DENSE), s, PRECISIONS, 10**15) is None


def test_longest_context_binary_search_edge() -> None:
    a = parse(DENSE)
    s = Scenario(overhead_bytes=0, batch=4)  # longest_context always measures one sequence
    # total(c) = 230016 + KV 128c + activations 1216c + 1024 = 231040 + 1344c.
    base = 231040
    assert longest_context(a, s, PRECISIONS, base + 1344 * 100) == 100
    assert longest_context(a, s, PRECISIONS, base + 1344 * 100 + 1343) == 100
    assert longest_context(a, s, PRECISIONS, base + 1344 * 100 - 1) == 99
    assert longest_context(a, s, PRECISIONS, base + 1343) == 0
    assert longest_context(a, s, PRECISIONS, 10**15) == 4096  # capped at max_position_embeddings
    nocap = parse({k: v for k, v in DENSE.items() if k != "max_position_embeddings"})
    assert longest_context(nocap, s, PRECISIONS, base + 1344 * 1_048_576) == 1_048_576
    assert longest_context(nocap, s, PRECISIONS, base + 1344 * 1_048_576 - 1) == 1_048_575
    assert longest_context(nocap, s, PRECISIONS, 10**15) == 1_048_576


def test_largest_batch_binary_search_edge() -> None:
    a = parse(DENSE)
    s = Scenario(context=8, overhead_bytes=0)
    # total(b) = 230016 + KV 1024b + activations 9728b + logits 1024b = 230016 + 11776b.
    assert largest_batch(a, s, PRECISIONS, 230016 + 11776 * 37) == 37
    assert largest_batch(a, s, PRECISIONS, 230016 + 11776 * 37 - 1) == 36
    assert largest_batch(a, s, PRECISIONS, 230016 + 11775) == 0
    assert largest_batch(a, s, PRECISIONS, 10**15) == 65_536
    assert largest_batch(a, s, PRECISIONS, 10**15, limit=100) == 100


# DENSE in GGUF q8_0 (ggml block_q8_0: 34 bytes per 32 weights; norms F32), context 16, no overhead:
#   per layer: matrices 40960 * 34/32 = 43520 + norms 128 * 4 = 512 -> 44032; KV per layer 2*2*8*16*2 = 1024.
#   token_embd 17408 + output 17408 + output_norm 256; KV (f16) 2048 in all.
#   compute buffer (activations) 1216*16 + 1024 = 20480.
@pytest.mark.parametrize("usable,layers,gpu,cpu", [
    (20480 + 45055, 0, 0, 123136 + 2048),
    (20480 + 45056, 1, 45056 + 20480, 123136 + 2048 - 45056),
    (20480 + 2 * 45056 - 1, 1, 45056 + 20480, 80128),
    (20480 + 2 * 45056, 2, 2 * 45056 + 20480, 123136 + 2048 - 2 * 45056),
])
def test_gguf_offload_layer_count(usable: int, layers: int, gpu: int, cpu: int) -> None:
    off = gguf_offload(parse(DENSE), Scenario(precision="q8_0", context=16, overhead_bytes=0), PRECISIONS, usable)
    assert (off.layers_on_gpu, off.total_layers, off.gpu_bytes, off.cpu_bytes) == (layers, 2, gpu, cpu)


def test_gguf_offload_rounds_the_per_layer_kv_cache_up() -> None:
    # 3 layers, the first sliding (window 16), context 17: KV elements 2*2*8 x (16 + 17 + 17) = 1600, f16 3200 B,
    # i.e. ceil(3200 / 3) = 1067 B per offloaded layer. Weights per layer 44032 (as above); total weights
    # 3 * 44032 + 2 * 17408 + 256 = 167168; compute buffer 1216*17 + 1024 = 21696.
    a = parse(DENSE, num_hidden_layers=3, sliding_window=16,
              layer_types=["sliding_attention", "full_attention", "full_attention"])
    s = Scenario(precision="q8_0", context=17, overhead_bytes=0)
    off = gguf_offload(a, s, PRECISIONS, 21696 + 3 * 45099)
    assert (off.layers_on_gpu, off.gpu_bytes, off.cpu_bytes) == (3, 21696 + 3 * 45099, 167168 + 3200 - 3 * 45099)
    assert gguf_offload(a, s, PRECISIONS, 21696 + 3 * 45099 - 1).layers_on_gpu == 2


@pytest.mark.xfail(strict=True, reason="gguf_offload never places the output matrix on the GPU; llama.cpp "
                   "offloads it (and output_norm) when -ngl exceeds the layer count, as the docstring says")
def test_gguf_offload_puts_the_output_layer_on_the_gpu_when_all_layers_fit() -> None:
    # ggml-org/llama.cpp a5410f046c01d01330c8a42f13b64a211fedf2c3, src/llama-model.cpp, load_tensors:
    # dev_input is always the CPU ("there is very little benefit to offloading the input layer"), and
    # dev_output = get_layer_buft_list(n_layer) is a GPU when n_gpu_layers >= n_layer + 1.
    off = gguf_offload(parse(DENSE), Scenario(precision="q8_0", context=16, overhead_bytes=0), PRECISIONS, 10**9)
    assert off.cpu_bytes == 17408  # token_embd only


def test_decode_tokens_per_second_bytes_read() -> None:
    a = parse(DENSE)
    # bf16, one GPU: weights minus the token embedding 230016 - 32768 = 197248, plus the KV cache at context
    # 16: 2048 -> 199296 bytes per token.
    e = estimate(a, Scenario(context=16), PRECISIONS)
    assert decode_tokens_per_second(a, e, PRECISIONS, 199296 * 1000) == 1000.0
    # The bound is for one sequence: the scenario's batch does not enter the bytes read.
    e4 = estimate(a, Scenario(context=16, batch=4), PRECISIONS)
    assert decode_tokens_per_second(a, e4, PRECISIONS, 199296 * 1000) == 1000.0
    # Two GPUs read in parallel: ceil(197248 / 2) = 98624 + KV with 1 KV head per GPU 1024 -> 99648.
    e2 = estimate(a, Scenario(context=16, gpus=2), PRECISIONS)
    assert decode_tokens_per_second(a, e2, PRECISIONS, 99648 * 500) == 500.0
    # MoE with 3 of 4 experts per token: experts 2 x 24576 x 2 B = 98304, of which 1/4 idle = 24576;
    # read 206464 - 32768 - 24576 = 149120, plus KV 2048.
    moe = parse(MOE, num_experts_per_tok=3)
    em = estimate(moe, Scenario(context=16), PRECISIONS)
    assert decode_tokens_per_second(moe, em, PRECISIONS, 151168 * 100) == 100.0


@pytest.mark.xfail(strict=True, reason="with tied embeddings the token_embd matrix is also the output head, "
                   "which every decoded token reads in full; decode_tokens_per_second subtracts it")
def test_decode_reads_a_tied_output_head() -> None:
    # llama.cpp (src/llama-model.cpp, load_tensors): "if output is NULL, init from the input tok embed"
    # (TENSOR_DUPLICATED), used by the output mul_mat; Hugging Face ties lm_head.weight to embed_tokens.weight.
    a = parse(DENSE, tie_word_embeddings=True)
    e = estimate(a, Scenario(context=16), PRECISIONS)
    # weights (115008 - 16384) * 2 = 197248, all read (the head is the embedding), plus KV 2048.
    assert decode_tokens_per_second(a, e, PRECISIONS, 1e9) <= 1e9 / (197248 + 2048)


# --- rules of thumb ------------------------------------------------------------------------------

def test_rules_of_thumb_numbers_and_sources() -> None:
    inf = {r.id: r for r in rules_of_thumb(1000, Fraction(2), "inference")}
    assert set(inf) == {"params-x-bytes", "x1.2"}
    assert (inf["params-x-bytes"].low_bytes, inf["params-x-bytes"].high_bytes) == (2000, 2000)
    # EleutherAI, Transformer Math 101: inference memory ~ 1.2 x the model's weights.
    assert (inf["x1.2"].low_bytes, inf["x1.2"].high_bytes) == (2400, 2400)
    assert "huggingface.co/docs/transformers/model_memory_anatomy" in inf["params-x-bytes"].source
    assert "blog.eleuther.ai/transformer-math" in inf["x1.2"].source
    tr = {r.id: r for r in rules_of_thumb(1000, Fraction(2), "train")}
    assert set(tr) == {"params-x-bytes", "x1.2", "train-4-6x", "16-bytes"}
    assert (tr["train-4-6x"].low_bytes, tr["train-4-6x"].high_bytes) == (8000, 12000)
    # ZeRO (arXiv 1910.02054) section 3.1: mixed-precision Adam holds 2 + 2 + 12 = 16 bytes per parameter.
    assert (tr["16-bytes"].low_bytes, tr["16-bytes"].high_bytes) == (16000, 16000)
    assert "arxiv.org/abs/1910.02054" in tr["16-bytes"].source
    assert len(rules_of_thumb(1000, Fraction(2), "qlora")) == 4


def test_rules_of_thumb_round_down_to_whole_bytes() -> None:
    r = {x.id: x for x in rules_of_thumb(1001, Fraction(1, 2), "lora")}
    assert r["params-x-bytes"].low_bytes == 500       # 500.5 -> 500
    assert r["x1.2"].low_bytes == 600                 # 500 * 6/5
    assert r["16-bytes"].low_bytes == 16016           # of the parameters, not of the weights
    seven = {x.id: x for x in rules_of_thumb(7, Fraction(1), "inference")}
    assert seven["x1.2"].low_bytes == 8               # 8.4 -> 8


@pytest.mark.parametrize("pid,nominal", [
    ("bf16", Fraction(2)), ("fp32", Fraction(4)),
    ("q8_0", Fraction(34, 32)),   # block_q8_0: 34 bytes per 32 weights -> 8.5 bits
    ("q4_k_m", Fraction(144, 256)),  # block_q4_K: 2 fp16 + 12 scale bytes + 128 nibble bytes per 256
    ("nf4", Fraction(1, 2)),      # 4-bit NormalFloat
    ("mxfp4", Fraction(17, 32)),  # OCP MX: 32 FP4 values + one 8-bit scale = 4.25 bits
])
def test_nominal_bytes_per_parameter(pid: str, nominal: Fraction) -> None:
    assert PRECISIONS.precision(pid).bytes_per_param_nominal == nominal
