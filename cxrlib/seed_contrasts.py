"""Inference across training seeds from a results table: the evidence the verdict rules read
(:mod:`cxrlib.verdicts`) and the chapters' paired contrasts.

A results table has one row per arm x label x metric x seed (integer seeds; ``pooled`` summary rows
are ignored here). :func:`paired_contrast` pairs two arms by training seed (the classifier's seed:
same initialization, batches and augmentation draws) and tests the mean difference with a paired
t-test over seeds; :func:`paired_equivalence` is its TOST; :func:`with_mean_arm` averages, per seed,
several arms (e.g. the same supplementation with independently trained generators) into one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a chapter's tables say about a claim. ``p``: unadjusted (two-sided for directional and
    correlation claims, the TOST p for equivalence, NaN for orderings); ``n``: independent replicates."""

    estimate: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    test: str = ""
    note: str = ""


def seed_values(results: pd.DataFrame, arm: str, metric: str, label: str = "macro", **where) -> pd.Series:
    """Per-seed estimates of ``arm`` (one per seed: rows with an integer seed, filtered by ``where``
    column values; duplicates, e.g. one row per comparison, must agree and are collapsed)."""
    rows = results[(results["arm"] == arm) & (results["metric"] == metric) & (results["label"] == label)]
    for col, value in where.items():
        if col in rows.columns:
            rows = rows[rows[col].fillna("").astype(str) == str(value)]
    seeds = pd.to_numeric(rows["seed"], errors="coerce")
    rows = rows[seeds.notna()].assign(seed=seeds[seeds.notna()].astype(int))
    return rows.groupby("seed")["estimate"].first()


def with_mean_arm(results: pd.DataFrame, arms, name: str) -> tuple[pd.DataFrame, str]:
    """``results`` plus rows of a new arm ``name`` whose estimate, per seed (and test set, metric,
    label), is the mean over ``arms`` (e.g. the same supplementation with independently trained
    generators): a seed enters only where every arm has it. Returns ``(table, name)`` for
    :func:`paired_contrast`."""
    arms = list(arms)
    if not arms:
        raise ValueError("with_mean_arm: no arms to average")
    rows = results[results["arm"].isin(arms)]
    seeds = pd.to_numeric(rows["seed"], errors="coerce")
    rows = rows[seeds.notna()].assign(seed=seeds[seeds.notna()].astype(int))
    by = [c for c in ("test_set", "policy", "metric", "label", "seed") if c in rows.columns]
    g = rows.groupby(by, dropna=False).agg(estimate=("estimate", "mean"), n_arms=("arm", "nunique")).reset_index()
    g = g[g["n_arms"] == len(arms)].drop(columns="n_arms").assign(arm=name)
    return pd.concat([results, g], ignore_index=True), name


def paired_contrast(results: pd.DataFrame, arm: str, reference: str, metric: str, label: str = "macro", **where) -> Evidence:
    """``arm − reference`` paired by training seed: mean difference, 95 % t-interval and the two-sided
    paired t-test p over seeds (NaN with fewer than 2 seeds)."""
    from scipy import stats as sps

    a, b = seed_values(results, arm, metric, label, **where), seed_values(results, reference, metric, label, **where)
    d = (a - b).dropna()
    n = len(d)
    if n == 0:
        return Evidence(math.nan, math.nan, math.nan, math.nan, 0, "paired t over seeds", f"no rows for {arm} vs {reference}")
    est = float(d.mean())
    if n < 2:
        return Evidence(est, math.nan, math.nan, math.nan, n, "paired t over seeds")
    se = float(d.std(ddof=1)) / math.sqrt(n)
    q = float(sps.t.ppf(0.975, n - 1))
    if se > 0:
        p = float(sps.ttest_1samp(d.to_numpy(), 0.0).pvalue)
    else:  # every seed gave the same difference: certain if nonzero, none if zero
        p = 0.0 if est != 0 else 1.0
    return Evidence(est, est - q * se, est + q * se, p, n, "paired t over seeds")


def paired_equivalence(results: pd.DataFrame, arm: str, reference: str, metric: str, margin: float, label: str = "macro",
                       **where) -> Evidence:
    """TOST of ``arm − reference`` within ±``margin``, paired by seed (statsmodels ``ttost_paired``);
    the CI is the 90 % t-interval that TOST at α = 0.05 inspects."""
    from scipy import stats as sps
    from statsmodels.stats.weightstats import ttost_paired

    a, b = seed_values(results, arm, metric, label, **where), seed_values(results, reference, metric, label, **where)
    both = pd.concat([a, b], axis=1, keys=["a", "b"]).dropna()
    n = len(both)
    if n < 2:
        est = float((both.a - both.b).mean()) if n else math.nan
        return Evidence(est, math.nan, math.nan, math.nan, n, "TOST paired over seeds")
    d = both.a - both.b
    est, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    q = float(sps.t.ppf(0.95, n - 1))
    p = float(ttost_paired(both.a.to_numpy(), both.b.to_numpy(), -margin, margin)[0]) if se > 0 else float(abs(est) >= margin)
    return Evidence(est, est - q * se, est + q * se, p, n, "TOST paired over seeds (90 % CI)")


def seed_average(results: pd.DataFrame, by: Sequence[str] = ("test_set", "policy", "comparison", "arm", "label", "metric")
                 ) -> pd.DataFrame:
    """Summarize the per-seed rows of a results table, one row per group of ``by``: ``estimate`` (mean
    over seeds), ``ci_low``/``ci_high`` (the envelope of the per-seed patient-level bootstrap 95 %
    CIs: the lowest lower and the highest upper bound, so it covers each seed's test-set uncertainty
    and the spread between seeds), ``seed_sd`` (sd over seeds), ``n_seeds`` and ``p_adj_seeds`` (the
    *largest* per-seed Holm-adjusted p-value: below alpha means significant in every seed).

    Why not the ``pooled`` rows of :func:`cxrlib.stats.summarize_seeds`: their t-interval over seeds
    has ``n_seeds - 1`` degrees of freedom, so with the 2-3 seeds a CPU budget allows it is wider than
    [0, 1] (t = 12.7 for 2 seeds) and their paired t-test can hardly reject; they stay in the results
    table for runs with more seeds."""
    r = results[results.seed.astype(str) != "pooled"]
    by = [c for c in by if c in r.columns]
    g = r.groupby(by, sort=False, dropna=False)
    return g.agg(estimate=("estimate", "mean"), ci_low=("ci_low", "min"), ci_high=("ci_high", "max"),
                 seed_sd=("estimate", "std"), n_seeds=("estimate", "size"), p_adj_seeds=("p_adj", "max"),
                 test=("test", "first")).reset_index()
