"""Pydantic models of the four catalog file kinds. Their JSON Schemas are committed under schemas/.

These check shape, types and ranges only; cross-file and derived checks live in load.py.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema,
    create_model,
)

from ..estimate.architecture import GROUPS, KNOWN_CONFIG_KEYS

SCHEMA_BASE = "urn:llm-memory-catalog:schema:"  # $id namespace of the committed schemas


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _https(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError(f"must be an https:// URL, got {value!r}")
    return value


Url = Annotated[
    str, StringConstraints(max_length=500), AfterValidator(_https),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https://", "maxLength": 500}),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Notes = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=40)]
PositiveInt = Annotated[int, Field(gt=0, le=10**9)]
Fraction = Annotated[
    float | Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?(/[1-9][0-9]*)?$")],
    Field(description="a number, or a fraction written as 'a/b'"),
]

MODEL_ID = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,95}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,95}$"
GPU_ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
MAX_MIB = (1 << 20) - 1  # under 1 TiB per device


def _matching(pattern: str, what: str) -> Any:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


ModelId = Annotated[
    str, _matching(MODEL_ID, "ORG/NAME (letters, digits, '.', '_', '-'; neither part may start with '.')"),
    WithJsonSchema({"type": "string", "pattern": MODEL_ID}),
]
GpuId = Annotated[
    str, _matching(GPU_ID, "lowercase letters and digits joined by single hyphens"), StringConstraints(max_length=60),
    WithJsonSchema({"type": "string", "pattern": GPU_ID, "maxLength": 60}),
]


def _year_month_or_date(value: Any) -> Any:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?", value):
        return value
    raise ValueError(f"must be a date YYYY-MM-DD or YYYY-MM, got {value!r}")


YearMonth = Annotated[
    str, BeforeValidator(_year_month_or_date),
    WithJsonSchema({"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?$"}),
]


# --------------------------------------------------------------------------------------------------
# Models


class QuantizationConfig(Strict):
    quant_method: str
    fmt: str | None = None
    weight_block_size: list[PositiveInt] | None = None
    modules_to_not_convert: list[str] | None = None
    bits: PositiveInt | None = None
    group_size: PositiveInt | None = None


# The field lists follow KNOWN_CONFIG_KEYS, so these two models are built at import time. Their field
# maps are dict[str, Any]: a class made at run time is a value to mypy, not a type it can check.
_FREE_KEYS = KNOWN_CONFIG_KEYS - {"quantization_config", "text_config"}
_arch_fields: dict[str, Any] = {k: (Any, None) for k in sorted(_FREE_KEYS)}
_arch_fields["quantization_config"] = (QuantizationConfig | None, None)
TextConfig = create_model(
    "TextConfig", __base__=Strict, __doc__="A multimodal config's language-model part.", **_arch_fields)
_block_fields: dict[str, Any] = {**_arch_fields, "text_config": (TextConfig | None, None)}
ArchitectureBlock = create_model(
    "ArchitectureBlock", __base__=Strict,
    __doc__="config.json fields copied verbatim; only keys the estimator knows.", **_block_fields)

Tag = Literal["base", "instruct", "reasoning", "moe", "code", "multimodal", "long-context", "distilled"]


class ModelLinks(Strict):
    model_card: Url
    config: Url


class ModelSources(Strict):
    architecture: Url
    released: Url


class DeclaredParams(Strict):
    value: Annotated[int, Field(gt=0, lt=10**14)]
    source: Url


class ModelFile(Strict):
    """data/models/ORG--NAME.yaml: one model checkpoint."""

    id: ModelId
    name: Text
    family: Text
    organization: Text
    released: dt.date
    license: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.+-]*$", max_length=60)]
    tags: Annotated[list[Tag], Field(max_length=8)] = []
    links: ModelLinks
    sources: ModelSources
    declared_params: DeclaredParams | None = None
    notes: Notes | None = None
    architecture: ArchitectureBlock  # type: ignore[valid-type]  # a class made by create_model, a value to mypy


# --------------------------------------------------------------------------------------------------
# GPUs

Mib = Annotated[int, Field(gt=0, le=MAX_MIB)]


class Marketed(Strict):
    value: Annotated[float, Field(gt=0, lt=1024)]
    unit: Literal["GB", "GiB"]
    source: Url


class Reported(Strict):
    mib: Mib
    tool: Text
    source: Url


class Usable(Strict):
    mib: Mib
    reason: Annotated[str, StringConstraints(min_length=1, max_length=400)]
    source: Url


class Memory(Strict):
    marketed: Marketed
    reported: Reported
    usable: Usable


class Bandwidth(Strict):
    gb_per_s: Annotated[float, Field(gt=0, lt=100_000)]
    source: Url


class Tflops(Strict):
    value: Annotated[float, Field(gt=0, lt=100_000)]
    source: Url


class GpuFile(Strict):
    """data/gpus/ID.yaml: one accelerator in one memory configuration."""

    id: GpuId
    name: Text
    vendor: Literal["NVIDIA", "AMD", "Apple", "Intel", "Google"]
    kind: Literal["datacenter", "workstation", "consumer", "unified"]
    released: YearMonth | None = None
    memory_type: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    memory: Memory
    bandwidth: Bandwidth
    bf16_dense_tflops: Tflops | None = None
    notes: Notes | None = None


# --------------------------------------------------------------------------------------------------
# Precisions


class PerTile(Strict):
    rows: PositiveInt
    cols: PositiveInt
    bytes: Fraction


class PerRowGroup(Strict):
    inputs: PositiveInt
    bytes: Fraction


class PerGroup(Strict):
    weights: PositiveInt
    bytes: Fraction


class StorageType(Strict):
    label: Text
    source: Annotated[str, StringConstraints(min_length=1, max_length=400)]
    bits: Annotated[int, Field(gt=0, le=64)] | None = None
    block: PositiveInt | None = None
    block_bytes: Annotated[int, Field(gt=0, le=4096)] | None = None
    fallback: Slug | None = None
    per_tile: PerTile | None = None
    per_row: Fraction | None = None
    per_row_group: PerRowGroup | None = None
    per_input: Fraction | None = None
    per_group: list[PerGroup] | None = None
    per_tensor: Annotated[int, Field(ge=0, le=10**6)] | None = None


class Rule(Strict):
    type: Slug
    names: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] | None = None
    groups: list[Literal[GROUPS]] | None = None  # type: ignore[valid-type]  # Literal of the names in a tuple
    dims: Literal["matrix", "vector"] | None = None
    when: list[Slug] | None = None


class Precision(Strict):
    label: Text
    family: Literal["float", "gguf", "bitsandbytes", "gptq", "fp8", "mxfp4"]
    default: Slug
    description: Annotated[str, StringConstraints(min_length=1, max_length=600)] | None = None
    source: Annotated[str, StringConstraints(max_length=400)] | None = None
    nominal_bits: Annotated[float, Field(gt=0, le=64)] | None = None
    rules: list[Rule] = []


class KvCacheType(Strict):
    label: Text
    bytes_per_element: Fraction
    source: Annotated[str, StringConstraints(min_length=1, max_length=400)]


class PrecisionsFile(Strict):
    """data/precisions.yaml: storage types, weight precisions and KV-cache types."""

    sources: dict[Slug, Url] = {}
    storage_types: dict[Slug, StorageType]
    precisions: dict[Slug, Precision]
    kv_cache_types: dict[Slug, KvCacheType]


# --------------------------------------------------------------------------------------------------
# Runtimes

RuntimeId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=40)]
Source = Annotated[str, StringConstraints(min_length=1, max_length=600)]
WorkloadKind = Literal["inference", "train", "lora", "qlora"]
Family = Literal["float", "gguf", "bitsandbytes", "gptq", "fp8", "mxfp4"]


class KvCacheProfile(Strict):
    default_type: Slug
    block_tokens: Annotated[int, Field(gt=0, le=65_536)] = 1
    sliding_window_prefill: Literal["window", "prompt"] = "window"
    source: Source | None = None


class TrainingProfile(Strict):
    default_optimizer: Literal["adamw_torch_fused", "adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit",
                               "adafactor", "sgd", "lion_32bit"]
    default_recipe: Literal["amp", "mixed", "pure", "fp32"]
    zero: bool = False
    source: Source


class RuntimeProfile(Strict):
    label: Text
    description: Annotated[str, StringConstraints(min_length=1, max_length=600)]
    workloads: Annotated[list[WorkloadKind], Field(min_length=1)]
    formats: Annotated[list[Family], Field(min_length=1)]
    prefill_chunk: Annotated[int, Field(gt=0, le=10**7)] | None = None
    prefill_source: Source | None = None
    kv_cache: KvCacheProfile
    memory_fraction: Annotated[float, Field(gt=0, le=1)] = 1
    memory_fraction_source: Source | None = None
    overhead_gib: Annotated[float, Field(ge=0, le=64)]
    overhead_source: Source | None = None
    training: TrainingProfile | None = None


class RuntimesFile(Strict):
    """data/runtimes.yaml: how each runtime prefills, caches and trains."""

    sources: dict[Slug, Url] = {}
    runtimes: Annotated[dict[RuntimeId, RuntimeProfile], Field(min_length=1)]


# --------------------------------------------------------------------------------------------------
# Traces (llm-memory trace records)

Bytes = Annotated[int, Field(ge=0, lt=2**50)]


class TraceConditions(Strict):
    workload: Literal["inference", "train", "lora"]
    context: Annotated[int, Field(gt=0, le=2**21)]
    batch: Annotated[int, Field(gt=0, le=4096)]
    attention: Literal["sdpa", "eager"]
    dtype: Literal["bf16", "fp16", "fp32"] | None = None
    all_logits: bool | None = None
    recipe: Literal["amp", "pure", "fp32"] | None = None
    optimizer: Literal["adamw_torch_fused", "adamw_torch", "sgd", "adafactor"] | None = None
    checkpointing: Literal["none", "full"] | None = None
    lora_rank: Annotated[int, Field(gt=0, le=4096)] | None = None
    lora_alpha: Annotated[int, Field(gt=0, le=1_000_000)] | None = None
    lora_dropout: Annotated[float, Field(ge=0, le=1)] | None = None
    lora_targets: list[Literal["attention", "mlp", "experts"]] | None = None
    adapter_dtype: Literal["fp32", "bf16"] | None = None
    steps: Annotated[int, Field(gt=0, le=10)] | None = None


class TraceFile(Strict):
    """data/traces/*.yaml: PyTorch's own peak of one model and workload (written by llm-memory trace)."""

    model: ModelId | None = None
    config: Annotated[str, StringConstraints(max_length=500)] | None = None  # a traced config file's path
    model_type: Slug
    config_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    conditions: TraceConditions
    lora_modules: list[Annotated[str, StringConstraints(max_length=80)]] | None = None
    parameters: Bytes
    trainable_parameters: Bytes
    peak_bytes: Bytes
    crosscheck_peak_bytes: Bytes
    peak_phase: Annotated[str, StringConstraints(max_length=80)]
    peak_module: Annotated[str, StringConstraints(max_length=200)] = ""
    by_category: dict[Slug, Bytes]
    step_peak_bytes: list[Bytes] | None = None
    versions: dict[Slug, Annotated[str, StringConstraints(max_length=60)]]
    method: Annotated[str, StringConstraints(max_length=2000)]
    notes: list[Annotated[str, StringConstraints(max_length=2000)]] = []


# --------------------------------------------------------------------------------------------------
# Workloads


class Workload(Strict):
    id: Annotated[str, StringConstraints(pattern=GPU_ID, max_length=40)]
    label: Text
    description: Annotated[str, StringConstraints(min_length=1, max_length=600)]
    workload: Literal["inference", "train", "lora", "qlora"]
    context: Annotated[int, Field(gt=0, le=10**8)] | Literal["max"]
    context_cap: bool = False
    batch: Annotated[int, Field(gt=0, le=4096)] = 1
    kv_precision: Slug = "bf16"
    optimizer: Literal["adamw_torch_fused", "adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit", "adafactor", "sgd",
                       "lion_32bit", "adamw", "adamw_8bit", "lion"] | None = None
    runtime: RuntimeId | None = None
    recipe: Literal["amp", "mixed", "pure", "fp32"] | None = None
    adapter_dtype: Literal["fp32", "bf16"] | None = None
    checkpointing: Literal["none", "selective", "full"] = "none"
    zero: Annotated[int, Field(ge=0, le=3)] = 0
    gpus: Annotated[int, Field(gt=0, le=4096)] = 1
    lora_rank: Annotated[int, Field(gt=0, le=4096)] | None = None
    prefill_chunk: Annotated[int, Field(gt=0, le=10**7)] | None = None
    precision: Slug | None = None


class WorkloadsFile(Strict):
    """data/workloads.yaml: the named scenarios the site crosses with every model."""

    workloads: Annotated[list[Workload], Field(min_length=1, max_length=100)]


SCHEMAS: dict[str, type[BaseModel]] = {
    "model": ModelFile, "gpu": GpuFile, "precisions": PrecisionsFile, "workloads": WorkloadsFile,
    "runtimes": RuntimesFile, "trace": TraceFile,
}


def json_schema(kind: str) -> dict[str, Any]:
    model = SCHEMAS[kind]
    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{SCHEMA_BASE}{kind}", **schema,
            "title": f"llm-memory catalog: {kind}"}
