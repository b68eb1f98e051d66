"""How good the scores are: against a generated marketplace's hidden truth, and against the future.

:func:`evaluate` compares scores with ``truth/`` (generated marketplaces only);
:func:`predictive_validity` compares scores published on a day with the merchants' bad
outcomes after it, read from the lake alone, so it works on real data as well. Only tests
and benchmarks use this module; the pipeline never reads ``truth/``.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

#: The reason code each bad archetype should produce, by the dimension it damages.
EXPECTED_REASON = {
    "poor_quality": "quality_defect_rate_high",
    "misleading": "description_mismatch_rate_high",
    "neglectful_after_sales": "after_sales_failure_rate_high",
    "late_fulfilment": "fulfilment_failure_rate_high",
    "unlicensed": "compliance_problem",
    "review_buyer": "quality_defect_rate_high",
}
PENALTY_TIERS = ("warning", "restricted", "suspended")


def evaluate(scores: pl.DataFrame, truth_dir: Path | str, *, min_orders: int = 100) -> dict[str, Any]:
    """Compare published scores with the hidden truth.

    Returns the Spearman rank correlation between ``score`` and ``true_conduct_score``
    for merchants with at least ``min_orders`` orders in their window, the share of
    each bad archetype with that much evidence whose expected reason is among the
    first two reason codes, and the good merchants with fewer than 30 orders placed
    in a penalty tier.
    """
    truth = pl.read_parquet(Path(truth_dir) / "merchants.parquet")
    j = scores.join(truth.select("merchant_id", "archetype", "true_conduct_score"), on="merchant_id", how="inner")
    big = j.filter(pl.col("orders_count") >= min_orders)
    rho = big.select(pl.corr("score", "true_conduct_score", method="spearman")).item() if big.height > 2 else None
    reasons: dict[str, Any] = {}
    for archetype, code in EXPECTED_REASON.items():
        sub = j.filter((pl.col("archetype") == archetype) & pl.col("is_sufficient_evidence")
                       & (pl.col("orders_count") >= min_orders))
        # Hard-rule codes (enforcement) come first when they fire; the check is about the
        # score's own dimension reasons, so they are set aside before taking the first two.
        dims = pl.col("reason_codes").list.eval(pl.element().filter(~pl.element().str.starts_with("hard_rule:")))
        hit = sub.filter(dims.list.head(2).list.contains(code)).height
        reasons[archetype] = {"merchants": sub.height, "hits": hit,
                              "share": round(hit / sub.height, 4) if sub.height else None}
    small_good_penalised = j.filter(
        pl.col("archetype").is_in(["good", "bombed_good"]) & (pl.col("orders_count") < 30)
        & pl.col("tier").is_in(PENALTY_TIERS)).height
    return {"spearman": rho, "merchants_ranked": big.height, "reasons": reasons,
            "small_good_penalised": small_good_penalised}


#: Kinds of later bad outcome and the count columns of :func:`later_outcomes` behind each.
OUTCOME_KINDS = {
    "quality": ("quality_returns", "quality_complaints"),
    "description": ("nad_returns", "nad_complaints"),
    "service": ("unresolved_complaints",),
    "fulfilment": ("late_or_cancelled",),
}
_OUTCOME_COUNTS = ["orders", "late_or_cancelled", "quality_returns", "nad_returns", "quality_complaints",
                   "nad_complaints", "unresolved_complaints"]


def _staged(root: Path, source: str, *, after: date | None = None, through: date | None = None
            ) -> pl.LazyFrame | None:
    """Staged rows of ``source`` delivered after ``after`` and up to ``through`` (either bound
    optional; current versions of versioned sources), or ``None`` if there are none."""
    from transforms.schemas import SOURCES
    from transforms.validation import current_versions

    def wanted(d: date) -> bool:
        return (after is None or d > after) and (through is None or d <= through)

    dirs = sorted(p for p in (root / "staged" / source).glob("dt=*")
                  if wanted(date.fromisoformat(p.name[3:])) and any(p.glob("*.parquet")))
    if not dirs:
        return None
    scan = pl.scan_parquet([str(d / "*.parquet") for d in dirs])
    spec = SOURCES[source]
    return current_versions(scan, spec) if spec.versioning == "versioned" else scan


def later_outcomes(root: Path | str, after: date, horizon_days: int, *, tz: str = "UTC",
                   resolution_deadline_days: float = 14.0) -> pl.DataFrame:
    """Per merchant, its orders and bad outcomes in the ``horizon_days`` days after ``after``.

    Read from the staged lake (current versions; a later run must have staged the
    period's deliveries), for events whose business day lies in
    (``after``, ``after + horizon_days``]:

    * ``quality_returns`` / ``nad_returns``: returns for a defect or damage / for not as described;
    * ``quality_complaints`` / ``nad_complaints``: complaints about quality or counterfeits /
      about goods not as described;
    * ``unresolved_complaints``: complaints of any category still open or escalated, or
      resolved, more than ``resolution_deadline_days`` days after they were opened (as of
      the newest complaint version in the lake);
    * ``late_or_cancelled``: late shipments plus seller cancellations.

    ``bad_outcomes`` is their sum and ``bad_rate`` the sum per order.
    """
    root = Path(root)
    end = after + timedelta(days=horizon_days)

    def in_period(day: pl.Expr) -> pl.Expr:
        return (day > after) & (day <= end)

    frames: list[pl.LazyFrame] = []
    sales = _staged(root, "sales", after=after)
    if sales is None:
        raise ValueError(f"no staged sales after {after} under {root}: run a later date first")
    frames.append(sales.filter(in_period(pl.col("date"))).group_by("merchant_id").agg(
        pl.col("orders").sum().alias("orders"),
        (pl.col("late_shipments") + pl.col("cancellations")).sum().alias("late_or_cancelled")))
    returns = _staged(root, "returns", after=after)
    if returns is not None:
        frames.append(returns.filter(in_period(pl.col("requested_at").dt.convert_time_zone(tz).dt.date()))
                      .group_by("merchant_id").agg(
                          pl.col("reason").is_in(["quality_defect", "damaged"]).sum().alias("quality_returns"),
                          (pl.col("reason") == "not_as_described").sum().alias("nad_returns")))
    complaints = _staged(root, "complaints", after=after)
    if complaints is not None:
        last = complaints.select(pl.col("updated_at").max()).collect().item()
        deadline_us = int(resolution_deadline_days * 24 * 3_600_000_000)
        unresolved = ((pl.col("status").is_in(["open", "escalated"])
                       & ((pl.lit(last) - pl.col("opened_at")).dt.total_microseconds() > deadline_us))
                      | ((pl.col("resolved_at") - pl.col("opened_at")).dt.total_microseconds() > deadline_us)
                      ).fill_null(False)
        frames.append(complaints.filter(in_period(pl.col("opened_at").dt.convert_time_zone(tz).dt.date()))
                      .group_by("merchant_id").agg(
                          pl.col("category").is_in(["quality", "counterfeit"]).sum().alias("quality_complaints"),
                          (pl.col("category") == "not_as_described").sum().alias("nad_complaints"),
                          unresolved.sum().alias("unresolved_complaints")))
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on="merchant_id", how="left")
    got = out.collect()
    got = got.with_columns([pl.col(c).fill_null(0).cast(pl.Int64) if c in got.columns
                            else pl.lit(0, pl.Int64).alias(c) for c in _OUTCOME_COUNTS[1:]])
    bad = pl.sum_horizontal(_OUTCOME_COUNTS[1:])
    return (got.with_columns(bad.alias("bad_outcomes"))
            .with_columns(pl.when(pl.col("orders") > 0).then(pl.col("bad_outcomes") / pl.col("orders"))
                          .otherwise(None).alias("bad_rate"))
            .select("merchant_id", *_OUTCOME_COUNTS, "bad_outcomes", "bad_rate").sort("merchant_id"))


def _auc(frame: pl.DataFrame, predictor: str, positive: str) -> float | None:
    """Area under the ROC curve of ``-predictor`` (low = predicted bad) for the ``positive`` flag.

    Mann-Whitney form with average ranks, so ties count one half.
    """
    n_pos = int(frame[positive].sum())
    n_neg = frame.height - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = (-frame[predictor]).rank("average")
    r_pos = float(ranks.filter(frame[positive]).sum())
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _worst(col: str, share: float) -> pl.Expr:
    """True for the ``share`` of rows with the highest ``col`` (ties broken by merchant_id)."""
    n = (pl.len() * share).ceil().clip(lower_bound=1)
    return pl.struct(pl.col(col).neg(), "merchant_id").rank("ordinal") <= n


PREDICTORS = {"score": "score", "average_rating": "average_rating"}


def predictive_validity(scores: pl.DataFrame, root: Path | str, *, horizon_days: int = 60,
                        min_orders: int = 100, worst_share: float = 0.10, tz: str = "UTC") -> dict[str, Any]:
    """How well scores published on a day rank merchants by their bad outcomes afterwards.

    ``scores`` are the rows published for one ``score_date`` D; the outcomes are those of
    :func:`later_outcomes` in the ``horizon_days`` days after D. For every merchant with
    sufficient evidence on D and at least ``min_orders`` orders in the later period, two
    predictors known on D are compared: the composite ``score`` and the merchant's plain
    average star rating over the same window (``rating_mean_raw``; a merchant without
    reviews gets the mean of the others). Two outcomes are predicted:

    * ``pooled``: all bad outcomes per order (``bad_rate``), as a buyer meets them. Late
      shipments are the most frequent kind, so they weigh most, and categories with high
      base rates (electronics, apparel) rank worst whatever the merchant does;
    * ``balanced``: for each of the four kinds of :data:`OUTCOME_KINDS`, the merchant's
      later count over the count its orders would have at its category's pooled rate (one
      pseudo-event added to both), averaged over the kinds: how much worse than its peers
      the merchant turned out, every kind of harm counting alike.

    For each predictor and outcome: ``spearman``, the rank correlation with the outcome
    (sign flipped, so higher = the predictor ranks later-bad merchants lower), and ``auc``,
    the probability that a merchant in the worst ``worst_share`` of the outcome is ranked
    below one that is not (0.5 = chance). ``pooled_within_category`` repeats ``spearman``
    on the pooled rate divided by its category's median.
    """
    day = scores["score_date"][0]
    outcomes = later_outcomes(root, day, horizon_days, tz=tz)
    j = (scores.filter(pl.col("is_sufficient_evidence"))
         .select("merchant_id", "category", "score", "rating_mean_raw")
         .join(outcomes, on="merchant_id", how="inner")
         .filter(pl.col("orders") >= min_orders))
    out: dict[str, Any] = {"score_date": day, "horizon_days": horizon_days, "merchants": j.height}
    if j.height < 10:
        return out
    kinds = []
    for cols in OUTCOME_KINDS.values():
        num = pl.sum_horizontal(cols)
        expected = pl.col("orders") * num.sum().over("category") / pl.col("orders").sum().over("category")
        # Observed over expected count, each with one pseudo-event added: a smoothed
        # standardised ratio, so one unresolved complaint where 0.1 was expected does not
        # outweigh every other kind of outcome.
        kinds.append((num + 1.0) / (expected + 1.0))
    j = j.with_columns(
        pl.col("rating_mean_raw").fill_null(pl.col("rating_mean_raw").mean()).alias("average_rating"),
        (pl.sum_horizontal(kinds) / len(kinds)).alias("balanced"),
        (pl.col("bad_rate") / pl.col("bad_rate").median().over("category").clip(lower_bound=1e-9))
        .alias("pooled_relative"),
    ).with_columns(_worst("bad_rate", worst_share).alias("_worst_pooled"),
                   _worst("balanced", worst_share).alias("_worst_balanced"))
    out["worst_merchants"] = int(j["_worst_pooled"].sum())
    for name, col in PREDICTORS.items():
        def rho(target: str, c: str = col) -> float:
            return float(-j.select(pl.corr(c, target, method="spearman")).item())

        out[name] = {
            "pooled": {"spearman": rho("bad_rate"), "auc": _auc(j, col, "_worst_pooled")},
            "pooled_within_category": {"spearman": rho("pooled_relative")},
            "balanced": {"spearman": rho("balanced"), "auc": _auc(j, col, "_worst_balanced")},
        }
    return out


# ----------------------------------------------------------------------------- oracle

#: Per-merchant evidence the Bayes oracle reads (all counted in the merchant's own scoring window).
ORACLE_EVIDENCE = (
    "orders", "late", "cancelled",                       # sales: orders, late shipments, seller cancellations
    "quality_returns", "nad_returns",                    # returns for defect or damage / not as described
    "reviews_low", "reviews_mid", "reviews_high",        # verified reviews rated <= 2 / 3 / >= 4
    "complaints_resolved", "complaints_unresolved",      # final status of complaints opened >= 45 days before
    "complaints_no_response", "complaints_responded",    # open or escalated complaints (>= 21 days old), by reply
    "response_n", "response_hours_sum",                  # complaints (>= 21 days old) with a first response
    "returns_pending", "returns_rejected", "returns_approved",           # returns >= 30 days old, not changed-mind
    "cm_returns_pending", "cm_returns_rejected", "cm_returns_approved",  # the same for changed-mind returns
    "rejection_n", "rejection_hours_sum",                # rejected returns (>= 30 days old) and hours to reject
    "licence_bad",                                       # 1.0: licence expired or missing in a regulated category
)
#: Evidence groups that :func:`oracle_posterior` can be told to ignore (ablations).
ORACLE_GROUPS = {
    "fulfilment": ("late", "cancelled"),
    "returns": ("quality_returns", "nad_returns"),
    "ratings": ("reviews_low", "reviews_mid", "reviews_high"),
    "complaint_status": ("complaints_resolved", "complaints_unresolved"),
    "complaint_response": ("complaints_no_response", "complaints_responded", "response_n", "response_hours_sum"),
    "return_handling": ("returns_pending", "returns_rejected", "returns_approved", "cm_returns_pending",
                        "cm_returns_rejected", "cm_returns_approved", "rejection_n", "rejection_hours_sum"),
}
_EPS = 1e-12


def oracle_evidence(root: Path | str, scores: pl.DataFrame, *, tz: str = "UTC") -> pl.DataFrame:
    """Per merchant, the counts the Bayes oracle conditions on (columns :data:`ORACLE_EVIDENCE`).

    Read from the staged lake as of the scores' ``score_date`` D (deliveries ``dt <= D``,
    current versions), for events in each merchant's own scoring window
    [``window_start``, D] of ``scores``: the evidence the pipeline had, undecayed. Lifecycle
    outcomes are only counted for events old enough to have ended (complaint status: opened at
    least 45 days before the end of D; first responses: 21 days; returns: 30 days), so that
    censoring can be ignored. Only verified reviews count (bought and bombing reviews are
    unverified). The licence flag is the score row's ``licence_state`` in a regulated category.
    """
    root = Path(root)
    day = scores["score_date"][0]
    end = pl.lit(day + timedelta(days=1)).cast(pl.Datetime("us")).dt.replace_time_zone(tz)
    win = scores.select("merchant_id", "window_start")

    def staged(source: str) -> pl.DataFrame:
        scan = _staged(root, source, through=day)
        if scan is None:
            raise ValueError(f"no staged {source} up to {day} under {root}: score that date first")
        return scan.join(win.lazy(), on="merchant_id", how="inner").collect()

    def in_window(ts: str) -> pl.Expr:
        d = pl.col(ts).dt.convert_time_zone(tz).dt.date()
        return (d >= pl.col("window_start")) & (d <= day)

    def older(ts: str, days: int) -> pl.Expr:
        return (end - pl.col(ts)).dt.total_hours() >= 24 * days

    def hours(a: str, b: str) -> pl.Expr:
        return (pl.col(b) - pl.col(a)).dt.total_seconds() / 3600.0

    sales = staged("sales").filter((pl.col("date") >= pl.col("window_start")) & (pl.col("date") <= day))
    out = sales.group_by("merchant_id").agg(pl.col("orders").sum(), pl.col("late_shipments").sum().alias("late"),
                                            pl.col("cancellations").sum().alias("cancelled"))
    ret = staged("returns").filter(in_window("requested_at"))
    old = older("requested_at", 30)
    cm = pl.col("reason") == "changed_mind"
    pend, rej = pl.col("status") == "requested", pl.col("status") == "rejected"
    app = pl.col("status").is_in(["approved", "refunded"])
    frames = [ret.group_by("merchant_id").agg(
        pl.col("reason").is_in(["quality_defect", "damaged"]).sum().alias("quality_returns"),
        (pl.col("reason") == "not_as_described").sum().alias("nad_returns"),
        (old & ~cm & pend).sum().alias("returns_pending"), (old & ~cm & rej).sum().alias("returns_rejected"),
        (old & ~cm & app).sum().alias("returns_approved"), (old & cm & pend).sum().alias("cm_returns_pending"),
        (old & cm & rej).sum().alias("cm_returns_rejected"), (old & cm & app).sum().alias("cm_returns_approved"),
        (old & rej & pl.col("resolved_at").is_not_null()).sum().alias("rejection_n"),
        hours("requested_at", "resolved_at").filter(old & rej).sum().alias("rejection_hours_sum"))]
    rev = staged("reviews").filter(in_window("created_at") & pl.col("verified_purchase"))
    frames.append(rev.group_by("merchant_id").agg(
        (pl.col("rating") <= 2).sum().alias("reviews_low"), (pl.col("rating") == 3).sum().alias("reviews_mid"),
        (pl.col("rating") >= 4).sum().alias("reviews_high")))
    com = staged("complaints").filter(in_window("opened_at"))
    settled, aged = older("opened_at", 45), older("opened_at", 21)
    pending_state = pl.col("status").is_in(["open", "escalated"])
    has_fr = pl.col("first_response_at").is_not_null()
    frames.append(com.group_by("merchant_id").agg(
        (settled & (pl.col("status") == "resolved")).sum().alias("complaints_resolved"),
        (settled & (pl.col("status") != "resolved")).sum().alias("complaints_unresolved"),
        (aged & pending_state & ~has_fr).sum().alias("complaints_no_response"),
        (aged & pending_state & has_fr).sum().alias("complaints_responded"),
        (aged & has_fr).sum().alias("response_n"),
        hours("opened_at", "first_response_at").filter(aged & has_fr).sum().alias("response_hours_sum")))
    for f in frames:
        out = out.join(f, on="merchant_id", how="left")
    lic = scores.select("merchant_id", (pl.col("licence_state").is_in(["expired", "missing"])
                                        & pl.col("is_regulated_category")).cast(pl.Float64).alias("licence_bad"))
    out = (scores.select("merchant_id", "category").join(out, on="merchant_id", how="left")
           .join(lic, on="merchant_id", how="left"))
    return out.with_columns([pl.col(c).fill_null(0).cast(pl.Float64) for c in ORACLE_EVIDENCE]).sort("merchant_id")


def oracle_prior(n: int = 400_000, *, seed: int = 990_001) -> pl.DataFrame:
    """``n`` merchants drawn from the generator's own prior (:mod:`transforms.generate`).

    One row per candidate: ``category``, ``archetype``, every hidden rate the oracle's
    likelihood needs (``defect``, ``nad``, ``late``, ``cancel``, ``p_negative`` (chance of a
    review rated <= 2), ``no_response``, ``response_hours``, ``unresolved``,
    ``return_reject``, ``return_pending``, ``decide_hours``) and ``score_licensed``, the true
    conduct score the candidate would have with a valid licence. Use a seed that no
    evaluated marketplace uses, so the candidates are fresh draws, not the merchants.
    """
    from transforms.generate import ARCHETYPES, CATEGORIES, _Merchants, conduct_score

    m = _Merchants(n, 120, date(2026, 1, 1), seed)
    neglect = m.arche == ARCHETYPES.index("neglectful_after_sales")
    _, rating_mean, p_neg = m._ratings(m.defect, m.nad, m.late, m.cancel, np.where(neglect, 0.06, 0.0))
    base_mean = m._ratings(m.base["defect"], m.base["nad"], m.base["late"], m.base["cancel"], np.zeros(n))[1]
    score = conduct_score(
        defect_ratio=m.defect / m.base["defect"], nad_ratio=m.nad / m.base["nad"],
        late_ratio=m.late / m.base["late"], cancel_ratio=m.cancel / m.base["cancel"],
        response_ratio=m.resp_hours / 12.0, unresolved_ratio=m.unresolved / 0.10,
        rating_gap=base_mean - rating_mean, licence_bad=np.zeros(n))
    return pl.DataFrame({
        "category": pl.Series([c.name for c in CATEGORIES]).gather(m.cat),
        "archetype": pl.Series(ARCHETYPES).gather(m.arche),
        "defect": m.defect, "nad": m.nad, "late": m.late, "cancel": m.cancel, "p_negative": p_neg,
        "no_response": np.broadcast_to(m.no_response, (n,)).astype(float), "response_hours": m.resp_hours,
        "unresolved": m.unresolved, "return_reject": np.broadcast_to(m.return_reject, (n,)).astype(float),
        "return_pending": np.broadcast_to(m.return_pending, (n,)).astype(float), "decide_hours": m.decide_hours,
        "score_licensed": score})


def oracle_loglik(ev: dict[str, np.ndarray], cand: dict[str, np.ndarray],
                  ignore: tuple[str, ...] = ()) -> np.ndarray:
    """Log-likelihood (up to a constant per merchant) of each merchant's evidence under each candidate.

    Parameters
    ----------
    ev : dict of np.ndarray
        Evidence columns of :data:`ORACLE_EVIDENCE`, each of shape (M,).
    cand : dict of np.ndarray
        Candidate rates as in :func:`oracle_prior`, each of shape (K,).
    ignore : tuple of str
        Names of :data:`ORACLE_GROUPS` whose evidence is left out.

    Returns
    -------
    np.ndarray
        Shape (M, K). The model is the generator's: late shipments and cancellations binomial
        in the orders (cancellations first); quality returns Poisson with mean
        ``orders * (0.75 * defect + 0.002)`` and description returns ``orders * 0.7 * nad``;
        verified ratings multinomial over (<= 2, 3, >= 4) with chances
        ``(p, 0.07 + 0.25 p, 0.93 - 1.25 p)``; a settled complaint unresolved with chance
        ``unresolved``; an open or escalated complaint without reply with chance
        ``no_response``; first-response and rejection delays Gamma(2) with means
        ``response_hours`` and ``decide_hours``; a return pending with chance
        ``return_pending``, else rejected with chance ``return_reject`` (1.5 times that for
        changed-mind returns).
    """
    def col(x: np.ndarray) -> np.ndarray:
        return x[:, None]

    def log(x: np.ndarray) -> np.ndarray:
        return np.log(np.clip(x, _EPS, None))[None, :]

    skip = {c for g in ignore for c in ORACLE_GROUPS[g]}

    def e(name: str) -> np.ndarray:
        return np.zeros_like(ev["orders"])[:, None] if name in skip else col(ev[name])

    n = col(ev["orders"])
    ll = np.zeros((n.shape[0], cand["defect"].shape[0]))
    if "late" not in skip:
        c, late = col(ev["cancelled"]), col(ev["late"])
        ll = ll + c * log(cand["cancel"]) + (n - c) * log(1 - cand["cancel"]) \
            + late * log(cand["late"]) + (n - c - late) * log(1 - cand["late"])
    q, d = 0.75 * cand["defect"] + 0.002, 0.7 * cand["nad"]
    if "quality_returns" not in skip:
        ll = ll + e("quality_returns") * log(q) - n * q[None, :] + e("nad_returns") * log(d) - n * d[None, :]
    p = cand["p_negative"]
    ll = ll + e("reviews_low") * log(p) + e("reviews_mid") * log(0.07 + 0.25 * p) \
        + e("reviews_high") * log(0.93 - 1.25 * p)
    u, nr = cand["unresolved"], cand["no_response"]
    ll = ll + e("complaints_resolved") * log(1 - u) + e("complaints_unresolved") * log(u)
    ll = ll + e("complaints_no_response") * log(nr) + e("complaints_responded") * log(1 - nr)
    theta = cand["response_hours"] / 2.0   # Gamma(2, theta): log f = log t - 2 log theta - t / theta
    ll = ll - 2 * e("response_n") * log(theta) - e("response_hours_sum") / theta[None, :]
    rp, rr = cand["return_pending"], cand["return_reject"]
    for prefix, mult in (("", 1.0), ("cm_", 1.5)):
        rej = np.minimum(rr * mult, 1.0)
        ll = ll + e(prefix + "returns_pending") * log(rp) + e(prefix + "returns_rejected") * log((1 - rp) * rej) \
            + e(prefix + "returns_approved") * log((1 - rp) * (1 - rej))
    theta = cand["decide_hours"] / 2.0
    ll = ll - 2 * e("rejection_n") * log(theta) - e("rejection_hours_sum") / theta[None, :]
    return ll


def oracle_posterior(evidence: pl.DataFrame, prior: pl.DataFrame, *, ignore: tuple[str, ...] = (),
                     known_archetype: pl.Series | None = None, block: int = 64) -> pl.DataFrame:
    """Posterior mean of each merchant's true conduct score given its evidence (importance sampling).

    For each merchant, every candidate of ``prior`` (:func:`oracle_prior`) in its category
    is weighted by the likelihood of the merchant's evidence (:func:`oracle_loglik`); the
    posterior mean is the weighted mean of the candidates' ``score_licensed`` times
    ``1 - 0.35 * licence_bad`` (the licence is observed exactly). Ranking merchants by it
    is, up to the Monte Carlo error (see ``effective_candidates``), the best any estimator
    can do with this evidence under the generator's own prior.

    Parameters
    ----------
    evidence : pl.DataFrame
        ``merchant_id``, ``category`` and the columns of :data:`ORACLE_EVIDENCE`
        (:func:`oracle_evidence`).
    prior : pl.DataFrame
        Candidates, as from :func:`oracle_prior`.
    ignore : tuple of str
        :data:`ORACLE_GROUPS` to leave out (ablation).
    known_archetype : pl.Series, optional
        Each merchant's true archetype, aligned with ``evidence``: only candidates of that
        archetype count ("archetype known exactly" variant).
    block : int
        Merchants per vectorised block (memory: ``block`` x candidates per category).

    Returns
    -------
    pl.DataFrame
        ``merchant_id``, ``oracle_score`` (posterior mean) and ``effective_candidates``
        (Kish effective sample size of the weights).
    """
    ids, post, ess = [], [], []
    arche = None if known_archetype is None else known_archetype.to_numpy()
    for (cat,), ev_cat in evidence.with_row_index("_i").group_by("category", maintain_order=True):
        pc = prior.filter(pl.col("category") == cat)
        if pc.height == 0:
            raise ValueError(f"no prior candidates in category {cat!r}")
        cand = {c: pc[c].to_numpy() for c in pc.columns if c not in ("category", "archetype")}
        s = cand["score_licensed"]
        cand_arche = pc["archetype"].to_numpy()
        for lo in range(0, ev_cat.height, block):
            part = ev_cat.slice(lo, block)
            ev = {c: part[c].to_numpy().astype(float) for c in ORACLE_EVIDENCE}
            ll = oracle_loglik(ev, cand, ignore)
            if arche is not None:
                ll = np.where(cand_arche[None, :] == arche[part["_i"].to_numpy()][:, None], ll, -np.inf)
            w = np.exp(ll - ll.max(axis=1, keepdims=True))
            sw = w.sum(axis=1)
            post.append((w @ s) / sw * (1 - 0.35 * ev["licence_bad"]))
            ess.append(sw**2 / (w**2).sum(axis=1))
            ids.extend(part["merchant_id"].to_list())
    return pl.DataFrame({"merchant_id": ids, "oracle_score": np.concatenate(post),
                         "effective_candidates": np.concatenate(ess)}).sort("merchant_id")


def oracle_bayes(root: Path | str, scores: pl.DataFrame, *, prior: pl.DataFrame | None = None,
                 min_orders: int = 100, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Spearman rho an oracle reaches: the Bayes posterior mean under the generator's prior.

    Ranks the merchants of a generated marketplace at ``root`` by
    :func:`oracle_posterior` of their :func:`oracle_evidence` (the counts in their own
    scoring window of ``scores``) and compares with ``truth/`` as :func:`evaluate` does
    (merchants with at least ``min_orders`` orders in the window). Returns ``spearman``
    (oracle), ``spearman_known_archetype`` (candidates restricted to the merchant's true
    archetype), ``spearman_score`` (the published score on the same merchants),
    ``merchants_ranked`` and ``median_effective_candidates``.
    """
    prior = oracle_prior() if prior is None else prior
    ev = oracle_evidence(root, scores)
    truth = pl.read_parquet(Path(root) / "truth" / "merchants.parquet").select(
        "merchant_id", "archetype", "true_conduct_score")
    ev = ev.join(truth, on="merchant_id", how="left")
    post = oracle_posterior(ev, prior, ignore=ignore)
    known = oracle_posterior(ev, prior, ignore=ignore, known_archetype=ev["archetype"]).rename(
        {"oracle_score": "oracle_known", "effective_candidates": "_e"})
    j = (scores.select("merchant_id", "score", "orders_count").join(truth, on="merchant_id")
         .join(post, on="merchant_id").join(known, on="merchant_id")
         .filter(pl.col("orders_count") >= min_orders))

    def rho(c: str) -> float:
        return float(j.select(pl.corr(c, "true_conduct_score", method="spearman")).item())

    return {"spearman": rho("oracle_score"), "spearman_known_archetype": rho("oracle_known"),
            "spearman_score": rho("score"), "merchants_ranked": j.height,
            "median_effective_candidates": float(np.median(j["effective_candidates"].to_numpy()))}


def _main(argv: list[str] | None = None) -> None:
    """``python -m transforms.evaluation oracle ROOT [ROOT ...]``: the oracle's rho per marketplace."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m transforms.evaluation")
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("oracle", help="Bayes-oracle Spearman rho of scored generated marketplaces")
    o.add_argument("roots", nargs="+", help="lake roots, each scored on its last generated day")
    o.add_argument("--candidates", type=int, default=400_000, help="prior draws (all categories)")
    o.add_argument("--ignore", nargs="*", default=[], choices=sorted(ORACLE_GROUPS))
    args = ap.parse_args(argv)
    prior = oracle_prior(args.candidates)
    for root in args.roots:
        day = json.loads((Path(root) / "truth" / "generation.json").read_text())["end"]
        scores = pl.read_parquet(Path(root) / "scores" / f"score_date={day}")
        out = oracle_bayes(root, scores, prior=prior, ignore=tuple(args.ignore))
        print(json.dumps({"root": str(root), **{k: round(v, 4) if isinstance(v, float) else v
                                                 for k, v in out.items()}}))


if __name__ == "__main__":
    _main()
