"""The policy file validates on load and names the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transforms.errors import PolicyError
from transforms.policy import default_policy_path, load_policy


def _write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    mutate(data)
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_active_policy_loads_with_version_and_digest() -> None:
    p = load_policy()
    assert p.version
    assert len(p.digest) == 64
    assert p.tier_names[-1] == p.insufficient_evidence_tier


def test_negative_weight_names_the_key(tmp_path: Path) -> None:
    p = _write(tmp_path, lambda d: d["dimensions"]["quality"].__setitem__("weight", -1))
    with pytest.raises(PolicyError, match=r"dimensions\.quality\.weight"):
        load_policy(p)


def test_unknown_key_is_rejected_not_ignored(tmp_path: Path) -> None:
    p = _write(tmp_path, lambda d: d["window"].__setitem__("dayz", 3))
    with pytest.raises(PolicyError, match=r"window\.dayz"):
        load_policy(p)


def test_tiers_must_descend(tmp_path: Path) -> None:
    p = _write(tmp_path, lambda d: d["tiers"].reverse())
    with pytest.raises(PolicyError, match="tiers"):
        load_policy(p)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")
