"""`llm-memory trace`: PyTorch's own accounting under fake tensors, checked against hand-derived byte counts.

The traced model is a tiny Llama (vocab 256, hidden 64, MLP 128, 2 layers, 4 heads of 16, untied embeddings):

  parameters  embed_tokens 256 x 64 = 16,384; lm_head 256 x 64 = 16,384
              per layer: q, k, v, o 4 x 64 x 64 = 16,384; gate, up 2 x 64 x 128 = 16,384; down 128 x 64 = 8,192;
                         input and post-attention RMSNorm 2 x 64 = 128            -> 41,088
              final norm 64
              total 2 x 16,384 + 2 x 41,088 + 64 = 115,008 in 2 + 2 x 9 + 1 = 21 tensors
  buffers     the rotary embedding's inv_freq and original_inv_freq, head_dim / 2 = 8 fp32 each = 64 bytes
              (transformers/models/llama/modeling_llama.py, LlamaRotaryEmbedding)
  input ids   batch x context int64 = 8 bytes a token

The tests that need torch, transformers and peft are skipped without them (the `trace` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import main
from generator.trace.spec import SpecError, TraceSpec, config_sha256, file_name

TINY = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16,
        "tie_word_embeddings": False, "max_position_embeddings": 512, "rms_norm_eps": 1e-5}
PARAMS = 115_008
PARAM_TENSORS = 21
BUFFER_BYTES = 64
LAYERS, HEADS, VOCAB = 2, 4, 256


def ids_bytes(context: int, batch: int = 1) -> int:
    return 8 * context * batch


@pytest.fixture(scope="module")
def run_trace():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from generator.trace.runner import run_trace as run

    return run


def cli(*args: str):
    return CliRunner().invoke(main, ["trace", *args])


# --------------------------------------------------------------------------------------------------
# Without torch: the command line


def test_without_the_extra_one_line_exit_2(monkeypatch):
    for name in ("torch", "transformers", "peft"):
        monkeypatch.setitem(sys.modules, name, None)  # `import torch` now raises ImportError
    r = cli("meta-llama/Llama-3.2-1B")
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    assert r.stderr.splitlines() == ["Error: llm-memory trace needs the trace extra: pip install '.[trace]'"]


@pytest.mark.parametrize("args", [
    ("meta-llama/Llama-3.2-1B", "--recipe", "amp"),  # recipe is for train
    ("meta-llama/Llama-3.2-1B", "--workload", "train", "--all-logits"),
    ("meta-llama/Llama-3.2-1B", "--workload", "train", "--lora-rank", "8"),
    ("meta-llama/Llama-3.2-1B", "--workload", "train", "--dtype", "fp16"),  # train takes --recipe
    ("meta-llama/Llama-3.2-1B", "--optimizer", "sgd"),
    ("meta-llama/Llama-3.2-1B", "--checkpointing", "full"),
    ("meta-llama/Llama-3.2-1B", "--steps", "3"),
    ("meta-llama/Llama-3.2-1B", "--workload", "lora", "--lora-targets", "embeddings"),
    ("meta-llama/Llama-3.2-1B", "--workload", "lora", "--lora-targets", "mlp,mlp"),
    ("meta-llama/Llama-3.2-1B", "--context", "0"),
    ("meta-llama/Llama-3.2-1B", "--workload", "train", "--steps", "0"),
    ("meta-llama/Llama-3.2-1B", "--config", "x.json"),
    (),
    ("meta-llama/Llama-3.2-1B", "--attention", "flash"),  # click's own choice error
])
def test_usage_errors_one_line_exit_2(args):
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--help" in lines[0], r.stderr


def test_conditions_only_what_applies():
    inf = TraceSpec().conditions()
    assert inf == {"workload": "inference", "context": 2048, "batch": 1, "attention": "sdpa", "dtype": "bf16",
                   "all_logits": False}
    train = TraceSpec(workload="train").conditions()
    assert train["recipe"] == "amp" and "dtype" not in train and "lora_rank" not in train
    assert train["optimizer"] == "adamw_torch_fused" and train["checkpointing"] == "none" and train["steps"] == 2
    lora = TraceSpec(workload="lora", lora_rank=8, adapter_dtype="bf16").conditions()
    assert "recipe" not in lora and lora["dtype"] == "bf16"
    assert (lora["lora_rank"], lora["lora_alpha"], lora["adapter_dtype"]) == (8, 16, "bf16")
    assert lora["lora_targets"] == ["attention", "mlp"]


def test_every_condition_has_its_own_file_name():
    specs = [TraceSpec(**kw) for kw in (
        {}, {"attention": "eager"}, {"context": 512}, {"batch": 2}, {"all_logits": True}, {"dtype": "fp16"},
        {"workload": "train"}, {"workload": "train", "recipe": "pure"}, {"workload": "train", "recipe": "fp32"},
        {"workload": "train", "optimizer": "adamw_torch"}, {"workload": "train", "checkpointing": "full"},
        {"workload": "train", "steps": 3}, {"workload": "lora"}, {"workload": "lora", "adapter_dtype": "bf16"},
        {"workload": "lora", "lora_rank": 8}, {"workload": "lora", "lora_targets": ("attention",)},
        {"workload": "lora", "dtype": "fp16"}, {"workload": "lora", "checkpointing": "full"},
    )]
    names = [file_name("meta-llama/Llama-3.2-1B", TINY, s) for s in specs]
    assert len(set(names)) == len(names)
    assert names[0] == "meta-llama--Llama-3.2-1B--inference-sdpa-c2048-b1-bf16.yaml"
    assert file_name(None, TINY, specs[0]).startswith("config-" + config_sha256(TINY)[:12] + "--")


def test_config_hash_is_canonical_json():
    expected = hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()
    assert config_sha256({"b": [1, 2], "a": 1}) == expected == config_sha256({"a": 1, "b": [1, 2]})


def test_spec_rejects_nonsense():
    for bad in ({"workload": "pretrain"}, {"batch": 0}, {"lora_rank": 0}, {"lora_targets": ()},
                {"optimizer": "adam"}, {"steps": 11}):
        with pytest.raises(SpecError):
            TraceSpec(**bad)


def test_make_traces_runs_each_model_as_transformers_would():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "make_traces.py"
    loader = importlib.util.spec_from_file_location("make_traces", path)
    assert loader is not None and loader.loader is not None
    tool = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(tool)
    eager_only = tool.adapt(tool.STANDARD, {"sdpa": False, "lora_targets": ("attention", "experts")})
    assert "inference-sdpa" not in eager_only and eager_only["inference-eager"].attention == "eager"
    assert all(spec.attention == "eager" for spec in eager_only.values())
    assert len({spec for spec in eager_only.values()}) == len(eager_only) == len(tool.STANDARD) - 1
    lora = [spec for spec in eager_only.values() if spec.workload == "lora"]
    assert lora and all(spec.lora_targets == ("attention", "experts") for spec in lora)
    dense = tool.adapt(tool.STANDARD, {"sdpa": True, "lora_targets": ("attention", "mlp")})
    assert [s.attention for s in dense.values()] == [s.attention for s in tool.STANDARD.values()]


# --------------------------------------------------------------------------------------------------
# With torch: the traces


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_inference_counts_bf16_weights_and_the_trackers_agree(run_trace):
    r = run_trace(TINY, TraceSpec(context=128))
    assert r.parameters == PARAMS and r.trainable_parameters == 0
    assert r.by_category["parameter"] == 2 * PARAMS  # bf16
    assert r.by_category["buffer"] == BUFFER_BYTES
    assert r.by_category["other"] == ids_bytes(128)
    assert r.peak_bytes >= 2 * PARAMS + BUFFER_BYTES + ids_bytes(128)
    assert r.crosscheck_peak_bytes == r.peak_bytes
    assert sum(r.by_category.values()) == r.peak_bytes
    assert r.by_category["gradient"] == r.by_category["optstate"] == 0
    assert r.peak_phase == "forward" and r.peak_module.startswith("model.layers.")
    fp32 = run_trace(TINY, TraceSpec(context=128, dtype="fp32"))
    assert fp32.by_category["parameter"] == 4 * PARAMS


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_eager_attention_materialises_the_scores(run_trace):
    sdpa = run_trace(TINY, TraceSpec(context=128))
    eager = run_trace(TINY, TraceSpec(context=128, attention="eager"))
    # transformers' eager_attention_forward holds the bf16 scores (heads x s x s x 2 bytes) while
    # softmax(..., dtype=float32) writes its fp32 copy (x 4 bytes); SDPA never builds either on this path.
    assert eager.peak_bytes - sdpa.peak_bytes >= HEADS * 128 * 128 * (2 + 4)
    assert eager.crosscheck_peak_bytes == eager.peak_bytes


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_foreach_adamw_holds_one_parameter_sized_fp32_temporary(run_trace):
    p4 = 4 * PARAMS  # fp32 recipe: parameters, gradients and both AdamW moments are fp32
    foreach = run_trace(TINY, TraceSpec(workload="train", recipe="fp32", optimizer="adamw_torch", context=16))
    fused = run_trace(TINY, TraceSpec(workload="train", recipe="fp32", optimizer="adamw_torch_fused", context=16))
    steps = 4 * PARAM_TENSORS  # one fp32 `step` scalar per parameter (torch/optim/adamw.py, _init_group)
    at_step = p4 + p4 + 2 * p4 + steps + BUFFER_BYTES + ids_bytes(16)  # params, grads, exp_avg, exp_avg_sq
    # foreach (torch/optim/adamw.py, _multi_tensor_adamw): exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs),
    # one more parameter-sized fp32 list, live at the optimizer step; fused: _fused_adamw_ needs none.
    assert foreach.peak_bytes == at_step + p4
    assert foreach.peak_phase == "step 2 optimizer"
    assert foreach.step_peak_bytes == [at_step + p4, at_step + p4]  # step 1 builds the moments, then the sqrt
    assert foreach.crosscheck_peak_bytes == foreach.peak_bytes
    assert at_step <= fused.peak_bytes < foreach.peak_bytes
    # Without the temporary, the fused peak is the step's live set, or a backward moment above it by less than
    # one fp32 logits tensor at 16 tokens (16 x 256 x 4 bytes).
    assert p4 - 16 * VOCAB * 4 <= foreach.peak_bytes - fused.peak_bytes <= p4
    assert fused.by_category["optstate"] == 2 * p4 + steps
    assert fused.crosscheck_peak_bytes == fused.peak_bytes


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_recipes_set_the_dtypes_of_parameters_and_states(run_trace):
    steps = 4 * PARAM_TENSORS
    pure = run_trace(TINY, TraceSpec(workload="train", recipe="pure", context=16))
    assert pure.by_category["parameter"] == 2 * PARAMS
    assert pure.by_category["optstate"] == 2 * 2 * PARAMS + steps  # AdamW moments take the parameters' dtype
    amp = run_trace(TINY, TraceSpec(workload="train", recipe="amp", context=16))
    assert amp.by_category["parameter"] == 4 * PARAMS  # fp32 master weights; autocast copies are activations
    assert amp.by_category["optstate"] == 2 * 4 * PARAMS + steps
    assert amp.peak_phase.startswith("step 2 ") and len(amp.step_peak_bytes) == 2
    assert amp.crosscheck_peak_bytes == amp.peak_bytes and pure.crosscheck_peak_bytes == pure.peak_bytes


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_tied_embedding_gradients_are_summed_in_place(run_trace, monkeypatch):
    import generator.trace.runner as runner

    tied = {**TINY, "tie_word_embeddings": True}
    p, e = PARAMS - 256 * 64, 256 * 64  # the lm_head is the embedding matrix: 98,624 parameters in 20 tensors
    common = 4 * p + 2 * 4 * p + 4 * 20 + BUFFER_BYTES + ids_bytes(16) + 8  # params, moments, steps, loss + seed
    # The peak is in step 2's embedding backward: every other gradient exists (4 (p - e)), the tied matrix has its
    # lm_head-path gradient and the embedding's (2 x 4e) while the gradient reaching the embedding (16 x 64 x 4
    # bytes) is still held. An untraced engine then adds the two in place into one of them.
    r = run_trace(tied, TraceSpec(workload="train", recipe="fp32", context=16))
    assert r.peak_bytes == common + 4 * (p - e) + 2 * 4 * e + 16 * 64 * 4
    assert r.crosscheck_peak_bytes == r.peak_bytes
    # Under any dispatch mode the engine writes old + new into a third matrix (input_buffer.cpp): counted as is,
    # the peak moves to that sum, with three 4e matrices and the embedding's incoming gradient already freed.
    monkeypatch.setattr(runner.EngineSums, "is_sum", lambda self, func: False)
    raw = run_trace(tied, TraceSpec(workload="train", recipe="fp32", context=16))
    assert raw.peak_bytes == common + 4 * (p - e) + 3 * 4 * e


# r = 16 on q, k, v, o (64 -> 64: 16 x (64 + 64) = 2,048 each), gate, up (64 -> 128: 16 x 192 = 3,072 each) and
# down (128 -> 64: 3,072): 4 x 2,048 + 3 x 3,072 = 17,408 a layer, 34,816 in all, in 7 x 2 x 2 = 28 tensors.
ADAPTERS, ADAPTER_TENSORS = 34_816, 28


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_lora_fp32_adapters(run_trace):
    r = run_trace(TINY, TraceSpec(workload="lora", context=16))
    assert r.trainable_parameters == ADAPTERS and r.parameters == PARAMS
    assert r.lora_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert r.by_category["parameter"] == 2 * PARAMS + 4 * ADAPTERS  # bf16 base, fp32 adapters (peft's default)
    assert r.by_category["optstate"] == 2 * 4 * ADAPTERS + 4 * ADAPTER_TENSORS  # fp32 moments and step scalars
    assert r.crosscheck_peak_bytes == r.peak_bytes and r.peak_phase.startswith("step 2 ")


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_lora_bf16_adapters(run_trace):
    r = run_trace(TINY, TraceSpec(workload="lora", context=16, adapter_dtype="bf16"))
    assert r.by_category["parameter"] == 2 * PARAMS + 2 * ADAPTERS
    assert r.by_category["optstate"] == 2 * 2 * ADAPTERS + 4 * ADAPTER_TENSORS
    assert r.crosscheck_peak_bytes == r.peak_bytes


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_lora_attention_only(run_trace):
    r = run_trace(TINY, TraceSpec(workload="lora", context=16, lora_targets=("attention",)))
    assert r.lora_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert r.trainable_parameters == LAYERS * 4 * 2_048


# A tiny Mixtral: as TINY, with 4 experts (2 a token) in place of the MLP. transformers 5 stores a layer's experts
# as two fused 3-D weights: gate_up_proj (4, 2 x 128, 64) = 65,536 and down_proj (4, 64, 128) = 32,768, plus the
# router (4 x 64 = 256): a layer is 16,384 (attention) + 256 + 65,536 + 32,768 + 128 (norms) = 115,072, and the
# model 2 x 16,384 (embeddings) + 2 x 115,072 + 64 = 262,976 parameters.
MOE = {**TINY, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}
MOE_PARAMS = 262_976


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_lora_on_fused_moe_experts(run_trace):
    r = run_trace(MOE, TraceSpec(workload="lora", context=16, lora_targets=("experts",)))
    assert r.parameters == MOE_PARAMS
    assert r.lora_modules == ["experts.down_proj", "experts.gate_up_proj"]
    # peft's target_parameters: r x (d_in + d_out) per expert: gate_up 16 x (64 + 256), down 16 x (128 + 64),
    # 4 experts, 2 layers = 2 x 4 x 16 x 512 = 65,536 in 2 x 2 x 2 = 8 tensors.
    assert r.trainable_parameters == 65_536
    assert r.by_category["parameter"] == 2 * MOE_PARAMS + 4 * 65_536
    assert r.by_category["optstate"] == 2 * 4 * 65_536 + 4 * 8
    assert r.crosscheck_peak_bytes == r.peak_bytes


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_lora_mlp_on_moe_goes_to_the_experts_as_peft_maps_it(run_trace):
    r = run_trace(MOE, TraceSpec(workload="lora", context=16))  # attention and mlp: Mixtral's w1, w2, w3
    assert r.lora_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "experts.down_proj", "experts.gate_up_proj"]
    # peft (peft/utils/transformers_weight_conversion.py, _convert_peft_config_moe) fuses w1 and w3 into gate_up_proj
    # with twice the rank: attention 2 x 4 x 2,048 = 16,384; gate_up 2 x 4 x 32 x (64 + 256) = 81,920;
    # down 2 x 4 x 16 x (128 + 64) = 24,576.
    assert r.trainable_parameters == 16_384 + 81_920 + 24_576
    assert any("rank 32 on gate_up_proj" in n for n in r.notes)


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_moe_with_fp32_experts_goes_through_the_fallback_and_says_so(run_trace):
    r = run_trace(MOE, TraceSpec(workload="train", recipe="amp", context=16))
    assert r.by_category["parameter"] == 4 * MOE_PARAMS
    assert any("grouped_mm_fallback" in n for n in r.notes)
    assert r.crosscheck_peak_bytes == r.peak_bytes
    bf16 = run_trace(MOE, TraceSpec(workload="train", recipe="pure", context=16))
    assert not any("grouped_mm" in n for n in bf16.notes)


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_unpacked_batches_keep_sdpa_on_its_causal_path(run_trace, monkeypatch):
    import generator.trace.runner as runner

    spec = TraceSpec(workload="train", recipe="fp32", context=64)
    guarded = run_trace(TINY, spec)
    monkeypatch.setattr(runner, "unpacked_batches", contextlib.nullcontext)
    unguarded = run_trace(TINY, spec)
    # Taken for a packed batch, every layer gets an s x s mask; CPU SDPA turns a boolean mask into one in the
    # query's dtype (aten/src/ATen/native/transformers/attention.cpp, convert_boolean_attn_mask) and keeps it
    # for the backward: 2 layers x 64 x 64 x 4 bytes (fp32).
    assert unguarded.peak_bytes - guarded.peak_bytes == LAYERS * 64 * 64 * 4


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_the_traced_config_is_hashed_as_read(run_trace):
    from generator.trace.runner import build_config

    llama3 = {**TINY, "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0,
                                       "low_freq_factor": 1.0, "original_max_position_embeddings": 8192}}
    before = config_sha256(llama3)
    build_config(llama3)  # transformers adds rope_theta to the rope_scaling dict it is given
    assert config_sha256(llama3) == before


def test_cli_record_from_a_config_file(run_trace, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "t.yaml"
    r = cli("--config", str(config), "--context", "32", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    written = yaml.safe_load(out.read_text())
    assert printed == written
    assert written["config_sha256"] == config_sha256(TINY) and written["model_type"] == "llama"
    assert written["conditions"] == TraceSpec(context=32).conditions()
    for key in ("peak_bytes", "crosscheck_peak_bytes", "parameters", *(f"by_category.{c}" for c in written["by_category"])):
        obj = written
        for part in key.split("."):
            obj = obj[part]
        assert isinstance(obj, int), key
    assert written["by_category"]["parameter"] == 2 * PARAMS
    assert set(written["versions"]) == {"torch", "transformers", "peft"}
    # The documented order (generator/trace/__init__.py); inference has no LoRA modules and no steps.
    assert list(written) == ["config", "model_type", "config_sha256", "conditions", "parameters",
                             "trainable_parameters", "peak_bytes", "crosscheck_peak_bytes", "peak_phase", "peak_module",
                             "by_category", "versions", "method", "notes"]


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_a_model_type_transformers_does_not_know_fails_in_one_line(run_trace, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, "model_type": "no_such_model"}))
    r = cli("--config", str(config))
    assert r.exit_code == 1 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "no_such_model" in r.stderr


@pytest.mark.slow  # runs a real trace (needs the trace extra)
def test_unknown_catalog_model(run_trace):
    r = cli("meta-llama/Llama-3.2-1", "--data", str(Path(__file__).resolve().parents[1] / "data"))
    assert r.exit_code == 2 and "unknown model" in r.stderr and "meta-llama/Llama-3.2-1B" in r.stderr
