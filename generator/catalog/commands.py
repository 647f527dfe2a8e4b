"""The catalog commands: `llm-memory check`, `llm-memory schema` and `llm-memory import`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import CatalogInvalid, InputError, LLMMemoryError
from ..estimate.architecture import KNOWN_CONFIG_KEYS, ConfigError, count_parameters, parse_architecture
from .load import CatalogError, load_catalog
from .schema import MODEL_ID, SCHEMAS, QuantizationConfig, json_schema
from .yamlsafe import Problem

# --------------------------------------------------------------------------------------------------
# check


def _gh_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github_annotation(p: Problem) -> str:
    return f"::error file={_gh_escape(p.path, prop=True)},line={p.line},col={p.column}::{_gh_escape(p.message)}"


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="The catalog folder (models/, gpus/, precisions.yaml, workloads.yaml).")
def check(data_dir: Path) -> None:
    """Validate every catalog file; print each problem as path:line:column: message."""
    try:
        catalog = load_catalog(data_dir)
    except CatalogError as exc:
        github = os.environ.get("GITHUB_ACTIONS") == "true"
        for p in exc.problems:
            click.echo(str(p))
            if github:
                click.echo(github_annotation(p))
        files = len({p.path for p in exc.problems})
        raise CatalogInvalid(f"{len(exc.problems)} problem(s) in {files} file(s)") from None
    except Exception as exc:  # never a traceback, whatever the input
        raise LLMMemoryError(f"internal error while checking {data_dir}: {type(exc).__name__}: {exc}") from None
    click.echo(f"{len(catalog.models)} models, {len(catalog.gpus)} GPUs, "
               f"{len(catalog.precisions.catalog.precisions)} precisions, {len(catalog.precisions.catalog.runtimes)} "
               f"runtimes, {len(catalog.workloads)} workloads: OK")


# --------------------------------------------------------------------------------------------------
# schema


def schema_text(kind: str) -> str:
    """The JSON Schema of one file kind exactly as committed under schemas/."""
    return json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n"


@click.command()
@click.option("--kind", type=click.Choice(list(SCHEMAS)), help="Print only this file kind's schema.")
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write all four schemas as KIND.schema.json into this folder (e.g. schemas/).")
def schema(kind: str | None, write_dir: Path | None) -> None:
    """Print the JSON Schema of the catalog files (all four, keyed by kind, unless --kind)."""
    if write_dir is not None:
        write_dir.mkdir(parents=True, exist_ok=True)
        for k in SCHEMAS:
            target = write_dir / f"{k}.schema.json"
            target.write_text(schema_text(k), encoding="utf-8")
            click.echo(f"wrote {target}")
        return
    if kind is not None:
        click.echo(schema_text(kind), nl=False)
    else:
        click.echo(json.dumps({k: json_schema(k) for k in SCHEMAS}, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------------------------------
# import

_SIZE = re.compile(r"^\d+(\.\d+)?[BbMmKkTt]$|^\d+x\d+[Bb]$")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_QUANT_KEYS = set(QuantizationConfig.model_fields)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{what} {path} is not valid JSON: {exc}") from None


def _known(config: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """The config restricted to catalog keys, and the dotted names of what was dropped."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in config.items():
        if key not in KNOWN_CONFIG_KEYS:
            dropped.append(prefix + key)
        elif key == "text_config" and isinstance(value, dict):
            kept[key], sub = _known(value, prefix + "text_config.")
            dropped += sub
        elif key == "quantization_config" and isinstance(value, dict):
            kept[key] = {k: v for k, v in value.items() if k in _QUANT_KEYS}
            dropped += [f"{prefix}quantization_config.{k}" for k in value if k not in _QUANT_KEYS]
        else:
            kept[key] = value
    return kept, dropped


def _names(model_id: str) -> tuple[str, str]:
    """Display name and family guessed from the repo name: 'Llama-3.1-8B-Instruct' -> ('Llama 3.1 8B
    Instruct', 'Llama 3.1')."""
    words = model_id.split("/", 1)[1].replace("_", "-").split("-")
    name = " ".join(words)
    size = next((i for i, w in enumerate(words) if _SIZE.match(w)), None)
    family = " ".join(words[:size]) if size else name
    return name, family


def _index_report(index_path: Path, config: dict[str, Any], total: int) -> list[str]:
    index = _read_json(index_path, "safetensors index")
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise InputError(f"{index_path} has no weight_map; is it a model.safetensors.index.json?")
    names = list(index["weight_map"])
    lines = [f"safetensors index: {len(names)} tensors"]
    has_head = any(n == "lm_head.weight" or n.endswith(".lm_head.weight") for n in names)
    sub = config.get("text_config")
    text: dict[str, Any] = sub if isinstance(sub, dict) else config
    tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    lines.append(f"lm_head.weight {'present' if has_head else 'absent'}; config tie_word_embeddings={tied}")
    if tied is True and has_head:
        lines.append("MISMATCH: the config ties the embeddings but the checkpoint stores lm_head.weight")
    if tied is False and not has_head:
        lines.append("MISMATCH: the config unties the embeddings but the checkpoint has no lm_head.weight")
    meta = index.get("metadata")
    size = meta.get("total_size") if isinstance(meta, dict) else None
    dtype = config.get("torch_dtype") or (text.get("torch_dtype") if text is not config else None)
    if isinstance(size, int) and not isinstance(size, bool) and dtype in _DTYPE_BYTES \
            and "quantization_config" not in config:
        implied = size // _DTYPE_BYTES[dtype]
        off = abs(implied - total) / total
        lines.append(f"total_size {size:,} bytes / {_DTYPE_BYTES[dtype]} ({dtype}) = {implied:,} parameters, "
                     f"{off:.2%} from the derived count")
        if off > 0.005:
            lines.append("MISMATCH: check the architecture (a vision tower, MTP layers or buffers may explain it)")
    else:
        lines.append("no implied count: total_size missing, dtype unknown, or a quantized checkpoint")
    return lines


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists of scalars: the layout of the hand-written catalog files."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=120)


def render_model_yaml(config: Any, model_id: str, index_path: Path | None = None) -> str:
    """A complete model file for `config` (a parsed config.json) with TODO markers for a person."""
    if not isinstance(config, dict):
        raise InputError("config.json must hold a JSON object")
    if not re.fullmatch(MODEL_ID, model_id):
        raise InputError(f"--id {model_id!r} is not ORG/NAME (letters, digits, '.', '_', '-'; not starting with '.')")
    arch_block, dropped = _known(config)
    first = [k for k in ("model_type", "architectures") if k in arch_block]
    arch_block = {k: arch_block[k] for k in [*first, *(k for k in arch_block if k not in first)]}
    try:
        arch = parse_architecture(arch_block)
    except ConfigError as exc:
        raise InputError(f"unsupported config: {exc}") from None
    except Exception as exc:  # an estimator bug must still be one line, not a traceback
        raise InputError(f"cannot interpret config: {type(exc).__name__}: {exc}") from None
    counts = count_parameters(arch)
    name, family = _names(model_id)
    hf = f"https://huggingface.co/{model_id}"
    head = {
        "id": model_id, "name": name, "family": family,
        "organization": "TODO: the organization that published the weights",
        "released": "TODO: YYYY-MM-DD the weights were first published",
        "license": "TODO: SPDX id (apache-2.0, mit) or the Hugging Face license tag",
        "tags": ["TODO: any of base, instruct, reasoning, moe, code, multimodal, long-context, distilled"],
        "links": {"model_card": hf, "config": f"{hf}/blob/main/config.json"},
        "sources": {
            "architecture": "TODO: https URL where you read config.json (a GitHub blob URL with the commit)",
            "released": "TODO: https URL stating the release date",
        },
    }
    comments = [f"Derived from the architecture: {counts.total:,} parameters in total, {counts.active:,} active "
                "per token.",
                "Add declared_params {value, source} only if a published exact count exists."]
    if index_path is not None:
        comments += _index_report(index_path, config, counts.total)
    if dropped:
        comments.append("Dropped config keys the catalog does not use: " + ", ".join(dropped))
    return "".join([
        "# yaml-language-server: $schema=../../schemas/model.schema.json\n",
        _dump(head),
        *(f"# {c}\n" for c in comments),
        "# notes: optional, 1-3 sentences of plain Markdown on memory-relevant facts.\n",
        _dump({"architecture": arch_block}),
    ])


@click.command("import")
@click.argument("config_path", metavar="CONFIG.json", type=click.Path(path_type=Path))
@click.option("--id", "model_id", required=True, help="The Hugging Face repo id, ORG/NAME, exact case.")
@click.option("--index", "index_path", type=click.Path(path_type=Path),
              help="model.safetensors.index.json, to cross-check lm_head and the parameter count.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the model file here instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def import_config(config_path: Path, model_id: str, index_path: Path | None, out_path: Path | None,
                  force: bool) -> None:
    """Turn a local config.json into a model YAML with TODO markers (no network)."""
    text = render_model_yaml(_read_json(config_path, "config"), model_id, index_path)
    if out_path is None:
        click.echo(text, nl=False)
        return
    if out_path.exists() and not force:
        raise InputError(f"{out_path} exists; pass --force to overwrite it")
    try:
        out_path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out_path}; fill in the TODO values, then run: llm-memory check", err=True)
