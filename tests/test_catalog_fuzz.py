"""Property-based fuzzing: whatever the input, the loader reports problems and never raises anything else."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_helpers import FIXTURES, copy_catalog
from generator.catalog.load import CatalogError, load_catalog
from generator.catalog.yamlsafe import YamlProblem, parse_yaml, read_yaml
from generator.cli import main

BASE_MODEL = yaml.safe_load((FIXTURES / "catalog/models/meta-llama--Llama-3.2-1B.yaml").read_text())
BASE_GPU = yaml.safe_load((FIXTURES / "catalog/gpus/nvidia-rtx-4090.yaml").read_text())
SCHEMA_LINE = "# yaml-language-server: $schema=../../schemas/{}.schema.json\n"
pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.dates(min_value=dt.date(1, 1, 1)),
    st.sampled_from(["TODO", "http://x.org", "https://x.org/a", "<b>x</b>", "&amp;", "llama", "../..", "0", ""]),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(sorted({*BASE_MODEL, *BASE_MODEL["architecture"], *BASE_GPU})))
structures = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)


def _check_catalog(files: dict[str, str | bytes]) -> None:
    """Write `files` into a copy of the fixture catalog; load_catalog and `check` may only report problems."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        copy_catalog(FIXTURES / "catalog", data)
        for name, content in files.items():
            target = data / name
            target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            load_catalog(data)
        except CatalogError as exc:
            assert exc.problems
            for p in exc.problems:
                assert p.line >= 1 and p.column >= 1
                assert "internal error" not in p.message, p
        result = CliRunner().invoke(main, ["check", "--data", str(data)])
        assert result.exit_code in (0, 1), result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_into_loader(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.yaml"
        path.write_bytes(raw)
        try:
            read_yaml(path)
        except YamlProblem as p:
            assert p.line >= 1 and p.column >= 1


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("ab:- \n\t[]{}&*!|>'\",#?%@`0.") + ["\u00e9", "\x00"]), max_size=200))
def test_yamlish_text_into_parser(text: str) -> None:
    try:
        parse_yaml(text)
    except YamlProblem as p:
        assert p.line >= 1 and p.column >= 1


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_model_and_gpu(raw: bytes) -> None:
    _check_catalog({"models/a--b.yaml": raw, "gpus/x.yaml": raw})


@FUZZ
@given(structures)
def test_random_structures_as_files(value: Any) -> None:
    text = yaml.safe_dump(value, allow_unicode=True)
    _check_catalog({"models/a--b.yaml": SCHEMA_LINE.format("model") + text,
                    "gpus/x.yaml": SCHEMA_LINE.format("gpu") + text,
                    "workloads.yaml": text})


@FUZZ
@given(st.sampled_from(sorted(BASE_MODEL["architecture"]) + ["num_key_value_heads", "head_dim", "text_config"]),
       structures)
def test_mutated_architecture(key: str, value: Any) -> None:
    model = {**BASE_MODEL, "id": "a/b", "architecture": {**BASE_MODEL["architecture"], key: value}}
    _check_catalog({"models/a--b.yaml": SCHEMA_LINE.format("model") + yaml.safe_dump(model, sort_keys=False)})


@FUZZ
@given(st.sampled_from(sorted(BASE_MODEL)), structures)
def test_mutated_model_field(key: str, value: Any) -> None:
    model = {**BASE_MODEL, "id": "a/b", key: value}
    _check_catalog({"models/a--b.yaml": SCHEMA_LINE.format("model") + yaml.safe_dump(model, sort_keys=False)})


@FUZZ
@given(st.sampled_from(["memory", "bandwidth", "released", "id", "notes", "bf16_dense_tflops"]), structures)
def test_mutated_gpu_field(key: str, value: Any) -> None:
    gpu = {**BASE_GPU, key: value}
    _check_catalog({"gpus/nvidia-rtx-4090.yaml": SCHEMA_LINE.format("gpu") + yaml.safe_dump(gpu, sort_keys=False)})
