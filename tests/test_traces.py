"""Estimates against PyTorch's own accounting: every committed trace (data/traces/, written by
`llm-memory trace`) is within ±10 % of the estimate of the same question. The expected values here are the
traces: PyTorch's MemTracker peak of the real transformers/peft model and workload under fake tensors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from catalog_helpers import ROOT, copy_catalog
from generator.catalog.load import CatalogError, load_catalog
from generator.validation import TOLERANCE, compare, scenario_for_trace

CATALOG = load_catalog(ROOT / "data")
TRACES = sorted(CATALOG.traces, key=lambda t: t.path.name)


def test_there_are_traces_of_every_kind() -> None:
    kinds = {(t.file.conditions.workload, t.file.conditions.attention) for t in TRACES}
    assert {("inference", "sdpa"), ("inference", "eager"), ("train", "sdpa"), ("lora", "sdpa")} <= kinds
    recipes = {t.file.conditions.recipe for t in TRACES if t.file.conditions.workload == "train"}
    assert {"amp", "pure"} <= recipes
    adapters = {t.file.conditions.adapter_dtype for t in TRACES if t.file.conditions.workload == "lora"}
    assert adapters == {"fp32", "bf16"}


# Traces the estimator does not yet reproduce within the tolerance, each with what the trace shows it misses.
# They stay committed (the Validation page marks them) and strict: fixing the estimator flips them.
KNOWN_GAPS = {
    "openai-community--gpt2--train-amp-adamw_torch_fused-ckpt_none-sdpa-c512-b1-s2":
        "GPT-2 trains with dropout 0.1; on the CPU, SDPA with dropout most likely takes the math kernel, which saves "
        "the s x s probabilities (CUDA's flash kernel does not), and gelu_new, composed in Python, saves more "
        "T x 4h intermediates than the two the estimate counts",
    "openai-community--gpt2--train-pure-adamw_torch_fused-ckpt_none-sdpa-c512-b1-s2":
        "as the amp trace: dropout through the CPU's math attention and gelu_new's Python intermediates",
    "openai-community--gpt2--lora-r16-attention_mlp-fp32-adamw_torch_fused-ckpt_none-sdpa-c512-b1-s2-bf16":
        "as the amp trace, plus the fp32 copies of the fused Conv1D inputs peft adapts",
}


def _param(trace):  # type: ignore[no-untyped-def]
    gap = KNOWN_GAPS.get(trace.path.stem)
    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
    return pytest.param(trace, id=trace.path.stem, marks=marks)


def test_known_gaps_are_committed_traces() -> None:
    assert set(KNOWN_GAPS) <= {t.path.stem for t in TRACES}


@pytest.mark.parametrize("trace", [_param(t) for t in TRACES])
def test_estimate_within_tolerance_of_trace(trace) -> None:  # type: ignore[no-untyped-def]
    f = trace.file
    assert f.peak_bytes == f.crosscheck_peak_bytes  # two independent trackers agreed when it was recorded
    assert f.model is not None
    model = CATALOG.models[f.model]
    assert f.parameters == model.params.total  # the traced model is the catalog's, tensor for tensor
    cmp = compare(model.architecture, f.conditions.model_dump(exclude_none=True), f.peak_bytes,
                  CATALOG.precisions.catalog)
    assert abs(cmp.error) <= TOLERANCE, (
        f"estimate {cmp.estimated_bytes:,} vs trace {f.peak_bytes:,}: {cmp.error:+.1%} "
        f"(trace peak {f.peak_phase}, estimate peak {cmp.estimate.peak_phase})")


def test_trace_conditions_map_to_the_named_options() -> None:
    s = scenario_for_trace({"workload": "lora", "context": 512, "batch": 2, "attention": "eager", "dtype": "bf16",
                            "optimizer": "adamw_torch", "checkpointing": "full", "lora_rank": 8,
                            "lora_targets": ["attention"], "adapter_dtype": "bf16"})
    assert (s.workload, s.context, s.batch, s.flash_attention, s.optimizer, s.checkpointing) == \
        ("lora", 512, 2, False, "adamw_torch", "full")
    assert (s.lora_rank, s.lora_targets, s.adapter_dtype, s.runtime, s.overhead_bytes) == \
        (8, ("attention",), "bf16", "transformers", 0)
    t = scenario_for_trace({"workload": "train", "context": 1, "batch": 1, "attention": "sdpa", "recipe": "fp32",
                            "optimizer": "adamw_torch_fused", "checkpointing": "none"})
    assert (t.precision, t.recipe) == ("fp32", "fp32")


def test_a_stale_trace_is_refused(tmp_path: Path) -> None:
    data = copy_catalog(ROOT / "tests" / "fixtures" / "catalog", tmp_path / "data")
    (data / "traces").mkdir()
    source = next(t for t in TRACES if t.file.model == "meta-llama/Llama-3.2-1B")
    shutil.copy(source.path, data / "traces" / source.path.name)
    assert len(load_catalog(data).traces) == 1  # the fixture's Llama-3.2-1B is the catalog's
    model = data / "models" / "meta-llama--Llama-3.2-1B.yaml"
    model.write_text(model.read_text().replace("num_hidden_layers: 16", "num_hidden_layers: 15"))
    with pytest.raises(CatalogError) as e:
        load_catalog(data)
    assert any("model changed since this trace" in str(p) for p in e.value.problems)
