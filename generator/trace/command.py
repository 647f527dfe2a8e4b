"""`llm-memory trace`: the command line. torch, transformers and peft are imported only when a trace runs."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Mapping

import click
import yaml

from ..errors import InputError, LLMMemoryError
from . import TRACE_EXTRA_MISSING
from .spec import (ADAPTER_DTYPES, ATTENTIONS, CHECKPOINTING, DTYPES, METHOD, OPTIMIZERS, RECIPES, WORKLOADS,
                   SpecError, TraceSpec, config_sha256)


class TraceFailed(LLMMemoryError):
    """The model or the workload does not trace (transformers refuses it, or an op needs tensor values)."""

    exit_code = 1


def require_extra(lora: bool) -> None:
    """Fail with one line when the optional trace dependencies are missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        if lora:
            import peft  # noqa: F401
    except ImportError:
        raise InputError(TRACE_EXTRA_MISSING) from None


@functools.lru_cache(maxsize=4)
def _catalog(data_dir: Path) -> Any:
    from ..catalog.load import load_catalog

    return load_catalog(data_dir)


def catalog_architecture(model: str, data_dir: Path) -> dict[str, Any]:
    """The architecture block of a catalog model as written (explicit nulls kept), found as `estimate` finds it."""
    from ..catalog.load import CatalogError

    try:
        catalog = _catalog(Path(data_dir).resolve())
    except CatalogError as e:
        raise InputError(f"the catalog in {data_dir} has {len(e.problems)} problem(s), the first: {e.problems[0]}; "
                         "run `llm-memory check`") from None
    if model not in catalog.models:
        close = [m for m in catalog.models if model.lower() in m.lower()][:5]
        hint = f"; did you mean: {', '.join(close)}" if close else "; `ls data/models` lists them"
        raise InputError(f"unknown model {model!r}{hint}")
    return catalog.models[model].file.architecture.model_dump(exclude_unset=True)


def build_record(model: str | None, config_path: Path | None, architecture: Mapping[str, Any], spec: TraceSpec,
                 result: Any, versions: Mapping[str, str]) -> dict[str, Any]:
    """The trace record (format: generator/trace/__init__.py)."""
    rec: dict[str, Any] = {}
    if model is not None:
        rec["model"] = model
    else:
        rec["config"] = str(config_path)
    rec.update(model_type=result.model_type, config_sha256=config_sha256(architecture), conditions=spec.conditions(),
               parameters=result.parameters, trainable_parameters=result.trainable_parameters)
    if spec.workload == "lora":
        rec["lora_modules"] = list(result.lora_modules)
    rec.update(peak_bytes=result.peak_bytes, crosscheck_peak_bytes=result.crosscheck_peak_bytes,
               peak_phase=result.peak_phase, peak_module=result.peak_module, by_category=dict(result.by_category))
    if spec.training:
        rec["step_peak_bytes"] = list(result.step_peak_bytes)
    rec.update(versions=dict(versions), method=METHOD, notes=list(result.notes))
    return rec


class _RecordDumper(yaml.SafeDumper):
    """Block mappings (one condition, one category a line: readable diffs), flow lists ([attention, mlp])."""


_RecordDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


# The first line of every catalog file points editors at its JSON Schema (data/traces/ sits two levels down).
SCHEMA_LINE = "# yaml-language-server: $schema=../../schemas/trace.schema.json\n"


def dump_record(rec: Mapping[str, Any]) -> str:
    return SCHEMA_LINE + yaml.dump(dict(rec), Dumper=_RecordDumper, sort_keys=False, default_flow_style=False,
                                   width=120, allow_unicode=False)


def trace_one(architecture: Mapping[str, Any], spec: TraceSpec) -> tuple[Any, dict[str, str]]:
    """Run the trace (imports torch); TraceError becomes TraceFailed."""
    require_extra(spec.workload == "lora")
    from .runner import TraceError, run_trace, versions

    try:
        return run_trace(architecture, spec), versions()
    except TraceError as e:
        raise TraceFailed(str(e)) from None


def _not_for(workload: str, given: Mapping[str, Any], allowed: Mapping[str, tuple[str, ...]]) -> None:
    for option, value in given.items():
        if value is not None and workload not in allowed[option]:
            raise click.UsageError(f"{option} applies to --workload {' or '.join(allowed[option])}, not {workload}")


@click.command()
@click.argument("model", required=False)
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="A local Hugging Face config.json instead of a catalog model.")
@click.option("--workload", type=click.Choice(WORKLOADS), default="inference", show_default=True)
@click.option("--context", type=int, default=2048, show_default=True, help="Tokens per sequence.")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences at once.")
@click.option("--attention", type=click.Choice(ATTENTIONS), default="sdpa", show_default=True,
              help="transformers' attn_implementation.")
@click.option("--all-logits", is_flag=True, default=None,
              help="Inference: logits for every position (logits_to_keep=0) instead of the last (as generate does).")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Weights dtype for inference and of the frozen LoRA base. Default bf16.")
@click.option("--recipe", type=click.Choice(RECIPES), default=None,
              help="Train: amp (fp32 params, bf16 autocast over forward and loss), pure (bf16 model) or fp32. "
                   "Default amp.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help="Train, lora: AdamW fused=True, AdamW foreach=True, SGD (momentum 0.9, foreach) or "
                   "transformers' Adafactor. Default adamw_torch_fused.")
@click.option("--checkpointing", type=click.Choice(CHECKPOINTING), default=None,
              help="Train, lora: gradient checkpointing of every decoder layer (use_reentrant=False). Default none.")
@click.option("--lora-rank", type=int, default=None, help="LoRA rank (alpha = 2 x rank, dropout 0). Default 16.")
@click.option("--lora-targets", default=None, metavar="GROUPS",
              help="Comma-separated groups LoRA adapts: attention, mlp, experts (MoE experts' fused 3-D weights, "
                   "through peft's target_parameters). Default attention,mlp.")
@click.option("--adapter-dtype", type=click.Choice(ADAPTER_DTYPES), default=None,
              help="LoRA adapters: fp32 (peft's default autocast_adapter_dtype=True) or bf16 (=False). Default fp32.")
@click.option("--steps", type=int, default=None,
              help="Training steps; the peak reported is that of the last (the steady state). Default 2.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the YAML trace record to this file instead of printing it.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("data"),
              show_default=True, help="Catalog folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as one JSON object.")
def trace(model: str | None, config_path: Path | None, workload: str, context: int, batch: int, attention: str,
          all_logits: bool | None, dtype: str | None, recipe: str | None, optimizer: str | None,
          checkpointing: str | None, lora_rank: int | None, lora_targets: str | None, adapter_dtype: str | None,
          steps: int | None, out_path: Path | None, data_dir: Path, as_json: bool) -> None:
    """PyTorch's own peak tensor memory of MODEL (a catalog id) running a workload, traced on the CPU under
    fake tensors: no weights, no GPU. Needs the trace extra (torch, transformers, peft).

    The figure counts live tensors only: no CUDA context, library workspaces, kernel scratch or allocator
    slack. Compare it with an estimate whose runtime overhead is 0."""
    if (model is None) == (config_path is None):
        raise click.UsageError("give exactly one of MODEL or --config PATH")
    train, lora = ("train",), ("lora",)
    _not_for(workload, {"--all-logits": all_logits, "--recipe": recipe, "--optimizer": optimizer,
                        "--checkpointing": checkpointing, "--lora-rank": lora_rank, "--lora-targets": lora_targets,
                        "--adapter-dtype": adapter_dtype, "--steps": steps, "--dtype": dtype},
             {"--all-logits": ("inference",), "--recipe": train, "--optimizer": ("train", "lora"),
              "--checkpointing": ("train", "lora"), "--lora-rank": lora, "--lora-targets": lora,
              "--adapter-dtype": lora, "--steps": ("train", "lora"), "--dtype": ("inference", "lora")})
    kwargs: dict[str, Any] = {k: v for k, v in dict(
        all_logits=all_logits, dtype=dtype, recipe=recipe, optimizer=optimizer, checkpointing=checkpointing,
        lora_rank=lora_rank, adapter_dtype=adapter_dtype, steps=steps).items() if v is not None}
    if lora_targets is not None:
        kwargs["lora_targets"] = tuple(g.strip() for g in lora_targets.split(",") if g.strip())
    try:
        spec = TraceSpec(workload=workload, context=context, batch=batch, attention=attention, **kwargs)
    except SpecError as e:
        raise click.UsageError(str(e)) from None

    require_extra(spec.workload == "lora")
    if config_path is not None:
        from ..commands_estimate import _read_config

        architecture = _read_config(config_path)
    else:
        architecture = catalog_architecture(model, data_dir)  # type: ignore[arg-type]

    started = time.monotonic()
    result, versions = trace_one(architecture, spec)
    rec = build_record(model, config_path, architecture, spec, result, versions)
    elapsed = time.monotonic() - started
    if out_path is not None:
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(dump_record(rec), encoding="utf-8")
        except OSError as e:
            raise InputError(f"{out_path}: cannot write: {e.strerror or e}") from None
        click.echo(f"{out_path}: peak {rec['peak_bytes']:,} bytes ({rec['peak_phase']}), traced in {elapsed:.1f} s",
                   err=True)
    if as_json:
        click.echo(json.dumps(rec, indent=2))
    elif out_path is None:
        click.echo(dump_record(rec), nl=False)
        click.echo(f"# traced in {elapsed:.1f} s", err=True)
