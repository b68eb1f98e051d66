"""The versioned scoring and enforcement policy, validated on load.

Weights and thresholds are data, not code: they live in a YAML file whose
``version`` is stamped on every output row, so any score can be traced to the
rules that produced it. Unknown keys are errors (a typo must not silently fall
back to a default).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from transforms.errors import PolicyError

RATE_DIMENSIONS: tuple[str, ...] = ("quality", "description", "after_sales", "fulfilment")
DIMENSIONS: tuple[str, ...] = (*RATE_DIMENSIONS, "satisfaction", "compliance")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    days: int = Field(gt=0, le=730)
    extended_days: int = Field(gt=0, le=730)
    volume_threshold_orders: int = Field(ge=0)
    half_life_days: float = Field(gt=0)

    @model_validator(mode="after")
    def _extended_is_longer(self) -> Window:
        if self.extended_days < self.days:
            raise ValueError("extended_days must be >= days")
        return self


class Evidence(_Strict):
    min_orders: int = Field(ge=0)
    min_reviews: int = Field(ge=0)
    confidence_level: float = Field(gt=0.5, lt=1.0)
    category_prior_cap: float = Field(gt=0)


class RateDimension(_Strict):
    weight: float = Field(ge=0)
    prior_strength: float = Field(gt=0)
    benchmark_multiple: float = Field(gt=1.0)
    steepness: float = Field(gt=0)
    min_category_rate: float = Field(gt=0, lt=1)


class Satisfaction(_Strict):
    weight: float = Field(ge=0)
    prior_strength: float = Field(gt=0)
    unverified_weight: float = Field(ge=0, le=1)


class Compliance(_Strict):
    weight: float = Field(ge=0)
    expiring_within_days: int = Field(ge=0)
    expiring_score: float = Field(ge=0, le=100)
    expired_score: float = Field(ge=0, le=100)
    missing_licence_regulated_score: float = Field(ge=0, le=100)
    missing_licence_unregulated_score: float = Field(ge=0, le=100)
    suspended_score: float = Field(ge=0, le=100)
    closed_score: float = Field(ge=0, le=100)
    regulated_categories: list[str]


class Dimensions(_Strict):
    quality: RateDimension
    description: RateDimension
    after_sales: RateDimension
    fulfilment: RateDimension
    satisfaction: Satisfaction
    compliance: Compliance

    def weights(self) -> dict[str, float]:
        """Composite weights by dimension, normalised to sum to 1."""
        raw = {name: getattr(self, name).weight for name in DIMENSIONS}
        total = sum(raw.values())
        return {k: v / total for k, v in raw.items()}

    @model_validator(mode="after")
    def _some_weight(self) -> Dimensions:
        if sum(getattr(self, n).weight for n in DIMENSIONS) <= 0:
            raise ValueError("at least one dimension needs a positive weight")
        return self


class AfterSales(_Strict):
    response_deadline_hours: float = Field(gt=0)
    resolution_deadline_days: float = Field(gt=0)
    return_resolution_deadline_days: float = Field(gt=0)
    escalation_channels: list[str]


class Description(_Strict):
    mismatch_max_rating: int = Field(ge=1, le=5)
    mismatch_lexicon: list[str] = Field(min_length=1)


class Tier(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    min_score: float = Field(ge=0, le=100)


class Reasons(_Strict):
    max_codes: int = Field(ge=1, le=6)
    min_points_lost: float = Field(ge=0)


class Gate(_Strict):
    file_failure: Literal["fail_run", "skip_file"]
    max_quarantine_share: float = Field(ge=0, le=1)
    min_rows_for_share: int = Field(ge=0)
    volume_band: tuple[float, float]
    volume_min_history_days: int = Field(ge=1)
    volume_min_median_rows: int = Field(ge=0)
    volume_history_days: int = Field(ge=1)
    expected_daily_sources: list[Literal["merchants", "sales", "reviews", "complaints", "returns"]]
    override: bool = False

    @model_validator(mode="after")
    def _band_ordered(self) -> Gate:
        lo, hi = self.volume_band
        if not 0 <= lo < 1 < hi:
            raise ValueError("volume_band must be [low < 1, high > 1]")
        return self


class Manipulation(_Strict):
    burst_min_reviews: int = Field(ge=1)
    burst_multiple: float = Field(gt=1)
    duplicate_text_min: int = Field(ge=2)
    suspicious_weight: float = Field(ge=0, le=1)
    complaint_surge_window_days: int = Field(ge=1, le=30)
    complaint_surge_min: int = Field(ge=1)
    complaint_surge_multiple: float = Field(gt=1)
    complaint_surge_min_complainants: int = Field(ge=1)
    surge_weight: float = Field(ge=0, le=1)


class RateRule(_Strict):
    """A hard rule beside the score: a bad-event rate proven high by a likelihood ratio, and enough buyers.

    Fires when the merchant's bad events are at least ``hard_rule_evidence_ratio`` times
    more likely if its rate were ``alternative_multiple`` times its category's rate than
    if it were ``null_multiple`` times it, the normal spread among merchants (a sequential
    probability ratio test), its raw rate is
    at least ``min_rate``, and at least ``min_affected_buyers`` distinct buyers are affected.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    dimension: Literal["quality", "description", "after_sales", "fulfilment"]
    null_multiple: float = Field(ge=1)
    alternative_multiple: float = Field(gt=1)

    @model_validator(mode="after")
    def _alternative_above_null(self) -> RateRule:
        if self.alternative_multiple <= self.null_multiple:
            raise ValueError(f"rate rule {self.name}: alternative_multiple must exceed null_multiple")
        return self
    min_rate: float = Field(ge=0, lt=1)
    min_affected_buyers: int = Field(ge=1)
    min_tier: str


class LicenceRule(_Strict):
    """A hard rule: a licence in this state in a regulated category puts the merchant at least in ``min_tier``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    licence_state: Literal["expired", "missing"]
    min_tier: str


class CollectiveComplaints(_Strict):
    """A sudden surge of complaints from many people routes the merchant to human review."""

    recent_days: int = Field(ge=1, le=60)
    min_complaints: int = Field(ge=1)
    min_distinct_complainants: int = Field(ge=1)
    surge_multiple: float = Field(gt=1)
    min_complaints_per_order: float = Field(gt=0, lt=1)
    hold_days: int = Field(ge=1)


class BlastRadius(_Strict):
    """Hold the day's actions when implausibly many merchants newly head into a penalty tier."""

    max_share: float = Field(gt=0, le=1)
    trailing_multiple: float = Field(gt=1)
    min_count: int = Field(ge=0)
    trailing_days: int = Field(ge=1, le=56)
    min_history_runs: int = Field(ge=1)
    freeze_days: int = Field(ge=1)
    cohort_drop_points: float = Field(ge=0)


class Enforcement(_Strict):
    """How scores become enforcement tiers and actions (see ``docs/enforcement.md``)."""

    penalty_from: str
    max_days_to_penalty: int = Field(ge=1)
    max_steps_per_day: int = Field(ge=1)
    min_observed_days: int = Field(ge=1)
    hysteresis_points: float = Field(ge=0, le=50)
    min_days_in_tier: int = Field(ge=0)
    improvement_days: int = Field(ge=1)
    notice_days: int = Field(ge=0)
    appeal_days: int = Field(ge=183)
    hard_rule_release_ratio: float = Field(gt=0, le=1)
    hard_rule_evidence_ratio: float = Field(gt=1)
    benchmark_exposure_cap: float = Field(gt=0)
    rate_rules: list[RateRule]
    licence_rules: list[LicenceRule]
    collective_complaints: CollectiveComplaints
    blast_radius: BlastRadius


class Policy(_Strict):
    """A validated policy file. See ``transforms/policies/active.yaml``."""

    version: str = Field(min_length=1)
    window: Window
    evidence: Evidence
    dimensions: Dimensions
    after_sales: AfterSales
    description: Description
    tiers: list[Tier] = Field(min_length=2)
    insufficient_evidence_tier: str
    reasons: Reasons
    gate: Gate
    manipulation: Manipulation
    enforcement: Enforcement
    shards: int = Field(ge=1, le=1024)
    #: sha256 of the file's bytes, filled on load, so a manifest pins the exact text.
    digest: str = ""

    @model_validator(mode="after")
    def _tiers_descend(self) -> Policy:
        scores = [t.min_score for t in self.tiers]
        if scores != sorted(scores, reverse=True) or len(set(scores)) != len(scores):
            raise ValueError("tiers must be ordered best to worst with strictly decreasing min_score")
        if scores[-1] != 0:
            raise ValueError("the last tier must have min_score 0 so every score has a tier")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names) or self.insufficient_evidence_tier in names:
            raise ValueError("tier names must be unique and differ from insufficient_evidence_tier")
        return self

    @model_validator(mode="after")
    def _enforcement_tiers_exist(self) -> Policy:
        e = self.enforcement
        names = [t.name for t in self.tiers]
        for label, tier in ([("enforcement.penalty_from", e.penalty_from)]
                            + [(f"enforcement.rate_rules.{r.name}.min_tier", r.min_tier) for r in e.rate_rules]
                            + [(f"enforcement.licence_rules.{r.name}.min_tier", r.min_tier)
                               for r in e.licence_rules]):
            if tier not in names:
                raise ValueError(f"{label}: {tier!r} is not one of the tiers {names}")
        if names.index(e.penalty_from) == 0:
            raise ValueError("enforcement.penalty_from: the best tier cannot be a penalty")
        steps = -(-names.index(e.penalty_from) // e.max_steps_per_day)
        if e.max_days_to_penalty < steps:
            raise ValueError(f"enforcement.max_days_to_penalty: escalating {e.max_steps_per_day} step(s) a day "
                             f"from {names[0]} takes {steps} days to reach {e.penalty_from}")
        rule_names = [r.name for r in e.rate_rules] + [r.name for r in e.licence_rules]
        if len(set(rule_names)) != len(rule_names):
            raise ValueError("enforcement: hard rule names must be unique")
        return self

    @property
    def tier_names(self) -> list[str]:
        """Tier names best to worst, then the insufficient-evidence tier."""
        return [t.name for t in self.tiers] + [self.insufficient_evidence_tier]


def default_policy_path() -> Path:
    """Path of the packaged active policy file."""
    return Path(str(resources.files("transforms") / "policies" / "active.yaml"))


def load_policy(path: Path | str | None = None) -> Policy:
    """Load and validate a policy file.

    Parameters
    ----------
    path
        YAML file; ``None`` loads the packaged active policy.

    Raises
    ------
    PolicyError
        When the file is missing, is not YAML, or a key is unknown or invalid; the
        message names the key path (for example ``dimensions.quality.weight``).
    """
    p = Path(path) if path is not None else default_policy_path()
    try:
        raw_bytes = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {p}: {exc.strerror}",
                          hint="check REPUTATION_POLICY_PATH") from None
    try:
        data = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {p} must be a mapping of keys")
    data["digest"] = hashlib.sha256(raw_bytes).hexdigest()
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyError(f"policy file {p} is invalid: {problems}",
                          hint="fix the named key; see docs/scoring.md for each key's meaning") from None
