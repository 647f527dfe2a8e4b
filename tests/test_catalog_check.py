"""`llm-memory check` on the real catalog, the fixture catalog and one broken file per kind of mistake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from catalog_helpers import FIXTURES, ROOT, catalog, cli  # noqa: F401 (fixture)
from generator.catalog.load import load_catalog

BROKEN = FIXTURES / "broken"

# fixture file, where it goes under data/, expected line, text the message must contain
CASES = [
    ("malformed_yaml.yaml", "models/example--Malformed.yaml", 9, "YAML syntax error"),
    ("wrong_type.yaml", "gpus/wrong-type.yaml", 14, "memory.reported.mib: Input should be a valid integer"),
    ("unknown_key.yaml", "models/example--Unknown-Key.yaml", 25,
     "unknown key 'num_key_value_head'; did you mean 'num_key_value_heads'?"),
    ("missing_field.yaml", "gpus/missing-field.yaml", 21, "missing required key 'source' in bandwidth"),
    ("absurd_value.yaml", "gpus/absurd-value.yaml", 22, "bandwidth.gb_per_s: Input should be less than 100000"),
    ("inconsistent_architecture.yaml", "models/example--Inconsistent.yaml", 25,
     "architecture.num_key_value_heads: 64 key/value heads exceed 32 attention heads"),
    ("declared_params_off.yaml", "models/example--Declared-Off.yaml", 18,
     "declared_params.value 1,248,172,544 differs by 1.00% from the 1,235,814,400 parameters"),
    ("duplicate_id.yaml", "models/zz--duplicate.yaml", 2, "duplicate model id 'meta-llama/Llama-3.2-1B'"),
    ("name_mismatch.yaml", "models/example--Wrong-Name.yaml", 2,
     "file name must be 'example--Right-Name.yaml' to match the id"),
    ("id_escape.yaml", "models/example--escape.yaml", 2, "id: 'example/../../etc' is not ORG/NAME"),
    ("http_link.yaml", "models/example--Http-Link.yaml", 14, "sources.released: must be an https:// URL"),
    ("html_notes.yaml", "models/example--Html-Notes.yaml", 15, "notes: raw HTML is not allowed"),
    ("alias_bomb.yaml", "models/example--Alias-Bomb.yaml", 20, "more than 20 YAML aliases"),
    ("duplicate_key.yaml", "models/example--Duplicate-Key.yaml", 5, "duplicate key 'name' (first defined on line 3)"),
    ("missing_schema_line.yaml", "models/example--No-Schema-Line.yaml", 1,
     "the first line must be exactly '# yaml-language-server: $schema=../../schemas/model.schema.json'"),
    ("unfilled_todo.yaml", "models/example--Unfilled-Todo.yaml", 7, "license: unfilled placeholder 'TODO:"),
    ("unknown_kv_precision.yaml", "workloads.yaml", 28, "kv_precision 'fp6' is not one of the kv_cache_types"),
]


def _problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("data/")]


def test_real_catalog_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = cli("check")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("workloads: OK")


def test_fixture_catalog_loads_typed_entries(catalog: Path) -> None:
    loaded = load_catalog(catalog)
    model = loaded.models["meta-llama/Llama-3.2-1B"]
    assert model.params.total == 1_235_814_400
    assert model.architecture.num_kv_heads == 8
    gpu = loaded.gpus["nvidia-rtx-4090"]
    assert gpu.usable_bytes == 24564 * 2**20
    assert "fp8" in loaded.precisions.catalog.kv_types
    assert loaded.precisions.file.precisions["q4_k_m"].label == "GGUF Q4_K_M"
    assert [w.id for w in loaded.workloads][:2] == ["chat", "long-context"]


def test_fixture_catalog_check_ok(catalog: Path) -> None:
    result = cli("check")
    assert result.exit_code == 0, result.output
    assert result.output == "1 models, 1 GPUs, 17 precisions, 5 runtimes, 7 workloads: OK\n"


@pytest.mark.parametrize(("fixture", "dest", "line", "text"), CASES, ids=[c[0] for c in CASES])
def test_broken_file_is_reported_at_its_line(catalog: Path, fixture: str, dest: str, line: int, text: str) -> None:
    shutil.copyfile(BROKEN / fixture, catalog / dest)
    result = cli("check")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    expected_prefix = f"data/{dest}:{line}:"
    matching = [p for p in _problems(result.output) if p.startswith(expected_prefix) and text in p]
    assert matching, result.output
    # The case's file is the only one at fault (a duplicate id names both files).
    others = [p for p in _problems(result.output) if not p.startswith(f"data/{dest}:")]
    assert fixture == "duplicate_id.yaml" or not others, result.output


def test_every_broken_fixture_has_a_case() -> None:
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(c[0] for c in CASES)


def test_oversized_file(catalog: Path) -> None:
    # Generated here rather than committed: a 1 MiB fixture would bloat the repository.
    big = catalog / "models" / "example--Big.yaml"
    big.write_text((BROKEN.parent / "catalog" / "models" / "meta-llama--Llama-3.2-1B.yaml").read_text()
                   + "# padding\n" * 120_000)
    result = cli("check")
    assert result.exit_code == 1
    assert "data/models/example--Big.yaml:1:1: file is larger than 1024 KiB" in result.output


def test_every_problem_is_collected(catalog: Path) -> None:
    for fixture, dest, _, _ in CASES:
        if dest != "workloads.yaml":
            shutil.copyfile(BROKEN / fixture, catalog / dest)
    result = cli("check")
    assert result.exit_code == 1
    files = {p.split(":", 1)[0] for p in _problems(result.output)}
    assert len(files) == len(CASES) - 1 + 1  # every model/GPU case, plus the original duplicated model
    assert f"{len(_problems(result.output))} problem(s)" in result.output


def test_github_annotations(catalog: Path) -> None:
    shutil.copyfile(BROKEN / "http_link.yaml", catalog / "models/example--Http-Link.yaml")
    result = cli("check", env={"GITHUB_ACTIONS": "true"})
    assert "::error file=data/models/example--Http-Link.yaml,line=14,col=3::sources.released: must be" in result.output


def test_other_files_in_folders(catalog: Path) -> None:
    (catalog / "models" / "README.md").write_text("# Models\n")
    (catalog / "models" / ".DS_Store").write_bytes(b"\0\1")
    (catalog / "gpus" / "nvidia-x.yml").write_text("id: nvidia-x\n")
    result = cli("check")
    assert _problems(result.output) == ["data/gpus/nvidia-x.yml:1:1: only .yaml files belong in this folder "
                                        "(rename .yml to .yaml)"]


def test_usable_above_reported(catalog: Path) -> None:
    path = catalog / "gpus" / "nvidia-rtx-4090.yaml"
    path.write_text(path.read_text().replace("    mib: 24564\n    reason", "    mib: 24565\n    reason"))
    result = cli("check")
    assert "data/gpus/nvidia-rtx-4090.yaml:18:5: memory.usable.mib 24565 exceeds memory.reported.mib 24564" \
        in result.output


def test_missing_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("check", "--data", "nowhere")
    assert result.exit_code == 1
    assert "nowhere:1:1: data directory not found" in result.output
