"""docs/scoring.md quotes the policy; these tests keep the two in step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from transforms.policy import default_policy_path, load_policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "scoring.md"


def _table_after(marker: str) -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split(marker, 1)[1]
    rows: dict[str, str] = {}
    for line in block.splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("dimension", "tier", "policy key") or set(cells[0]) <= {"-"}:
            continue
        rows[cells[0]] = cells[1]
    return rows


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def test_documented_weights_are_the_policys() -> None:
    weights = load_policy().dimensions.weights()
    documented = {k: float(v) for k, v in _table_after("<!-- weights:").items()}
    assert documented.keys() == weights.keys()
    for k, v in weights.items():
        assert documented[k] == pytest.approx(v, abs=0.005), k


def test_documented_tiers_are_the_policys() -> None:
    documented = _table_after("<!-- tiers:")
    assert documented == {t.name: f"{t.min_score:g}" for t in load_policy().tiers}


def test_documented_values_are_the_policys_and_cover_every_number() -> None:
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    documented = _table_after("<!-- values:")
    for key, value in documented.items():
        assert float(value) == pytest.approx(float(_lookup(raw, key))), key
    numeric_keys = set()

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            numeric_keys.add(prefix)

    for section in ("window", "evidence", "dimensions", "after_sales", "description", "manipulation", "reasons"):
        walk(section, raw[section])
    undocumented = {k for k in numeric_keys if not k.endswith(".weight")} - documented.keys()
    assert not undocumented, f"policy numbers missing from docs/scoring.md: {sorted(undocumented)}"


def test_every_backquoted_policy_key_in_the_prose_exists() -> None:
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    for key in re.findall(r"`((?:window|evidence|after_sales|description|manipulation|reasons)\.[a-z_.]+)`",
                          DOC.read_text(encoding="utf-8")):
        _lookup(raw, key)
