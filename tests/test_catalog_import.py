"""`llm-memory import`: config.json -> model YAML -> fill in the TODOs -> `llm-memory check` passes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from catalog_helpers import FIXTURES, catalog, cli  # noqa: F401 (fixture)

CONFIG = FIXTURES / "import" / "config.json"
INDEX = FIXTURES / "import" / "model.safetensors.index.json"
FILLED = {
    "organization": "Meta",
    "released": "2024-09-25",
    "license": "llama3.2",
    "tags": "[base]",
    "architecture": "https://github.com/mlc-ai/mlc-llm/blob/01ced331a9e155c5ba4e7625b027a51bee611450/"
                    "python/mlc_llm/model/model_preset.py",
    "released_source": "https://ai.meta.com/blog/llama-3-2-connect-2024-vision-edge-mobile-devices/",
}


def _fill(text: str) -> str:
    out = []
    for line in text.splitlines():
        key = line.strip().split(":", 1)[0]
        if "TODO" in line:
            indent = line[: len(line) - len(line.lstrip())]
            value = FILLED["released_source"] if indent and key == "released" else FILLED[key]
            line = f"{indent}{key}: {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_round_trip(catalog: Path) -> None:
    target = catalog / "models" / "example--Llama-Import.yaml"
    result = cli("import", str(CONFIG), "--id", "example/Llama-Import", "--out", str(target))
    assert result.exit_code == 0, result.output
    generated = target.read_text()
    assert generated.startswith("# yaml-language-server: $schema=../../schemas/model.schema.json\n")
    assert "# Derived from the architecture: 1,235,814,400 parameters in total, 1,235,814,400 active" in generated
    assert "# Dropped config keys the catalog does not use: attention_dropout, bos_token_id" in generated
    assert "model_card: https://huggingface.co/example/Llama-Import" in generated
    assert "family: Llama Import" in generated

    # Unfilled, the TODO markers fail the check, each on its own line.
    result = cli("check")
    assert result.exit_code == 1
    todo_lines = [p for p in result.output.splitlines() if "unfilled placeholder" in p]
    assert len(todo_lines) == 6
    assert all(p.startswith("data/models/example--Llama-Import.yaml:") for p in todo_lines)

    target.write_text(_fill(generated))
    result = cli("check")
    assert result.exit_code == 0, result.output + target.read_text()
    assert result.output.startswith("2 models")


def test_architecture_is_verbatim(catalog: Path) -> None:
    result = cli("import", str(CONFIG), "--id", "example/Llama-Import")
    import yaml

    data = yaml.safe_load(result.output)
    config = json.loads(CONFIG.read_text())
    assert list(data["architecture"])[:2] == ["model_type", "architectures"]
    for key, value in data["architecture"].items():
        assert config[key] == value


def test_index_report() -> None:
    result = cli("import", str(CONFIG), "--id", "meta-llama/Llama-3.2-1B", "--index", str(INDEX))
    assert result.exit_code == 0, result.output
    assert "# lm_head.weight absent; config tie_word_embeddings=True" in result.output
    assert "= 1,235,814,400 parameters, 0.00% from the derived count" in result.output
    assert "MISMATCH" not in result.output


def test_index_mismatch(tmp_path: Path) -> None:
    index = json.loads(INDEX.read_text())
    index["weight_map"]["lm_head.weight"] = "model.safetensors"
    index["metadata"]["total_size"] += 2 * 128256 * 2048
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    result = cli("import", str(CONFIG), "--id", "meta-llama/Llama-3.2-1B", "--index", str(path))
    assert "MISMATCH: the config ties the embeddings but the checkpoint stores lm_head.weight" in result.output
    assert "MISMATCH: check the architecture" in result.output


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m.yaml"
    out.write_text("keep")
    result = cli("import", str(CONFIG), "--id", "a/b", "--out", str(out))
    assert result.exit_code == 2
    assert "exists; pass --force" in result.output
    assert out.read_text() == "keep"
    assert cli("import", str(CONFIG), "--id", "a/b", "--out", str(out), "--force").exit_code == 0
    assert out.read_text().startswith("# yaml-language-server")


def test_bad_configs_are_one_line(tmp_path: Path) -> None:
    cases = {
        "missing.json": None,
        "not-json.json": "{nope",
        "list.json": "[1, 2]",
        "bert.json": json.dumps({"model_type": "bert", "hidden_size": 768}),
        "broken.json": json.dumps({"model_type": "llama", "num_attention_heads": 8, "num_key_value_heads": 16}),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        result = cli("import", str(path), "--id", "a/b")
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, result.output)
    assert "unsupported model_type 'bert'" in cli("import", str(tmp_path / "bert.json"), "--id", "a/b").output


def test_bad_id() -> None:
    result = cli("import", str(CONFIG), "--id", "../etc")
    assert result.exit_code == 2
    assert re.search(r"--id '\.\./etc' is not ORG/NAME", result.output)
