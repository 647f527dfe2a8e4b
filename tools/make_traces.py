"""Generate the standard trace records for catalog models, skipping the files that already exist.

    python tools/make_traces.py meta-llama/Llama-3.2-1B Qwen/Qwen3-0.6B [--out data/traces] [--only inference-sdpa]

Each trace is written to OUT/<ORG--NAME>--<conditions>.yaml (generator/trace/spec.py, file_name); its wall time
goes to stderr. A model that transformers runs eager (gemma2, gpt_oss) gets eager traces instead of sdpa ones, and
LoRA adapts attention and the MLP (attention and the fused experts of an MoE model). Needs the trace extra
(pip install '.[trace]'). A trace that fails is reported and the others still run; the exit status is 1 when any
failed, 2 when the extra is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.trace.spec import TraceSpec, file_name  # noqa: E402

# The standard set: what people run on one GPU, at the context each workload is usually traced at.
INFERENCE_CONTEXT = 2048
TRAIN_CONTEXT = 512
STANDARD: dict[str, TraceSpec] = {
    "inference-sdpa": TraceSpec(workload="inference", context=INFERENCE_CONTEXT, attention="sdpa"),
    "inference-eager": TraceSpec(workload="inference", context=INFERENCE_CONTEXT, attention="eager"),
    "train-amp": TraceSpec(workload="train", context=TRAIN_CONTEXT, recipe="amp"),
    "train-amp-ckpt": TraceSpec(workload="train", context=TRAIN_CONTEXT, recipe="amp", checkpointing="full"),
    "train-pure": TraceSpec(workload="train", context=TRAIN_CONTEXT, recipe="pure"),
    "lora-fp32": TraceSpec(workload="lora", context=TRAIN_CONTEXT, adapter_dtype="fp32"),
}
OPTIONAL: dict[str, TraceSpec] = {
    "lora-bf16": TraceSpec(workload="lora", context=TRAIN_CONTEXT, adapter_dtype="bf16"),
}


def adapt(chosen: dict[str, TraceSpec], facts: dict[str, Any]) -> dict[str, TraceSpec]:
    """The chosen specs as this model runs them. A model transformers will not run with SDPA (gemma2, gpt_oss)
    runs eager by default: its sdpa specs become eager ones (dropped when that eager spec is chosen already).
    LoRA adapts attention and the MLP of a dense model, attention and the fused experts of an MoE one."""
    out: dict[str, TraceSpec] = {}
    for name, spec in chosen.items():
        if spec.attention == "sdpa" and not facts["sdpa"]:
            spec = replace(spec, attention="eager")
            if spec in chosen.values():
                continue
            name += " (eager: no sdpa)"
        if spec.workload == "lora":
            spec = replace(spec, lora_targets=facts["lora_targets"])
        out[name] = spec
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="catalog ids, e.g. meta-llama/Llama-3.2-1B")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "traces", help="folder for the records")
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="catalog folder")
    ap.add_argument("--only", action="append", choices=[*STANDARD, *OPTIONAL], metavar="NAME",
                    help=f"run only these (repeatable): {', '.join([*STANDARD, *OPTIONAL])}; default: the "
                         f"standard set ({', '.join(STANDARD)})")
    ap.add_argument("--force", action="store_true", help="trace again even when the file exists")
    args = ap.parse_args(argv)

    from generator.errors import LLMMemoryError
    from generator.trace.command import build_record, catalog_architecture, dump_record, require_extra, trace_one

    try:
        require_extra(lora=True)
    except LLMMemoryError as e:
        print(f"Error: {e.format_message()}", file=sys.stderr)
        return 2
    from generator.trace.runner import TraceError, model_facts

    chosen = {name: {**STANDARD, **OPTIONAL}[name] for name in (args.only or STANDARD)}
    failed = 0
    for model in args.models:
        try:
            architecture = catalog_architecture(model, args.data)
        except LLMMemoryError as e:
            print(f"{model}: {e.format_message()}", file=sys.stderr)
            failed += 1
            continue
        try:
            facts = model_facts(architecture)
        except TraceError as e:
            print(f"{model}: {e}", file=sys.stderr)
            failed += 1
            continue
        for name, spec in adapt(chosen, facts).items():
            path = args.out / file_name(model, architecture, spec)
            if path.exists() and not args.force:
                print(f"{path.name}: exists, skipped", file=sys.stderr)
                continue
            started, cpu = time.monotonic(), time.process_time()
            try:
                result, versions = trace_one(architecture, spec)
            except LLMMemoryError as e:
                print(f"{path.name}: FAILED after {time.monotonic() - started:.1f} s: {e.format_message()}",
                      file=sys.stderr)
                failed += 1
                continue
            record = build_record(model, None, architecture, spec, result, versions)
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(dump_record(record), encoding="utf-8")
            print(f"{path.name}: peak {record['peak_bytes']:,} bytes ({record['peak_phase']}), "
                  f"{time.monotonic() - started:.1f} s wall, {time.process_time() - cpu:.1f} s CPU", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
