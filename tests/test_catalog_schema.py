"""`llm-memory schema` and the committed schemas/*.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog_helpers import ROOT, cli
from generator.catalog.schema import SCHEMAS

KINDS = list(SCHEMAS)


@pytest.mark.parametrize("kind", KINDS)
def test_committed_schema_is_current(kind: str) -> None:
    result = cli("schema", "--kind", kind)
    assert result.exit_code == 0
    committed = (ROOT / "schemas" / f"{kind}.schema.json").read_text()
    assert committed == result.output, f"run: llm-memory schema --write schemas"


def test_schema_metadata() -> None:
    schema = json.loads(cli("schema", "--kind", "model").output)
    assert schema["$id"] == "urn:llm-memory-catalog:schema:model"
    assert schema["title"] == "llm-memory catalog: model"
    assert schema["additionalProperties"] is False
    assert "num_key_value_heads" in schema["$defs"]["ArchitectureBlock"]["properties"]


def test_all_kinds_and_write(tmp_path: Path) -> None:
    assert set(json.loads(cli("schema").output)) == set(KINDS)
    result = cli("schema", "--write", str(tmp_path))
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{k}.schema.json" for k in KINDS)


@pytest.mark.parametrize(("folder", "kind"), [("data/models", "model"), ("data/gpus", "gpu")])
def test_data_files_point_at_their_schema(folder: str, kind: str) -> None:
    for path in (ROOT / folder).glob("*.yaml"):
        first = path.read_text().split("\n", 1)[0]
        assert first == f"# yaml-language-server: $schema=../../schemas/{kind}.schema.json", path
        assert (path.parent / f"../../schemas/{kind}.schema.json").resolve().is_file()
