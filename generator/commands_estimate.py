"""`llm-memory estimate`: one model, one precision, one workload, optionally one device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .errors import InputError
from .estimate.architecture import ConfigError, parse_architecture
from .estimate.fit import decode_tokens_per_second, devices_needed, longest_context, verdict
from .estimate.precision import PrecisionCatalog, PrecisionError
from .estimate.rules import rules_of_thumb
from .estimate.scenario import GIB, Estimate, Scenario, ScenarioError, estimate as run_estimate
from .estimate.training import OPTIMIZERS

MAX_CONFIG_BYTES = 4 * 2**20


def _read_config(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config.json")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config.json must hold a JSON object")
    return data


def _gib(n: int | float) -> str:
    return f"{n / GIB:,.2f} GiB"


@click.command()
@click.argument("model", required=False)
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="A local Hugging Face config.json instead of a catalog model.")
@click.option("--params", "bare_params", type=int, help="A bare parameter count (rules of thumb and model states only).")
@click.option("--precision", default=None, help="Weight precision id (data/precisions.yaml). Default bf16; nf4 for qlora.")
@click.option("--workload", type=click.Choice(["inference", "train", "lora", "qlora"]), default="inference", show_default=True)
@click.option("--context", type=int, default=None, help="Tokens per sequence. Default 4096 for inference, 2048 for training.")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences at once (micro-batch for training).")
@click.option("--kv-precision", default=None, help="KV-cache type: f16, bf16, fp8, q8_0, q4_0. Default f16 for GGUF, else bf16.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help="Hugging Face TrainingArguments.optim name. Default: the runtime's (transformers: adamw_torch_fused); "
                   "paged_adamw_8bit for qlora. adamw, adamw_8bit and lion are aliases of adamw_torch, "
                   "adamw_bnb_8bit and lion_32bit.")
@click.option("--runtime", default=None,
              help="Runtime profile (data/runtimes.yaml): transformers, vllm, llama.cpp, mlx, deepspeed. Default: "
                   "llama.cpp for GGUF, deepspeed with --zero, else transformers.")
@click.option("--recipe", type=click.Choice(["amp", "mixed", "pure", "fp32"]), default=None,
              help="Full-training precision recipe. Default: the runtime's (transformers: amp; deepspeed: mixed).")
@click.option("--adapter-dtype", type=click.Choice(["fp32", "bf16"]), default=None,
              help="LoRA adapter dtype. Default fp32 (peft's autocast_adapter_dtype); bf16 for qlora.")
@click.option("--all-logits", is_flag=True, help="Inference keeps every position's logits (scoring), not only the last.")
@click.option("--checkpointing", type=click.Choice(["none", "selective", "full"]), default=None,
              help="Gradient checkpointing. Default none; full for qlora (as in the QLoRA paper).")
@click.option("--zero", type=click.IntRange(0, 3), default=0, show_default=True, help="ZeRO stage for training over --gpus.")
@click.option("--gpus", type=int, default=1, show_default=True,
              help="GPUs: tensor parallel for inference; data parallel for training (full states on each GPU unless --zero).")
@click.option("--gpu", "device_id", default=None, help="Check the fit against this catalog device id.")
@click.option("--lora-rank", type=int, default=None, help="LoRA rank. Default 16; 64 for qlora.")
@click.option("--lora-targets", default=None, metavar="GROUPS",
              help="Comma-separated tensor groups LoRA adapts: attention, mlp, experts. Default: all three.")
@click.option("--no-flash-attention", is_flag=True, help="Eager attention: materialise the s x s score matrix.")
@click.option("--prefill-chunk", type=int, default=None,
              help="Tokens per prefill pass (vLLM max_num_batched_tokens, llama.cpp n_ubatch). Default: the runtime's.")
@click.option("--overhead-gib", type=float, default=None, help="Runtime overhead (CUDA context etc.). Default: the runtime's.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("data"),
              show_default=True, help="Catalog folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (bytes as integers).")
def estimate(model: str | None, config_path: Path | None, bare_params: int | None, precision: str | None,
             workload: str, context: int | None, batch: int, kv_precision: str | None, optimizer: str | None,
             runtime: str | None, recipe: str | None, adapter_dtype: str | None, all_logits: bool,
             checkpointing: str | None, zero: int, gpus: int, device_id: str | None, lora_rank: int | None,
             lora_targets: str | None, no_flash_attention: bool, prefill_chunk: int | None,
             overhead_gib: float | None, data_dir: Path, as_json: bool) -> None:
    """Estimate the memory of MODEL (a catalog id such as meta-llama/Llama-3.1-8B)."""
    from .catalog.load import CatalogError, load_catalog

    sources = [x for x in (model, config_path, bare_params) if x is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of MODEL, --config PATH or --params N")
    if workload == "inference" and checkpointing:
        raise click.UsageError("--checkpointing applies to training workloads, not inference")
    if context is None:
        context = 4096 if workload == "inference" else 2048
    if checkpointing is None:
        checkpointing = "full" if workload == "qlora" else "none"
    overhead = None
    if overhead_gib is not None:
        if not 0 <= overhead_gib <= 1024:
            raise click.UsageError("--overhead-gib must be between 0 and 1024")
        overhead = int(overhead_gib * GIB)
    try:
        catalog = load_catalog(data_dir)
    except CatalogError as e:
        raise InputError(f"the catalog in {data_dir} has {len(e.problems)} problem(s), the first: {e.problems[0]}; "
                         "run `llm-memory check`") from None
    precisions = catalog.precisions.catalog

    kwargs: dict[str, Any] = dict(workload=workload, precision=precision, context=context, batch=batch, kv_precision=kv_precision,
                  optimizer=optimizer, checkpointing=checkpointing, zero=zero, gpus=gpus, lora_rank=lora_rank,
                  flash_attention=not no_flash_attention, prefill_chunk=prefill_chunk, runtime=runtime, recipe=recipe,
                  adapter_dtype=adapter_dtype, all_logits=all_logits)
    if lora_targets is not None:
        if workload not in ("lora", "qlora"):
            raise click.UsageError("--lora-targets applies only to --workload lora or qlora")
        kwargs["lora_targets"] = tuple(g.strip() for g in lora_targets.split(",") if g.strip())
    if overhead is not None:
        kwargs["overhead_bytes"] = overhead
    scenario = Scenario(**kwargs)

    if bare_params is not None:
        _bare(bare_params, scenario, precisions, as_json)
        return
    try:
        if config_path is not None:
            arch = parse_architecture(_read_config(config_path))
            label = str(config_path)
        else:
            assert model is not None  # exactly one source was given, and it is not --params or --config
            if model not in catalog.models:
                close = [m for m in catalog.models if model.lower() in m.lower()][:5]
                hint = f"; did you mean: {', '.join(close)}" if close else "; `ls data/models` lists them"
                raise InputError(f"unknown model {model!r}{hint}")
            arch = catalog.models[model].architecture
            label = model
        est = run_estimate(arch, scenario, precisions)
    except ConfigError as e:
        raise InputError(f"{config_path}: {e}") from None
    except (ScenarioError, PrecisionError) as e:
        raise click.UsageError(str(e)) from None

    result = {"model": label, **est.to_dict()}
    assert est.scenario.precision is not None  # an estimate's scenario is resolved
    if device_id is not None:
        if device_id not in catalog.gpus:
            raise InputError(f"unknown device {device_id!r}; choose one of: {', '.join(sorted(catalog.gpus))}")
        dev = catalog.gpus[device_id]
        usable = dev.usable_bytes
        result.update({
            "device": device_id, "device_usable_bytes": usable, "verdict": verdict(est.total_bytes, est.budget(usable)),
            "devices_needed": devices_needed(arch, est.scenario, precisions, usable),
        })
        if est.scenario.workload == "inference":
            result["longest_context_batch1"] = longest_context(arch, est.scenario, precisions, usable)
            result["decode_tokens_per_s_upper_bound"] = round(
                decode_tokens_per_second(arch, est, precisions, dev.bandwidth_bytes_per_s), 1)
    result["rules_of_thumb"] = [r.__dict__ for r in rules_of_thumb(
        est.params, precisions.precision(est.scenario.precision).bytes_per_param_nominal, workload)]
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_human(result, est)


def _bare(params: int, scenario: Scenario, precisions: PrecisionCatalog, as_json: bool) -> None:
    if not 1 <= params <= 10**14:
        raise click.UsageError("--params must be between 1 and 100 trillion")
    try:
        s = scenario.resolved(precisions)
    except (ScenarioError, PrecisionError) as e:
        raise click.UsageError(str(e)) from None
    if s.workload in ("lora", "qlora"):
        raise click.UsageError("LoRA needs the architecture (layer shapes); give MODEL or --config")
    assert s.precision is not None  # resolved() always sets it
    prec = precisions.precision(s.precision)
    result: dict[str, Any] = {"params": params, "precision": s.precision, "workload": s.workload,
                              "weights_bytes_nominal": int(params * prec.bytes_per_param_nominal)}
    if s.workload == "train":
        from .estimate.training import full_training_states

        assert s.optimizer is not None  # resolved() sets one for training
        st = full_training_states(params, s.optimizer, mixed_precision=s.precision != "fp32", zero=s.zero,
                                  gpus=s.gpus if s.zero else 1)
        result.update(weights_bytes=st.weights, gradient_bytes=st.gradients, optimizer_bytes=st.optimizer_total,
                      model_states_bytes=st.weights + st.gradients + st.optimizer_total)
    result["rules_of_thumb"] = [r.__dict__ for r in rules_of_thumb(params, prec.bytes_per_param_nominal, s.workload)]
    result["note"] = "A bare parameter count gives weights and model states only; KV cache and activations need the architecture."
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            if k.endswith("_bytes"):
                click.echo(f"{k.removesuffix('_bytes').replace('_', ' '):>22}: {_gib(v)}")
        click.echo(result["note"])


def _print_human(r: dict[str, Any], est: Estimate) -> None:
    s = est.scenario
    click.echo(f"{r['model']}: {s.workload}, {s.precision}, context {s.context:,}, batch {s.batch}"
               + (f", {s.gpus} GPUs" if s.gpus > 1 else "") + (f", runtime {s.runtime}" if s.runtime else "")
               + (f", recipe {s.recipe}" if s.recipe else "") + (f", optimizer {s.optimizer}" if s.optimizer else ""))
    click.echo(f"  parameters {est.params:,} (active per token {est.active_params:,})")
    rows = [("weights", est.weights_bytes), ("KV cache", est.kv_cache_bytes), ("activations", est.activation_bytes),
            ("gradients", est.gradient_bytes), ("optimizer states", est.optimizer_bytes),
            ("runtime overhead", est.overhead_bytes)]
    for name, v in rows:
        if v or name in ("weights", "runtime overhead"):
            click.echo(f"  {name:>17}: {_gib(v):>14}")
    per = " per GPU" if s.gpus > 1 else ""
    click.echo(f"  {'total' + per:>17}: {_gib(est.total_bytes):>14}  (peak: {est.peak_phase})")
    if "verdict" in r:
        click.echo(f"  on {r['device']} ({_gib(r['device_usable_bytes'])} usable): {r['verdict']}"
                   + (f"; needs {r['devices_needed']} device(s)" if r.get("devices_needed") else "; does not fit on 64"))
        if "decode_tokens_per_s_upper_bound" in r:
            click.echo(f"  decode upper bound: {r['decode_tokens_per_s_upper_bound']} tokens/s")
    click.echo("  rules of thumb: " + "; ".join(
        f"{x['label']}: {_gib(x['low_bytes'])}" + (f"-{_gib(x['high_bytes'])}" if x['high_bytes'] != x['low_bytes'] else "")
        for x in r["rules_of_thumb"]))
