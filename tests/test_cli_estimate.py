"""`llm-memory estimate` as a user runs it: the JSON contract, readable output, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "data")
CONFIGS = yaml.safe_load((ROOT / "tests/fixtures/reference_configs.yaml").read_text())["models"]
INT_FIELDS = ("params", "active_params", "weights_bytes", "kv_cache_bytes", "activation_bytes", "gradient_bytes",
              "optimizer_bytes", "overhead_bytes", "total_bytes")


def run(*args: str):
    return CliRunner().invoke(main, ["estimate", "--data", DATA, *args])


@pytest.fixture()
def config_file(tmp_path) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(CONFIGS["Llama-3.1-8B"]["config"]))
    return p


def test_json_contract_for_a_catalog_model():
    r = run("meta-llama/Llama-3.1-8B", "--precision", "q4_k_m", "--context", "8192", "--gpu", "nvidia-rtx-4090",
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for f in INT_FIELDS:
        assert isinstance(d[f], int), f
    assert d["params"] == 8_030_261_248
    assert d["kv_cache_bytes"] == 1024 * 2**20 * 1  # 8192 tokens x 128 KiB in f16 (GGUF default)
    assert d["verdict"] in ("fits", "tight", "does not fit")
    assert isinstance(d["device_usable_bytes"], int)
    assert d["total_bytes"] == d["weights_bytes"] + d["kv_cache_bytes"] + d["activation_bytes"] + d["overhead_bytes"]


def test_config_path_training_per_gpu(config_file):
    one = json.loads(run("--config", str(config_file), "--workload", "train", "--recipe", "mixed", "--json").output)
    z3 = json.loads(run("--config", str(config_file), "--workload", "train", "--zero", "3", "--gpus", "8",
                        "--json").output)
    assert one["gradient_bytes"] == 2 * one["params"]
    assert one["optimizer_bytes"] == 12 * one["params"]  # fp32 master + two fp32 moments
    assert z3["runtime"] == "deepspeed" and z3["recipe"] == "mixed"  # ZeRO implies DeepSpeed's recipe
    assert z3["weights_bytes"] == -(-2 * one["params"] // 8)
    assert z3["total_bytes"] < one["total_bytes"]
    # The Trainer's default (transformers runtime): amp = fp32 weights, fp32 gradients, two fp32 AdamW moments
    # (torch/optim/adam.py: zeros_like(param)), and adamw_torch_fused, which allocates no step temporary.
    amp = json.loads(run("--config", str(config_file), "--workload", "train", "--json").output)
    assert (amp["runtime"], amp["recipe"], amp["optimizer"]) == ("transformers", "amp", "adamw_torch_fused")
    assert amp["weights_bytes"] == amp["gradient_bytes"] == 4 * amp["params"]
    assert amp["optimizer_bytes"] == 8 * amp["params"]
    assert amp["phases"]["optimizer_step"]["total_bytes"] == 16 * amp["params"] + amp["overhead_bytes"]
    # Plain data parallelism: the same states on each of 4 GPUs.
    dp = json.loads(run("--config", str(config_file), "--workload", "train", "--gpus", "4", "--json").output)
    assert dp["total_bytes"] == amp["total_bytes"]


def test_bare_params_zero_states():
    r = run("--params", "7500000000", "--workload", "train", "--zero", "1", "--gpus", "64", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["model_states_bytes"] == 31_406_250_000  # ZeRO figure 1: 31.4 GB


def test_readable_output_in_gib(config_file):
    r = run("--config", str(config_file))
    assert r.exit_code == 0
    assert "GiB" in r.output and "total" in r.output


@pytest.mark.parametrize("args", [
    ("no/such-model",),
    ("meta-llama/Llama-3.1-8B", "--precision", "q9_z"),
    ("meta-llama/Llama-3.1-8B", "--context", "-5"),
    ("meta-llama/Llama-3.1-8B", "--batch", "0"),
    ("meta-llama/Llama-3.1-8B", "--zero", "3", "--gpus", "8"),
    ("meta-llama/Llama-3.1-8B", "--workload", "train", "--precision", "q4_k_m"),
    ("meta-llama/Llama-3.1-8B", "--gpu", "no-such-gpu"),
    ("meta-llama/Llama-3.1-8B", "--checkpointing", "full"),
    ("meta-llama/Llama-3.1-8B", "--lora-rank", "8"),
    ("meta-llama/Llama-3.1-8B", "--kv-precision", "int3"),
    ("meta-llama/Llama-3.1-8B", "--context", "999999999999"),
    ("--params", "-1"),
    ("--params", "1000", "--workload", "lora"),
    (),
    ("meta-llama/Llama-3.1-8B", "--params", "5"),
])
def test_bad_input_is_one_line_exit_2(args):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("args", [
    ("estimate", "meta-llama/Llama-3.1-8B", "--context", "abc"),  # click's own type error
    ("estimate", "meta-llama/Llama-3.1-8B", "--workload", "bogus"),  # click's own choice error
    ("estimate", "--no-such-option"),
    ("no-such-command",),
    ("--no-such-option",),
    ("check", "--data"),  # option without its value
])
def test_usage_errors_are_one_line_exit_2(args):
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--help" in lines[0], r.stderr


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"model_type": "bert"}',
                                     '{"model_type": "llama", "hidden_size": 4096}', "\udcff"])
def test_bad_config_files(tmp_path, content):
    p = tmp_path / "config.json"
    p.write_text(content, errors="surrogateescape")
    r = run("--config", str(p))
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and str(p) in r.stderr, r.stderr


def test_missing_config_file(tmp_path):
    r = run("--config", str(tmp_path / "absent.json"))
    assert r.exit_code == 2 and "cannot read" in r.output


def test_lora_targets_are_configurable():
    att = json.loads(run("meta-llama/Llama-3.1-8B", "--workload", "lora", "--lora-targets", "attention",
                         "--json").output)
    # r x (d_in + d_out) for q (4096->4096), k and v (4096->1024), o (4096->4096), rank 16, 32 layers
    assert att["trainable_params"] == 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2)
    assert run("meta-llama/Llama-3.1-8B", "--workload", "lora", "--lora-targets", "norms").exit_code == 2
    assert run("meta-llama/Llama-3.1-8B", "--lora-targets", "mlp").exit_code == 2
