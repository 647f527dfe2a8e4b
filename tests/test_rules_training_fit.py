"""Rule tests for generator/estimate/training.py, scenario.py, fit.py and rules.py: optimizer states, ZeRO,
LoRA/QLoRA, the training phases, tensor-parallel weights, scenario validation, device fit and the rules of thumb.

Every expected value is derived by hand in the test body from the config values (tiny synthetic configs) or
taken from a cited publication or library source.

The DENSE config used throughout (llama, h=64, 8 heads of 8, 2 KV heads, I=160, V=256, 2 layers, untied):
  token_embd 256*64 = 16384; per layer q 64*64 = 4096, k 16*64 = 1024, v 1024, o 4096, gate/up/down 3*160*64
  = 30720, two norms 128 -> 41088; output_norm 64; lm_head 16384.
  P = 16384 + 2*41088 + 64 + 16384 = 115008 parameters; bf16: 230016 bytes, of which norms (2*128 + 64)*2 = 640.
Its inference activations per token (see tests/test_rules_memory.py): layer peak 1216 bytes, logits 256*(2 + 4)
= 1536 per kept position (the bf16 lm_head output and generate's fp32 copy of it); its KV cache 2 layers x 2 x 2
heads x 8 x 2 bytes = 128 bytes per token.
PRECISIONS is parsed from data/precisions.yaml alone, so it has no runtime profiles: the estimator's generic
defaults apply (whole prompt in one pass, adamw_torch with one foreach temporary, recipe mixed, 1 GiB overhead).
Its training activations (flash, no dropout) per token: 2144 per layer, 2*64*2 + 256*10 = 2816 outside.
"""

from __future__ import annotations

from dataclasses import replace
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
from generator.estimate.runtime import parse_runtime_catalog
from generator.estimate.training import (
    OPTIMIZER_ALIASES, OPTIMIZER_SPECS, full_training_states, lora_modules_per_layer, lora_parameters,
    lora_saved_bytes, lora_targets, optimizer_state_bytes, step_temporary_bytes, zero_share,
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


@pytest.mark.parametrize("opt,copies", [("adamw", 1), ("sgd", 1), ("lion", 0), ("adafactor", 1), ("adamw_8bit", 0)])
def test_step_temporaries(opt: str, copies: int) -> None:
    # PyTorch's foreach implementations hold intermediates "roughly the size of the parameters" during step()
    # (torch.optim documentation, "Algorithms" / foreach); bitsandbytes' 8-bit and 32-bit (Lion32bit) kernels
    # update the parameters and states in place.
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
    # peft's default fp32 adapters (autocast_adapter_dtype=True) over the bf16 base: weights 2P + 4 B per adapter
    # parameter; gradients in the adapters' dtype, 4 B; no master copy; AdamW's exp_avg and exp_avg_sq are
    # zeros_like(param) (pytorch/pytorch 5c4886908584029761b579af026dcfb627c84070, torch/optim/adam.py L177-L184),
    # so 2 x 4 B.
    assert e.scenario.adapter_dtype == "fp32"
    assert e.weights_bytes == 230016 + 4 * tr == 369280
    assert e.gradient_bytes == 4 * tr == 139264
    assert e.optimizer_bytes == 8 * tr == 278528
    # Activations, T = 8: per layer 2144*8 = 17152 plus what the fp32 adapters save (peft 5d602fdbff04c33c1c4de55
    # cda9d4ae1d7cb7e40, src/peft/tuners/lora/layer.py L1049-L1074: x = self._cast_input_dtype(x, lora_A.weight.dtype),
    # then lora_B(lora_A(x))): for each of the 7 adapted matrices a float32 copy of its input, 8 x d_in x 4, with
    # d_in 64 for q, k, v, o, gate, up and 160 for down: 8 x (6*64 + 160) x 4 = 17408, and the rank-16 projection
    # lora_B saves, 7 x 8 x 16 x 4 = 3584. Per layer 17152 + 17408 + 3584 = 38144; outside 2816*8 = 22528.
    assert e.activation_bytes == 2 * 38144 + 22528 == 98816
    fwd, bwd, step = e.phases
    assert fwd.parts == {"weights": 369280, "optimizer": 278528, "gradients": 0, "activations": 98816, "overhead": 0}
    # Backward walk, gradients by each layer's share of the 14 adapted matrices (7 each): start 0 + 98816; after
    # layer 1, 69632 + 38144 + 2*1*8*64*2 (2048) = 109824; after layer 0, 139264 + 2048 = 141312, the largest.
    assert bwd.parts == {"weights": 369280, "optimizer": 278528, "gradients": 139264, "activations": 2048,
                         "overhead": 0}
    # Step: adamw_torch's foreach step makes one parameter-sized list (exp_avg_sq_sqrt = torch._foreach_sqrt,
    # torch/optim/adam.py L782-L799) in the adapters' fp32: 34816 x 4.
    assert step.parts == {"weights": 369280, "optimizer": 278528 + 139264, "gradients": 139264, "activations": 0,
                          "overhead": 0}
    assert e.peak_phase == "optimizer_step" and e.total_bytes == 369280 + 417792 + 139264 == 926336
    # The adapters see every token of the micro-batch: 2 sequences of 4 are the same 8 tokens (the flash LSE
    # b*heads*s*4 is also the same, 2*8*4*4 = 1*8*8*4).
    e2 = estimate(a, Scenario(workload="lora", context=4, batch=2, overhead_bytes=0), PRECISIONS)
    assert e2.activation_bytes == 98816


def test_lora_zero_partitions_and_no_zero3_gather() -> None:
    a = parse(DENSE)
    tr = 34816
    z3 = estimate(a, Scenario(workload="lora", context=8, zero=3, gpus=2, overhead_bytes=0), PRECISIONS)
    assert z3.weights_bytes == 230016 // 2 + 4 * tr // 2 == 184640
    assert z3.gradient_bytes == 4 * tr // 2 and z3.optimizer_bytes == 8 * tr // 2
    # The frozen base is not gathered layer by layer for LoRA here: activations as without ZeRO.
    assert z3.activation_bytes == 98816
    assert z3.phases[0].parts["activations"] == 98816
    z2 = estimate(a, Scenario(workload="lora", context=8, zero=2, gpus=2, overhead_bytes=0), PRECISIONS)
    assert z2.weights_bytes == 230016 + 4 * tr  # stage 2 keeps weights whole
    assert z2.gradient_bytes == 2 * tr          # but splits gradients: 4 B x tr / 2


def test_qlora_defaults_and_states() -> None:
    a = parse(DENSE)
    s = Scenario(workload="qlora").resolved(PRECISIONS)
    # QLoRA (Dettmers et al. 2023, arXiv 2305.14314): NF4 base, paged 8-bit AdamW (HF optim "paged_adamw_8bit");
    # rank 64 (their setup); their qlora.py casts the LoRA layers to bf16.
    assert (s.precision, s.optimizer, s.lora_rank, s.adapter_dtype) == ("nf4", "paged_adamw_8bit", 64, "bf16")
    e = estimate(a, Scenario(workload="qlora", context=8, overhead_bytes=0), PRECISIONS)
    tr = 64 * 2 * 1088
    assert e.trainable_params == tr == 139264
    # bf16 adapters trained directly: no fp32 master; 8-bit AdamW 2 + 8/256 B: 278528 + 4352.
    assert e.optimizer_bytes == 2 * tr + tr // 32 == 282880
    assert e.gradient_bytes == 2 * tr
    assert e.phases[2].parts["optimizer"] == 282880  # bitsandbytes updates in place: no step temporaries
    # Adapters are 2 B each on top of the NF4 base: rank 64 vs rank 8 differ by 2 * (139264 - 17408).
    e8 = estimate(a, Scenario(workload="qlora", lora_rank=8, context=8, overhead_bytes=0), PRECISIONS)
    assert e.weights_bytes - e8.weights_bytes == 2 * (tr - 17408)
    # adamw (adamw_torch): states zeros_like the bf16 adapters, 2 x 2 B, and one bf16 foreach temporary, 2 B.
    adam = estimate(a, Scenario(workload="qlora", optimizer="adamw", context=8, overhead_bytes=0), PRECISIONS)
    assert adam.scenario.optimizer == "adamw_torch"
    assert adam.optimizer_bytes == 4 * tr
    assert adam.phases[2].parts["optimizer"] == 4 * tr + 2 * tr == 835584


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
    # weights 230016 + KV 128*8 + activations 1216*8 + logits 1536 + overhead 1 GiB (no runtime catalog: the
    # generic DEFAULT_OVERHEAD_BYTES).
    assert e.phases[0].parts == {"weights": 230016, "kv_cache": 1024, "activations": 11264, "overhead": GIB}
    assert e.scenario.overhead_bytes == GIB
    assert DEFAULT_OVERHEAD_BYTES == GIB == 2**30
    assert e.total_bytes == 242304 + GIB


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
    # No runtime catalog: no runtime, the whole prompt in one pass, the generic 1 GiB overhead.
    assert (inf.runtime, inf.prefill_chunk, inf.overhead_bytes, inf.recipe, inf.adapter_dtype) == \
        (None, None, GIB, None, None)
    tr = Scenario(workload="train").resolved(PRECISIONS)
    # Generic training defaults: PyTorch AdamW with its foreach step (HF "adamw_torch"), the mixed recipe.
    assert (tr.optimizer, tr.lora_rank, tr.recipe, tr.adapter_dtype) == ("adamw_torch", None, "mixed", None)
    assert Scenario(workload="train", precision="fp32").resolved(PRECISIONS).recipe == "fp32"
    assert Scenario(workload="train", precision="fp16").resolved(PRECISIONS).recipe == "mixed"
    lora = Scenario(workload="lora").resolved(PRECISIONS)
    # peft keeps adapters in fp32 (LoraConfig autocast_adapter_dtype=True); LoRA has no recipe.
    assert (lora.precision, lora.optimizer, lora.lora_rank, lora.adapter_dtype, lora.recipe) == \
        ("bf16", "adamw_torch", 16, "fp32", None)
    q = Scenario(workload="qlora", lora_rank=8, optimizer="sgd").resolved(PRECISIONS)
    assert (q.lora_rank, q.optimizer, q.adapter_dtype) == (8, "sgd", "bf16")
    assert Scenario(workload="qlora", adapter_dtype="fp32").resolved(PRECISIONS).adapter_dtype == "fp32"
    assert Scenario(workload="lora", adapter_dtype="bf16").resolved(PRECISIONS).adapter_dtype == "bf16"


@pytest.mark.parametrize("kw", [
    {"context": 1}, {"context": 10_000_000}, {"batch": 1_000_000}, {"gpus": 100_000},
    {"prefill_chunk": 1}, {"prefill_chunk": 10_000_000}, {"overhead_bytes": 0}, {"overhead_bytes": 1024 * GIB},
    {"workload": "train", "gradient_accumulation": 1_000_000}, {"workload": "train", "precision": "fp32"},
    {"workload": "train", "precision": "fp16"}, {"workload": "train", "zero": 1, "gpus": 2},
    {"workload": "train", "gpus": 2}, {"workload": "lora", "gpus": 4},  # data parallel without ZeRO
    {"workload": "train", "recipe": "amp"}, {"workload": "train", "recipe": "pure", "precision": "fp16"},
    {"workload": "train", "recipe": "fp32", "precision": "fp32"},
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


# Per-GPU inference totals of DENSE at context 8, batch 1, bf16, no overhead (hand-derived); the last-position
# logits 256 x (2 + 4) = 1536 B are split over the GPUs (vocab-parallel lm_head):
#   n=1: 230016 + KV 1024 + activations 9728 + 1536 = 242304
#   n=2: 640 + 114688 + KV 512 (1 KV head) + layer peak 2048 + 3*8*80*2 + logits 768 = 122496
#   n=4: 640 + 57344 + 512 + 2048 + 3*8*40*2 + 384 = 62848
#   n=8: 640 + 28672 + 512 + 2048 + attention 8*(1 + 2)*8*2 + 8*8*2 + 1024 = 1536 (> MLP 960) + 192 = 33600
#   n=16 would be 640 + 14336 + 512 + 2048 + 1536 + 96 = 19168, but 8 heads do not split over 16 GPUs.
@pytest.mark.parametrize("usable,n", [
    (242304, 1), (242303, 2), (122496, 2), (122495, 4), (62848, 4), (62847, 8), (33600, 8), (33599, None),
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
    # total(c) = 230016 + KV 128c + activations 1216c + logits 1536 = 231552 + 1344c.
    base = 231552
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
    # total(b) = 230016 + KV 1024b + activations 9728b + logits 1536b = 230016 + 12288b.
    assert largest_batch(a, s, PRECISIONS, 230016 + 12288 * 37) == 37
    assert largest_batch(a, s, PRECISIONS, 230016 + 12288 * 37 - 1) == 36
    assert largest_batch(a, s, PRECISIONS, 230016 + 12287) == 0
    assert largest_batch(a, s, PRECISIONS, 10**15) == 65_536
    assert largest_batch(a, s, PRECISIONS, 10**15, limit=100) == 100


# DENSE in GGUF q8_0 (ggml block_q8_0: 34 bytes per 32 weights; norms F32), context 16, no overhead:
#   per layer: matrices 40960 * 34/32 = 43520 + norms 128 * 4 = 512 -> 44032; KV per layer 2*2*8*16*2 = 1024.
#   token_embd 17408 + output 17408 + output_norm 256; KV (f16) 2048 in all.
#   compute buffer (activations) 1216*16 + logits 256*(2 + 4) = 20992.
@pytest.mark.parametrize("usable,layers,gpu,cpu", [
    (20992 + 45055, 0, 0, 123136 + 2048),
    (20992 + 45056, 1, 45056 + 20992, 123136 + 2048 - 45056),
    (20992 + 2 * 45056 - 1, 1, 45056 + 20992, 80128),
    (20992 + 2 * 45056, 2, 2 * 45056 + 20992, 123136 + 2048 - 2 * 45056),
])
def test_gguf_offload_layer_count(usable: int, layers: int, gpu: int, cpu: int) -> None:
    off = gguf_offload(parse(DENSE), Scenario(precision="q8_0", context=16, overhead_bytes=0), PRECISIONS, usable)
    assert (off.layers_on_gpu, off.total_layers, off.gpu_bytes, off.cpu_bytes) == (layers, 2, gpu, cpu)


def test_gguf_offload_rounds_the_per_layer_kv_cache_up() -> None:
    # 3 layers, the first sliding (window 16), context 17: KV elements 2*2*8 x (16 + 17 + 17) = 1600, f16 3200 B,
    # i.e. ceil(3200 / 3) = 1067 B per offloaded layer. Weights per layer 44032 (as above); total weights
    # 3 * 44032 + 2 * 17408 + 256 = 167168; compute buffer 1216*17 + 1536 = 22208.
    a = parse(DENSE, num_hidden_layers=3, sliding_window=16,
              layer_types=["sliding_attention", "full_attention", "full_attention"])
    s = Scenario(precision="q8_0", context=17, overhead_bytes=0)
    off = gguf_offload(a, s, PRECISIONS, 22208 + 3 * 45099)
    assert (off.layers_on_gpu, off.gpu_bytes, off.cpu_bytes) == (3, 22208 + 3 * 45099, 167168 + 3200 - 3 * 45099)
    assert gguf_offload(a, s, PRECISIONS, 22208 + 3 * 45099 - 1).layers_on_gpu == 2


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


# --- optimizers by Hugging Face name (TrainingArguments.optim) ----------------------------------------
#
# PyTorch AdamW (pytorch/pytorch 5c4886908584029761b579af026dcfb627c84070, torch/optim/adam.py L177-L184):
#   exp_avg and exp_avg_sq = torch.zeros_like(p): two states in the dtype of the values updated (4 B for an fp32
#   master or fp32 adapters, 2 B for bf16 ones). The foreach step (adamw_torch) allocates
#   exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs) (L782-L799), one parameter-sized list; fused=True
#   (adamw_torch_fused) runs one kernel without it.
# bitsandbytes 8-bit Adam (adamw_bnb_8bit, paged_adamw_8bit): uint8 state1 and state2 plus, per 256-value block,
#   an fp32 absmax for each (bitsandbytes 51294d909e914f80d2f2c85f9e9229dd4386ef85, bitsandbytes/optim/optimizer.py,
#   Optimizer2State.init_state): 2 + 8/256 B whatever the parameter dtype; updated in place.
# bitsandbytes Lion32bit (lion_32bit): Optimizer1State with optim_bits=32, state1 = get_state_buffer(p,
#   dtype=torch.float32): 4 B whatever the parameter dtype; updated in place.
# torch.optim.SGD with momentum: one momentum_buffer cloned from the gradient (the parameter's dtype); foreach adds
#   one temporary. Adafactor: factored second moment in the gradient's dtype (see the Adafactor test above).
# (name, state bytes per parameter for 4-byte values, for 2-byte values, step temporaries), on 2560 parameters
# (a multiple of 256, so the 8-bit absmax is exact: 2 x 2560 + 2 x 4 x 10 = 5200).
HF_OPTIMIZERS = [
    ("adamw_torch_fused", 8 * 2560, 4 * 2560, 0),
    ("adamw_torch", 8 * 2560, 4 * 2560, 1),
    ("adamw_bnb_8bit", 5200, 5200, 0),
    ("paged_adamw_8bit", 5200, 5200, 0),
    ("adafactor", 0, 0, 1),  # a bare count has no shapes (see the tensor-list case below)
    ("sgd", 4 * 2560, 2 * 2560, 1),
    ("lion_32bit", 4 * 2560, 4 * 2560, 0),
]


def test_hf_optimizer_table_covers_every_spec() -> None:
    assert sorted(name for name, *_ in HF_OPTIMIZERS) == sorted(OPTIMIZER_SPECS)


@pytest.mark.parametrize("name,fp32_states,bf16_states,temps", HF_OPTIMIZERS)
def test_hf_optimizer_states_and_step_temporaries(name: str, fp32_states: int, bf16_states: int, temps: int) -> None:
    assert optimizer_state_bytes(name, params=2560, param_bytes=4) == fp32_states
    assert optimizer_state_bytes(name, params=2560) == fp32_states  # param_bytes defaults to 4
    assert optimizer_state_bytes(name, params=2560, param_bytes=2) == bf16_states
    # Temporaries are parameter-sized, in the dtype the update runs in.
    assert step_temporary_bytes(name, 1000, 4) == temps * 4000
    assert step_temporary_bytes(name, 1000, 2) == temps * 2000
    # Accepted by a scenario under its own name.
    assert Scenario(workload="train", optimizer=name).resolved(PRECISIONS).optimizer == name


def test_factored_and_momentum_states_follow_the_value_dtype_over_tensors() -> None:
    tensors = [Tensor("w.weight", "mlp", (10, 20)), Tensor("b.bias", "mlp", (10,))]
    # Adafactor: rows + columns of the matrix, the whole vector: (10 + 20) + 10 = 40 values.
    assert optimizer_state_bytes("adafactor", tensors, param_bytes=4) == 160
    assert optimizer_state_bytes("adafactor", tensors, param_bytes=2) == 80
    # AdamW over the 210 values, two states; SGD one; Lion always fp32; 8-bit Adam ceil(210 * (2 + 1/32)) = 427.
    assert optimizer_state_bytes("adamw_torch_fused", tensors, param_bytes=2) == 210 * 4
    assert optimizer_state_bytes("sgd", tensors, param_bytes=2) == 210 * 2
    assert optimizer_state_bytes("lion_32bit", tensors, param_bytes=2) == 210 * 4
    assert optimizer_state_bytes("adamw_bnb_8bit", tensors, param_bytes=2) == 427  # 426.5625 -> 427
    assert optimizer_state_bytes("adafactor", parse(DENSE).tensors, param_bytes=2) == 3136 * 2  # see above


# The ids this project used before, kept as aliases of the HF names.
@pytest.mark.parametrize("alias,name,states,temps", [
    ("adamw", "adamw_torch", 8 * 2560, 1),
    ("adamw_8bit", "adamw_bnb_8bit", 5200, 0),
    ("lion", "lion_32bit", 4 * 2560, 0),
])
def test_optimizer_aliases(alias: str, name: str, states: int, temps: int) -> None:
    assert OPTIMIZER_ALIASES[alias] == name
    assert Scenario(workload="train", optimizer=alias).resolved(PRECISIONS).optimizer == name
    assert optimizer_state_bytes(alias, params=2560, param_bytes=2) == optimizer_state_bytes(name, params=2560,
                                                                                             param_bytes=2)
    assert optimizer_state_bytes(alias, params=2560) == states
    assert step_temporary_bytes(alias, 1000, 4) == temps * 4000


def test_optimizer_alias_table_is_complete() -> None:
    assert set(OPTIMIZER_ALIASES) == {"adamw", "adamw_8bit", "lion"}


# --- training recipes ------------------------------------------------------------------------------------
#
# amp: Trainer bf16=True over a model loaded in fp32: fp32 weights and gradients (4 + 4), no master, AdamW states
#   zeros_like(fp32 param) 8 B, the foreach temporary 4 B.
# mixed: ZeRO's recipe (Rajbhandari et al. 2019, arXiv 1910.02054, section 3.1): 16-bit weights and gradients,
#   fp32 master 4 B and fp32 states 8 B; the update runs on the fp32 master, so the temporary is 4 B.
# pure: a bf16 model trained as is: 2 + 2, states zeros_like(bf16 param) 2 x 2 B, temporary 2 B.
# fp32: 4 + 4, states 8 B, temporary 4 B.
# (recipe, weights, gradients, master, AdamW states, step temporary) in bytes per parameter.
RECIPES_BY_HAND = [
    ("amp", 4, 4, 0, 8, 4),
    ("mixed", 2, 2, 4, 8, 4),
    ("pure", 2, 2, 0, 4, 2),
    ("fp32", 4, 4, 0, 8, 4),
]


@pytest.mark.parametrize("recipe,w,g,master,opt,temp", RECIPES_BY_HAND)
def test_full_training_states_by_recipe(recipe: str, w: int, g: int, master: int, opt: int, temp: int) -> None:
    st = full_training_states(1000, "adamw_torch", zero=0, gpus=1, recipe=recipe)
    assert (st.weights, st.gradients, st.master_weights, st.optimizer, st.step_temporary) == \
        (w * 1000, g * 1000, master * 1000, opt * 1000, temp * 1000)
    # ZeRO-3 over 4 GPUs partitions every one of them.
    z3 = full_training_states(1000, "adamw_torch", zero=3, gpus=4, recipe=recipe)
    assert (z3.weights, z3.gradients, z3.master_weights, z3.optimizer, z3.step_temporary) == \
        (w * 250, g * 250, master * 250, opt * 250, temp * 250)


def test_full_training_states_default_recipe() -> None:
    # No recipe: mixed, or fp32 when mixed_precision=False.
    mixed = full_training_states(1000, "adamw_torch", zero=0, gpus=1)
    assert (mixed.weights, mixed.master_weights, mixed.optimizer) == (2000, 4000, 8000)
    fp32 = full_training_states(1000, "adamw_torch", mixed_precision=False, zero=0, gpus=1)
    assert (fp32.weights, fp32.master_weights, fp32.optimizer) == (4000, 0, 8000)
    # A pure recipe with Lion keeps bitsandbytes' fp32 momentum: 4 B, and no temporary.
    lion = full_training_states(1000, "lion_32bit", zero=0, gpus=1, recipe="pure")
    assert (lion.weights, lion.optimizer, lion.step_temporary) == (2000, 4000, 0)


@pytest.mark.parametrize("recipe,w,g,master,opt,temp", RECIPES_BY_HAND)
def test_training_estimate_by_recipe(recipe: str, w: int, g: int, master: int, opt: int, temp: int) -> None:
    precision = "fp32" if recipe == "fp32" else "bf16"
    e = estimate(parse(DENSE), Scenario(workload="train", precision=precision, recipe=recipe, context=8,
                                        overhead_bytes=0), PRECISIONS)
    assert e.scenario.recipe == recipe
    assert (e.weights_bytes, e.gradient_bytes, e.optimizer_bytes) == (w * P, g * P, (master + opt) * P)
    # Only amp makes autocast's 16-bit weight copies: per layer 2 x 40960 = 81920 saved with the layer, the head
    # 2 x 16384 = 32768 (see the amp tests below): 2*(17152 + 81920) + 22528 + 32768 = 253440 against 7104*8.
    assert e.phases[0].parts["activations"] == (253440 if recipe == "amp" else 7104 * 8)
    assert e.weights_by_type == {"bf16" if w == 2 else "f32": w * P}
    step = e.phases[2]
    assert step.parts == {"weights": w * P, "optimizer": (master + opt + temp) * P, "gradients": g * P,
                          "activations": 0, "overhead": 0}


def test_fp16_training_recipes() -> None:
    # fp16 weights: mixed stores 2-byte fp16 weights; pure keeps the AdamW states in fp16 (zeros_like).
    e = estimate(parse(DENSE), Scenario(workload="train", precision="fp16", recipe="pure", context=8,
                                        overhead_bytes=0), PRECISIONS)
    assert (e.weights_bytes, e.optimizer_bytes) == (2 * P, 4 * P)
    assert e.weights_by_type == {"f16": 2 * P}


# --- data parallelism without ZeRO --------------------------------------------------------------------

def test_data_parallel_without_zero_keeps_the_full_states_per_gpu() -> None:
    # Plain DDP: every GPU holds the whole model, its gradients and optimizer states and runs its own micro-batch,
    # so the per-GPU figures are those of one GPU: step 2P + 12P + 4P + 2P = 20P (test above).
    e = estimate(parse(DENSE), Scenario(workload="train", gpus=4, context=8, overhead_bytes=0), PRECISIONS)
    assert (e.scenario.gpus, e.scenario.zero, e.scenario.recipe) == (4, 0, "mixed")
    assert (e.weights_bytes, e.gradient_bytes, e.optimizer_bytes) == (2 * P, 2 * P, 12 * P)
    assert e.activation_bytes == 7104 * 8
    assert e.total_bytes == 20 * P == 2300160
    assert any("Data parallelism over 4 GPUs" in x for x in e.assumptions)
    # LoRA likewise: the single-GPU figures of test_lora_estimate_states_and_phases.
    lora = estimate(parse(DENSE), Scenario(workload="lora", gpus=2, context=8, overhead_bytes=0), PRECISIONS)
    assert (lora.weights_bytes, lora.gradient_bytes, lora.optimizer_bytes) == (369280, 139264, 278528)
    assert lora.total_bytes == 926336


# --- LoRA adapter dtype -----------------------------------------------------------------------------
#
# MOE, rank 4 on attention (q (64, 64), k (16, 64), v (16, 64), o (64, 64)) and the stacked experts (gate and up
# (4, 32, 64), down (4, 64, 32)): per layer 4 x (128 + 80 + 80 + 128) = 1664 attention + 4 experts x 4 x 3 x 96
# = 4608 expert adapter parameters; 2 layers: trainable 2 x 6272 = 12544. Base bf16 2 x 103232 = 206464.
# Saved per layer, T = 8 tokens (peft layer.py L1049-L1074: lora_A saves x cast to the adapter dtype, lora_B the
# rank-r projection), expert rows T x top-k = 16 (each routed token passes through 2 experts' adapters):
#   fp32 adapters: input copies 8 x 64 x 4 x 4 matrices = 8192, projections 4 x 8 x 4 x 4 = 512;
#                  experts 16 x (64 + 64 + 32) x 4 = 10240 and 3 x 16 x 4 x 4 = 768 -> 19712.
#   bf16 adapters (the activation dtype): no copy, projections 4 x 8 x 4 x 2 + 3 x 16 x 4 x 2 = 256 + 384 = 640.
# The base layer saves 1648 per token (tests/test_rules_memory.py, 52736 for T = 32): 13184 at T = 8; outside
# the layers 2*8*64*2 + 8*256*10 = 22528.

def test_lora_saved_bytes_by_adapter_dtype() -> None:
    moe = parse(MOE)
    groups = ("attention", "mlp", "experts")
    # Attention, fp32 adapters, T = 8: the fp32 input copies 8 x (64 + 64 + 64 + 64) x 4 = 8192 and the rank-4
    # projections 4 x 8 x 4 x 4 = 512. The stacked experts (3 x (4, 32, 64) = 24576 weights per layer) are one
    # 3-D parameter each, which peft adapts through target_parameters (ParamWrapper parametrizes W + B A), so
    # their merged bf16 weights are saved whole, 24576 x 2 = 49152, whatever the tokens and the adapter dtype.
    assert lora_saved_bytes(moe, 4, groups, 8, 4) == 8192 + 512 + 49152 == 57856
    assert lora_saved_bytes(moe, 4, groups, 8, 2) == 4 * 8 * 4 * 2 + 49152 == 49408
    assert lora_saved_bytes(moe, 4, ("experts",), 8, 4) == 49152
    assert lora_saved_bytes(parse(MOE, num_experts_per_tok=3), 4, ("experts",), 8, 4) == 49152  # top-k irrelevant
    # The copy is skipped when the adapters are in the activation dtype: fp32 adapters over fp32 activations;
    # the merged expert weights are then fp32: 24576 x 4.
    assert lora_saved_bytes(moe, 4, groups, 8, 4, a=4) == 4 * 8 * 4 * 4 + 24576 * 4 == 98816
    # DENSE, rank 16, T = 8 (as in test_lora_estimate_states_and_phases): 17408 + 3584 fp32, 7 x 8 x 16 x 2 bf16.
    assert lora_saved_bytes(parse(DENSE), 16, groups, 8, 4) == 20992
    assert lora_saved_bytes(parse(DENSE), 16, groups, 8, 2) == 1792


def test_lora_saved_bytes_takes_the_largest_layer() -> None:
    ds = parse(DEEPSEEK)
    # DeepSeek, rank 4, T = 8, fp32. MLP only: layer 0 (dense: gate, up d_in 64, down d_in 96) 8 x 224 x 4 = 7168
    # + 3 x 8 x 4 x 4 = 384 -> 7552; layer 1 (shared expert: three d_in 64) 8 x 192 x 4 + 384 = 6528. Layer 0 wins.
    assert lora_saved_bytes(ds, 4, ("mlp",), 8, 4) == 7552
    # Everything: attention per layer (q d_in 64, kv_a 64, kv_b 16, o 64) 8 x 208 x 4 + 4 x 8 x 4 x 4 = 7168;
    # layer 0 7168 + 7552 = 14720; layer 1 7168 + 6528 + the merged routed experts (gate, up (4, 16, 64), down
    # (4, 64, 16): 12288 weights) x 2 = 24576 -> 38272. Layer 1 wins.
    assert lora_saved_bytes(ds, 4, ("attention", "mlp", "experts"), 8, 4) == 38272


@pytest.mark.parametrize("dtype,ab,extra", [("fp32", 4, 57856), ("bf16", 2, 49408)])
def test_lora_estimate_by_adapter_dtype(dtype: str, ab: int, extra: int) -> None:
    tr = 12544
    e = estimate(parse(MOE), Scenario(workload="lora", lora_rank=4, adapter_dtype=dtype, context=8,
                                      overhead_bytes=0), PRECISIONS)
    assert e.trainable_params == tr
    assert e.weights_bytes == 206464 + ab * tr
    assert e.gradient_bytes == ab * tr
    assert e.optimizer_bytes == 2 * ab * tr  # adamw_torch: zeros_like(adapter) x 2, no master copy
    assert e.activation_bytes == 2 * (13184 + extra) + 22528
    fwd, bwd, step = e.phases
    assert fwd.total == 206464 + ab * tr + 2 * ab * tr + 2 * (13184 + extra) + 22528
    # One foreach temporary in the adapters' dtype.
    assert step.parts["optimizer"] == 2 * ab * tr + ab * tr
    assert step.total == 206464 + ab * tr + 3 * ab * tr + ab * tr
    # The walk never beats its start here (after layer 1: ab*tr/2 + 13184 + extra + 2048 < all activations).
    assert (bwd.parts["gradients"], bwd.parts["activations"]) == (0, 2 * (13184 + extra) + 22528)


# --- full training: amp's autocast copies and a tied embedding's gradient sum ------------------------------
#
# DENSE with tie_word_embeddings: P = 115008 - 16384 = 98624 (41088 per layer, embedding 16384 + output_norm 64
# outside). Recipe amp, adamw_torch: weights 4P = 394496, gradients 4P = 394496 (4 x 41088 = 164352 per layer,
# 4 x 16448 = 65792 outside), AdamW states 8P = 788992, foreach temporary 4P = 394496.
# autocast keeps a 16-bit copy (2 B) of every weight a matmul uses: per layer q 4096 + k 1024 + v 1024 + o 4096
# + gate, up, down 3 x 10240 = 40960 -> 81920 B; the output head (the tied embedding) 256 x 64 -> 32768 B.
# Without checkpointing each layer saves its copies for backward (added to its saved activations); with full
# checkpointing the forward pass holds all of them (2 x 81920 + 32768 = 196608) and the backward's recomputation
# of one layer makes that layer's copies again (81920 on top of its workspace).
# The tied matrix gets a gradient from the head and one from the embedding lookup; autograd sums them into a new
# tensor at the end of backward: 4 B x 256 x 64 = 65536 on top of all the gradients.
# Backward walk steps keep 2*T*h*2 of working activations (2048 at T = 8, 16384 at T = 64, 65536 at T = 256).

def tied_amp(context: int, checkpointing: str) -> Any:
    return estimate(parse(DENSE, tie_word_embeddings=True),
                    Scenario(workload="train", recipe="amp", context=context, checkpointing=checkpointing,
                             overhead_bytes=0), PRECISIONS)


def test_amp_tied_no_checkpointing_small_batch_ends_backward_with_the_gradient_sum() -> None:
    e = tied_amp(8, "none")
    assert (e.params, e.weights_bytes, e.gradient_bytes, e.optimizer_bytes) == (98624, 394496, 394496, 788992)
    # Per layer 2144*8 + 81920 = 99072; outside 22528; all 220672, plus the head's copy 32768 in forward.
    assert e.activation_bytes == 220672
    fwd, bwd, step = e.phases
    assert fwd.parts == {"weights": 394496, "optimizer": 788992, "gradients": 0, "activations": 253440,
                         "overhead": 0}
    # Walk: start 65792 + 253440 = 319232; after layer 1 230144 + 99072 + 2048 = 331264; after layer 0
    # 394496 + 2048 = 396544; the end, all gradients plus the tied sum 394496 + 65536 = 460032, is the largest.
    assert bwd.parts == {"weights": 394496, "optimizer": 788992, "gradients": 460032, "activations": 0,
                         "overhead": 0}
    assert step.parts == {"weights": 394496, "optimizer": 788992 + 394496, "gradients": 394496,
                          "activations": 0, "overhead": 0}
    assert e.total_bytes == step.total == 1972480


def test_amp_tied_no_checkpointing_large_batch_peaks_at_the_start_of_backward() -> None:
    e = tied_amp(64, "none")
    # T = 64: per layer 2144*64 + 81920 = 219136; outside 2*64*64*2 + 64*256*10 = 180224; forward
    # 2*219136 + 180224 + 32768 = 651264.
    fwd, bwd, _ = e.phases
    assert fwd.parts["activations"] == 651264 and fwd.total == 394496 + 788992 + 651264
    # Walk: start 65792 + 651264 = 717056 beats after layer 1 (230144 + 219136 + 16384 = 465664), after layer 0
    # (394496 + 16384) and the end (460032).
    assert (bwd.parts["gradients"], bwd.parts["activations"]) == (65792, 651264)
    assert bwd.total == 394496 + 788992 + 65792 + 651264 == 1900544


def test_amp_tied_full_checkpointing() -> None:
    small = tied_amp(64, "full")
    # T = 64: each layer keeps its input 64*64*2 = 8192; the workspace (one layer rebuilt) 2144*64 = 137216;
    # outside 180224. Forward: 2*8192 + 180224 + all autocast copies 196608 = 393216.
    fwd, bwd, _ = small.phases
    assert fwd.parts["activations"] == 393216
    # Walk: start 65792 + (16384 + 180224 + 32768) = 295168; after layer 0 394496 + 16384 = 410880, with the
    # workspace of the layer being rebuilt (137216) and its autocast copies (81920): 629632, more than the end
    # (460032 of gradients with the tied sum), so the walk's point is the peak.
    assert (bwd.parts["gradients"], bwd.parts["activations"]) == (394496, 16384 + 137216 + 81920)
    large = tied_amp(256, "full")
    # T = 256: inputs 2 x 32768, outside 2*256*64*2 + 256*2560 = 720896, head copy 32768: start 819200 + 65792
    # = 884992 beats the end (460032); the workspace is one layer rebuilt, 2144*256 = 548864, with its autocast
    # copies 81920.
    fwd, bwd, _ = large.phases
    assert fwd.parts["activations"] == 65536 + 720896 + 196608
    assert (bwd.parts["gradients"], bwd.parts["activations"]) == (65792, 819200 + 548864 + 81920)
    assert bwd.total == 394496 + 788992 + 65792 + 1449984 == 2699264


@pytest.mark.parametrize("recipe,precision,end", [
    # tied DENSE, T = 8: all gradients (g x 98624) plus the sum g x 256 x 64; the walk's best point is all
    # gradients + 2048, which the sum (32768 or 65536) beats.
    ("amp", "bf16", 4 * 98624 + 65536), ("mixed", "bf16", 2 * 98624 + 32768),
    ("pure", "bf16", 2 * 98624 + 32768), ("fp32", "fp32", 4 * 98624 + 65536),
])
def test_tied_gradient_sum_in_the_recipes_gradient_dtype(recipe: str, precision: str, end: int) -> None:
    e = estimate(parse(DENSE, tie_word_embeddings=True),
                 Scenario(workload="train", precision=precision, recipe=recipe, context=8, overhead_bytes=0),
                 PRECISIONS)
    assert (e.phases[1].parts["gradients"], e.phases[1].parts["activations"]) == (end, 0)


def test_mixed_recipe_makes_no_autocast_copies_and_sums_tied_gradients_in_16_bit() -> None:
    # Mixed, tied, T = 8: weights 2P = 197248, gradients 197248 (82176 per layer, 32896 outside), master + states
    # 12P = 1183488; activations 2*17152 + 22528 = 56832, no copies.
    e = estimate(parse(DENSE, tie_word_embeddings=True),
                 Scenario(workload="train", context=8, overhead_bytes=0), PRECISIONS)
    fwd, bwd, _ = e.phases
    assert fwd.parts["activations"] == 56832
    # Walk: after layer 0 197248 + 2048 = 199296 < the end 197248 + 2 x 256 x 64 = 230016.
    assert (bwd.parts["gradients"], bwd.parts["activations"]) == (230016, 0)
    # Untied, the same walk ends at all gradients + 2048 (test_training_phases_small_batch_peaks_at_the_step).
    # ZeRO-2 over 2 GPUs partitions the sum with the gradients: 98624 + 16384 = 115008 > 98624 + 2048.
    z2 = estimate(parse(DENSE, tie_word_embeddings=True),
                  Scenario(workload="train", context=8, zero=2, gpus=2, overhead_bytes=0), PRECISIONS)
    assert (z2.phases[1].parts["gradients"], z2.phases[1].parts["activations"]) == (115008, 0)


# The end of backward (all gradients plus the tied sum) must be compared with the walk's best point WITH the
# recomputation workspace that point carries, or a larger walk point hides behind it.
def test_backward_end_does_not_hide_a_larger_walk_point_with_its_workspace() -> None:
    # Tied DENSE, mixed, full checkpointing, T = 32: after layer 0 the walk holds all gradients 197248, working
    # activations 2*32*64*2 = 8192 and one rebuilt layer 2144*32 = 68608 = 274048; the end of backward holds
    # 197248 + the tied sum 32768 = 230016. The backward phase must be the larger of the two.
    e = estimate(parse(DENSE, tie_word_embeddings=True),
                 Scenario(workload="train", context=32, checkpointing="full", overhead_bytes=0), PRECISIONS)
    bwd = e.phases[1]
    assert bwd.parts["gradients"] + bwd.parts["activations"] >= 197248 + 8192 + 68608


# --- scenario validation of the new fields ---------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {"workload": "train", "recipe": "bogus"},
    {"workload": "train", "recipe": "fp32"},                        # fp32 recipe needs fp32 weights
    {"workload": "train", "precision": "fp32", "recipe": "amp"},
    {"workload": "train", "precision": "fp32", "recipe": "mixed"},
    {"workload": "train", "precision": "fp32", "recipe": "pure"},
    {"recipe": "mixed"}, {"workload": "lora", "recipe": "amp"}, {"workload": "qlora", "recipe": "pure"},
    {"workload": "lora", "adapter_dtype": "fp16"}, {"workload": "qlora", "adapter_dtype": "int8"},
    {"adapter_dtype": "fp32"}, {"workload": "train", "adapter_dtype": "bf16"},
    {"runtime": "vllm"}, {"runtime": "transformers"}, {"workload": "train", "runtime": "deepspeed"},
])
def test_resolved_rejects_recipe_adapter_and_runtime(kw: dict[str, Any]) -> None:
    # PRECISIONS carries no runtime profiles, so no runtime name is known.
    with pytest.raises(ScenarioError):
        Scenario(**kw).resolved(PRECISIONS)


def test_runtime_needs_a_runtime_catalog() -> None:
    bare = replace(PRECISIONS, runtimes={})
    with pytest.raises(ScenarioError, match="no runtime catalog"):
        Scenario(runtime="vllm").resolved(bare)
    # With a catalog holding vLLM the same scenario resolves to it.
    rt = parse_runtime_catalog({"runtimes": {"vllm": {
        "label": "vLLM", "workloads": ["inference"], "formats": ["float"], "prefill_chunk": 8192,
        "kv_cache": {"default_type": "bf16", "block_tokens": 16}, "overhead_gib": 1}}})
    with_rt = replace(PRECISIONS, runtimes=rt)
    s = Scenario(runtime="vllm").resolved(with_rt)
    assert (s.runtime, s.prefill_chunk) == ("vllm", 8192)


def test_to_dict_reports_the_new_fields() -> None:
    a = parse(DENSE)
    inf = estimate(a, Scenario(context=8, prefill_chunk=4, all_logits=True), PRECISIONS).to_dict()
    assert (inf["runtime"], inf["recipe"], inf["adapter_dtype"], inf["prefill_chunk"], inf["all_logits"]) == \
        (None, None, None, 4, True)
    tr = estimate(a, Scenario(workload="train", recipe="pure", context=8), PRECISIONS).to_dict()
    assert (tr["recipe"], tr["adapter_dtype"], tr["prefill_chunk"], tr["all_logits"], tr["optimizer"]) == \
        ("pure", None, None, None, "adamw_torch")
    lo = estimate(a, Scenario(workload="lora", adapter_dtype="bf16", context=8), PRECISIONS).to_dict()
    assert (lo["recipe"], lo["adapter_dtype"]) == (None, "bf16")
