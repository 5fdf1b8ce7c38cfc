"""The statistics of the study: DeLong, cluster bootstrap, McNemar, multiplicity, multi-seed summaries,
and the one results-table format every experiment writes.

Results table
-------------
Every experiment reports its numbers as one tidy table (:data:`RESULT_COLUMNS`), **one row per
arm × label × metric × seed**:

================= ==================================================================================
``arm``           the training arm (e.g. ``"real"``, ``"real+synthetic 200%"``)
``label``         a label name, ``"macro"`` (mean over labels) or ``"micro"``
``metric``        a :data:`cxrlib.metrics.METRICS` name, or ``"auroc_diff"`` (AUROC of the arm minus
                  that of ``reference_arm`` on the same test images)
``seed``          the training seed of the run, or ``"pooled"`` for a summary over seeds
``estimate``      the point estimate on the full test set (pooled: the mean over seeds; mixed model:
                  the fitted coefficient)
``ci_low``,       the ``1 − alpha`` confidence interval (``ci_method`` says how)
``ci_high``
``p_value``       the test of this arm against ``reference_arm`` for this label and metric (``test``
                  says which); NaN for the reference arm itself
``p_adj``         ``p_value`` adjusted for multiplicity (Holm by default) within one metric across
                  all non-reference arms and labels (``"macro"`` included) of the table
``reference_arm`` the arm the p-value compares against
``n``             test images behind the estimate (pooled rows: the mean over seeds)
``n_pos``         positives among them (NaN for ``"macro"``)
``n_seeds``       1, or the number of seeds a pooled row summarizes
``threshold``     the decision threshold of a threshold metric (NaN otherwise)
``threshold_policy`` the policy that chose it (``fixed``/``youden``/``prevalence``/``sensitivity``)
``ci_method``     ``bootstrap-percentile``, ``bootstrap-bca``, ``t`` or ``mixedlm``
``test``          ``delong``, ``mcnemar``, ``bootstrap``, ``paired_t``, ``wilcoxon``, ``mixedlm`` or ``""``
================= ==================================================================================

:func:`compare_arms` produces it from per-arm test predictions; :func:`summarize_seeds` and
:func:`mixed_model_arms` turn several seeds' tables into ``"pooled"`` rows.

Statistical choices (and their limits)
--------------------------------------
* **AUROC p-values**: the paired DeLong test (DeLong et al. 1988) by the fast algorithm of Sun & Xu
  (2014) with midranks for ties. **Sensitivity / specificity / accuracy**: McNemar's test on the
  positives / negatives / all images (exact binomial when fewer than 25 discordant pairs). **Other
  metrics** (AUPRC, PPV, NPV, BA, F1, MCC, κ, Youden, Brier, ECE, and every ``"macro"`` value): the
  two-sided paired-bootstrap Wald test ``p = 2 Φ(−|Δ| / sd(Δ*))`` of the observed difference Δ
  with the standard deviation of the ``B`` resampled differences Δ* as its standard error
  (Efron & Tibshirani 1993, §16). The percentile p-value
  ``min(1, 2 (1 + min(#{Δ* ≤ 0}, #{Δ* ≥ 0})) / (B + 1))`` (:func:`bootstrap_pvalue`) cannot go below
  ``2 / (B + 1)`` (0.0066 at B = 300), which no multiplicity correction over many labels survives.
* **Multiplicity**: one family per metric for the per-label rows and a separate one for the
  ``"macro"`` rows (the primary endpoint is not diluted by the labels).
* **CIs**: a patient-level (cluster) bootstrap: patients, not images, are resampled, so follow-up
  studies of one patient stay together; per label it is stratified by whether the patient has a
  positive image, so every resample keeps the label's positives (as pROC's stratified bootstrap).
  The ``"macro"`` rows resample patients without stratification and drop resamples in which a
  label has no positives (``n_boot`` counts the kept ones in the log).
* DeLong and McNemar treat images as independent; with several studies per patient they are
  slightly liberal, and the patient-level bootstrap CIs are the cluster-aware quantities.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.stats import rankdata

from . import metrics as M

RESULT_COLUMNS: tuple[str, ...] = (
    "arm", "label", "metric", "seed", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "reference_arm",
    "n", "n_pos", "n_seeds", "threshold", "threshold_policy", "ci_method", "test",
)
P_ADJUST_METHODS = ("holm", "bonferroni", "fdr_bh")


# --- DeLong ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong test of two correlated AUROCs. ``covariance`` is the 2x2 DeLong covariance of
    ``(auc_a, auc_b)``; ``z = (auc_a − auc_b) / sqrt(var_a + var_b − 2 cov_ab)``, two-sided ``p``."""

    auc_a: float
    auc_b: float
    difference: float
    z: float
    p_value: float
    covariance: np.ndarray = field(repr=False)
    n_pos: int = 0
    n_neg: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["covariance"] = self.covariance.tolist()
        return d

    def __getitem__(self, key: str):
        return getattr(self, key)


def delong_covariance(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs ``[k]`` and their DeLong covariance ``[k, k]`` for ``k`` score vectors ``scores[k, N]``
    on the same images, by Sun & Xu (2014, IEEE SPL 21:1389), O(k·N log N).

    With ``m`` positives ``X`` and ``n`` negatives ``Y`` and midranks ``T_z`` (in all ``N`` scores),
    ``T_x`` (among positives), ``T_y`` (among negatives), the structural components are
    ``V10_i = (T_z(X_i) − T_x(X_i)) / n`` and ``V01_j = 1 − (T_z(Y_j) − T_y(Y_j)) / m`` (= the
    fraction of negatives below ``X_i`` / positives above ``Y_j``, ties counting ½),
    ``AUC = mean(V10)``, and ``Cov = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample covariance
    matrices (ddof 1) of the components across classifiers.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y):
        raise ValueError(f"scores have {s.shape[1]} columns for {len(y)} labels")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives, got {m} and {n}")
    x, yneg = s[:, y], s[:, ~y]
    tx = rankdata(x, axis=1)
    ty = rankdata(yneg, axis=1)
    tz = rankdata(np.concatenate([x, yneg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(y_true, score_a, score_b) -> DeLongResult:
    """Paired two-sided DeLong test of ``AUC(score_a) = AUC(score_b)`` on the same images.

    When the variance of the difference is 0 (identical or jointly perfect rankings) the AUROCs are
    equal and ``z = 0``, ``p = 1``.
    """
    y = np.asarray(y_true)
    aucs, cov = delong_covariance(y, np.stack([np.asarray(score_a, float), np.asarray(score_b, float)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = float(2 * sps.norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, float(z), p, cov, int(y.astype(bool).sum()),
                        int((~y.astype(bool)).sum()))


def delong_ci(y_true, y_score, alpha: float = 0.05) -> tuple[float, float, float]:
    """``(auc, low, high)``: the Wald interval ``auc ± z_{1−α/2} sqrt(var_DeLong)``, clipped to [0, 1]."""
    aucs, cov = delong_covariance(y_true, np.asarray(y_score, float)[None])
    half = sps.norm.ppf(1 - alpha / 2) * np.sqrt(max(cov[0, 0], 0.0))
    return float(aucs[0]), float(max(0.0, aucs[0] - half)), float(min(1.0, aucs[0] + half))


# --- cluster bootstrap ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    ci_low: float
    ci_high: float
    se: float
    method: str
    alpha: float
    n_boot: int  # resamples drawn
    n_valid: int  # resamples where the metric was defined (not NaN)
    distribution: np.ndarray = field(repr=False)


class ClusterResampler:
    """Seeded patient-level (cluster) bootstrap resamples, optionally stratified.

    ``groups`` ``[N]`` are cluster ids (patient ids; default: every image its own cluster).
    ``strata`` ``[N]`` must be constant within a cluster; each resample draws, within each stratum,
    as many clusters as the stratum has, with replacement, and returns the indices of all their
    images (a cluster drawn twice contributes its images twice). :meth:`draw` ``(n_boot)`` yields
    index arrays; the same ``seed`` (an int or a tuple of ints, e.g. ``(bootstrap_seed, label)``,
    fed to NumPy's ``SeedSequence``) gives the same resamples, so arms evaluated on them are paired.
    """

    def __init__(self, n: int, groups=None, strata=None, seed: int | tuple[int, ...] = 0):
        codes = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
        if len(codes) != n:
            raise ValueError(f"groups has {len(codes)} entries for {n} samples")
        self.n = n
        self.order = np.argsort(codes, kind="stable")  # images grouped by cluster
        n_clusters = int(codes.max()) + 1 if n else 0
        self.sizes = np.bincount(codes, minlength=n_clusters)
        self.starts = np.r_[0, np.cumsum(self.sizes)[:-1]]
        if strata is None:
            cluster_stratum = np.zeros(n_clusters, dtype=np.int64)
        else:
            st = pd.factorize(np.asarray(strata))[0]
            if len(st) != n:
                raise ValueError(f"strata has {len(st)} entries for {n} samples")
            cluster_stratum = np.zeros(n_clusters, dtype=np.int64)
            cluster_stratum[codes] = st
            if (cluster_stratum[codes] != st).any():
                bad = np.asarray(groups)[np.flatnonzero(cluster_stratum[codes] != st)[0]] if groups is not None else "?"
                raise ValueError(f"strata must be constant within each cluster; cluster {bad!r} spans several strata")
        self.strata = [np.flatnonzero(cluster_stratum == k) for k in np.unique(cluster_stratum)]
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def draw(self, n_boot: int):
        for _ in range(n_boot):
            chosen = np.concatenate([c[self.rng.integers(0, len(c), len(c))] for c in self.strata])
            sizes = self.sizes[chosen]
            # indices of all images of the chosen clusters, without a Python loop over clusters
            offsets = np.repeat(self.starts[chosen] - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
            yield self.order[np.arange(sizes.sum()) + offsets]


def _percentile_ci(dist: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(dist, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _bca_ci(dist: np.ndarray, estimate: float, jack: np.ndarray, alpha: float) -> tuple[float, float]:
    """Efron's BCa interval (Efron & Tibshirani 1993, §14.3): bias ``z0 = Φ⁻¹(P*(θ* < θ̂) + ½P*(θ* = θ̂))``,
    acceleration ``a = Σ(θ̄₍.₎ − θ₍ᵢ₎)³ / (6 [Σ(θ̄₍.₎ − θ₍ᵢ₎)²]^{3/2})`` from the leave-one-cluster-out
    jackknife; the interval is the ``Φ(z0 + (z0 + z_q) / (1 − a (z0 + z_q)))`` quantiles."""
    prop = (np.sum(dist < estimate) + 0.5 * np.sum(dist == estimate)) / len(dist)
    z0 = sps.norm.ppf(np.clip(prop, 1e-10, 1 - 1e-10))
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d**2) ** 1.5
    a = float(np.sum(d**3) / denom) if denom > 0 else 0.0
    qs = []
    for q in (alpha / 2, 1 - alpha / 2):
        zq = sps.norm.ppf(q)
        qs.append(sps.norm.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq))))
    lo, hi = np.quantile(dist, qs)
    return float(lo), float(hi)


def bootstrap_ci(metric: Callable[..., float], *arrays, groups=None, strata=None, n_boot: int = 1000,
                 alpha: float = 0.05, method: str = "percentile", seed: int = 0) -> BootstrapResult:
    """Patient-level (cluster) bootstrap CI of ``metric(*arrays)`` (each array indexed on its first axis).

    ``method``: ``"percentile"`` or ``"bca"`` (bias-corrected and accelerated; its acceleration needs a
    leave-one-cluster-out jackknife: one extra metric evaluation per cluster). Resamples where the
    metric is NaN (e.g. no positives) are dropped, with a warning when there are any.
    """
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays differ in length: {[len(a) for a in arrays]}")
    estimate = float(metric(*arrays))
    resampler = ClusterResampler(n, groups, strata, seed)
    dist = np.array([metric(*(a[idx] for a in arrays)) for idx in resampler.draw(n_boot)], dtype=float)
    valid = dist[~np.isnan(dist)]
    if len(valid) < n_boot:
        warnings.warn(f"bootstrap: the metric was undefined in {n_boot - len(valid)} of {n_boot} resamples "
                      "(dropped); consider stratifying", M.UndefinedMetricWarning, stacklevel=2)
    if np.isnan(estimate) or len(valid) < 2:
        return BootstrapResult(estimate, np.nan, np.nan, np.nan, method, alpha, n_boot, len(valid), valid)
    if method == "percentile":
        lo, hi = _percentile_ci(valid, alpha)
    else:
        codes = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
        jack = np.array([metric(*(a[codes != c] for a in arrays)) for c in range(codes.max() + 1)], dtype=float)
        jack = jack[~np.isnan(jack)]
        lo, hi = _bca_ci(valid, estimate, jack, alpha)
    return BootstrapResult(estimate, lo, hi, float(valid.std(ddof=1)), method, alpha, n_boot, len(valid), valid)


def bootstrap_pvalue(diffs) -> float:
    """Two-sided paired-bootstrap p-value of ``H0: Δ = 0`` from ``B`` resampled differences Δ*:
    ``min(1, 2 (1 + min(#{Δ* ≤ 0}, #{Δ* ≥ 0})) / (B + 1))`` (NaN resamples dropped)."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if not len(d):
        return float("nan")
    # (1 + count) / (1 + B): a resampling p-value is never exactly 0 (Davison & Hinkley 1997, §4.2)
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    return float(min(1.0, 2 * (1 + tail) / (1 + len(d))))


def bootstrap_wald_pvalue(estimate: float, diffs) -> float:
    """Two-sided p-value of ``H0: Δ = 0`` for an observed difference ``estimate`` whose standard error is
    the standard deviation of the resampled differences ``diffs``: ``2 Φ(−|Δ| / sd(Δ*))``."""
    from scipy.stats import norm

    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or np.isnan(estimate):
        return float("nan")
    se = float(np.std(d, ddof=1))
    if se == 0.0:
        return 1.0 if estimate == 0 else 0.0
    return float(2 * norm.sf(abs(estimate) / se))


# --- McNemar and multiplicity ---------------------------------------------------------------------
def mcnemar_test(y_true, pred_a, pred_b, exact: bool | None = None) -> dict:
    """McNemar's test that classifiers a and b are correct equally often on the same images
    (statsmodels ``mcnemar`` on the 2x2 table of correct/incorrect). ``b``: a right and b wrong,
    ``c``: a wrong and b right. ``exact=None`` uses the exact binomial test when ``b + c < 25``,
    else the chi-square with continuity correction."""
    from statsmodels.stats.contingency_tables import mcnemar

    y = np.asarray(y_true).astype(bool)
    ra = np.asarray(pred_a).astype(bool) == y
    rb = np.asarray(pred_b).astype(bool) == y
    table = np.array([[np.sum(ra & rb), np.sum(ra & ~rb)], [np.sum(~ra & rb), np.sum(~ra & ~rb)]])
    b, c = int(table[0, 1]), int(table[1, 0])
    if exact is None:
        exact = b + c < 25
    if b + c == 0:
        return {"statistic": 0.0, "p_value": 1.0, "b": b, "c": c, "exact": bool(exact), "table": table}
    res = mcnemar(table, exact=exact, correction=True)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "b": b, "c": c, "exact": bool(exact),
            "table": table}


def adjust_pvalues(p_values, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values: ``holm`` (Holm 1979), ``bonferroni`` or ``fdr_bh``
    (Benjamini-Hochberg 1995), as statsmodels ``multipletests``. NaN entries are left out of the
    family and stay NaN.

    Holm is computed here — sorted ascending, ``p_adj_(i) = max_{k<=i} min(1, (m − k + 1) p_(k))`` —
    because statsmodels 0.15's Holm branch calls ``gc.collect()``, which costs ~0.5 s per call in
    a process that has imported torch; ``tests/test_stats.py`` checks it equals statsmodels'.
    """
    from statsmodels.stats.multitest import multipletests

    if method not in P_ADJUST_METHODS:
        raise ValueError(f"p-value adjustment {method!r}: expected one of {list(P_ADJUST_METHODS)}")
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    if method == "holm":
        q = p[ok]
        order = np.argsort(q, kind="stable")
        m = len(q)
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        out[ok] = adj
    else:
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


# --- the results table ----------------------------------------------------------------------------
def check_results_table(df: pd.DataFrame) -> pd.DataFrame:
    """Raise if ``df`` lacks a column of :data:`RESULT_COLUMNS` or repeats an arm × label × metric ×
    seed row; return it with the standard columns first."""
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; expected {list(RESULT_COLUMNS)}")
    dup = df.duplicated(["arm", "label", "metric", "seed"])
    if dup.any():
        raise ValueError(f"results table repeats arm x label x metric x seed rows, e.g.\n{df[dup].head(3)}")
    return df[list(RESULT_COLUMNS) + [c for c in df.columns if c not in RESULT_COLUMNS]]


def _adjust_by_metric(df: pd.DataFrame, method: str) -> pd.DataFrame:
    df = df.copy()
    df["p_adj"] = np.nan
    family = df["label"].eq("macro") if "label" in df else pd.Series(False, index=df.index)
    for _, idx in df.groupby([df["metric"], family]).groups.items():
        df.loc[idx, "p_adj"] = adjust_pvalues(df.loc[idx, "p_value"].to_numpy(dtype=float), method)
    return df


def _threshold_test(metric: str):
    """McNemar's subset for sensitivity (positives), specificity (negatives), accuracy (all)."""
    return {"sensitivity": "pos", "specificity": "neg", "accuracy": "all"}.get(metric)


def compare_arms(
    y_true,
    scores: Mapping[str, np.ndarray],
    patient_ids,
    *,
    label_names: Sequence[str],
    reference_arm: str,
    mask=None,
    y_val=None,
    val_scores: Mapping[str, np.ndarray] | None = None,
    mask_val=None,
    threshold_policy: str = "fixed",
    policy_kwargs: Mapping | None = None,
    metrics: Sequence[str] = M.METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    ci_method: str = "percentile",
    p_adjust: str = "holm",
    seed: int | str = 0,
    bootstrap_seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Compare arms evaluated on the same test images; returns the results table (module docstring).

    ``y_true``/``mask`` ``[N, L]`` test labels; ``scores[arm]`` ``[N, L]`` test probabilities;
    ``patient_ids`` ``[N]`` (the bootstrap's clusters). Thresholds per arm and label are chosen on
    validation by ``threshold_policy`` (:func:`cxrlib.metrics.choose_thresholds`, ``policy_kwargs``
    e.g. ``{"target_sensitivity": 0.9}``) from ``y_val``/``val_scores[arm]``/``mask_val``; ``fixed``
    needs no validation data. ``seed`` fills the ``seed`` column (the training seed of these runs);
    ``bootstrap_seed`` seeds the resamples, which are shared by all arms (paired).
    Rows: per arm, per label and ``"macro"``, per metric; plus ``auroc_diff`` rows for each
    non-reference arm.
    """
    # 1. check inputs
    arms = list(scores)
    if reference_arm not in scores:
        raise ValueError(f"reference_arm {reference_arm!r} is not among the arms {arms}")
    if ci_method not in ("percentile", "bca"):
        raise ValueError(f"ci_method must be 'percentile' or 'bca', got {ci_method!r}")
    bad = [k for k in metrics if k not in M.METRICS]
    if bad:
        raise ValueError(f"unknown metrics {bad}; expected a subset of {list(M.METRICS)}")
    y, _, mask = M._as_2d(y_true, scores[reference_arm], mask)
    y = y.astype(bool)
    L = y.shape[1]
    names = M._label_names(label_names, L)
    S = {}
    for a in arms:
        s = np.asarray(scores[a], dtype=np.float64)
        if s.shape != y.shape:
            raise ValueError(f"scores of arm {a!r} have shape {s.shape}, expected {y.shape}")
        S[a] = s
    pid = np.asarray(patient_ids)
    if len(pid) != len(y):
        raise ValueError(f"{len(pid)} patient ids for {len(y)} test images")

    # 2. thresholds per arm, chosen on validation
    thr = {}
    for a in arms:
        if threshold_policy == "fixed":  # no validation data needed
            thr[a] = M.choose_thresholds(y, S[a], "fixed", mask, **dict(policy_kwargs or {}))
        else:
            if y_val is None or val_scores is None or a not in val_scores:
                raise ValueError(f"threshold_policy={threshold_policy!r} needs y_val and val_scores for arm {a!r}")
            thr[a] = M.choose_thresholds(y_val, val_scores[a], threshold_policy, mask_val, label_names=names,
                                         **dict(policy_kwargs or {}))

    def evaluate(idx: np.ndarray, j: int, a: str, warn: bool = False) -> dict:
        m = mask[idx, j]
        return M.binary_metrics(y[idx, j][m], S[a][idx, j][m], thr[a][j], warn=warn, name=names[j], metrics=metrics)

    rows = []
    ci_name = f"bootstrap-{ci_method}"

    def add(a, label, metric, est, dist, *, p=np.nan, test="", n=np.nan, n_pos=np.nan, t=np.nan, jack=None):
        valid = dist[~np.isnan(dist)]
        if np.isnan(est) or len(valid) < 2:
            lo = hi = np.nan
        elif ci_method == "bca" and jack is not None:
            lo, hi = _bca_ci(valid, est, jack[~np.isnan(jack)], alpha)
        else:
            lo, hi = _percentile_ci(valid, alpha)
        rows.append({"arm": a, "label": label, "metric": metric, "seed": seed, "estimate": est, "ci_low": lo,
                     "ci_high": hi, "p_value": p, "reference_arm": reference_arm, "n": n, "n_pos": n_pos,
                     "n_seeds": 1, "threshold": t if metric in M.THRESHOLD_METRICS else np.nan,
                     "threshold_policy": threshold_policy if metric in M.THRESHOLD_METRICS else "",
                     "ci_method": ci_name, "test": test})

    all_idx = np.arange(len(y))
    labels_iter = range(L)
    if progress:
        from .utils import tqdm  # (imports torch: only when asked)

        labels_iter = tqdm(labels_iter, desc="bootstrap per label", unit="label")
    full = {(a, j): evaluate(all_idx, j, a, warn=True) for a in arms for j in range(L)}
    codes = pd.factorize(pid)[0]
    # 3. per label: stratified cluster bootstrap shared by all arms
    for j in labels_iter:
        pos_patient = np.zeros(codes.max() + 1, bool)
        pos_patient[codes[y[:, j] & mask[:, j]]] = True
        resampler = ClusterResampler(len(y), pid, pos_patient[codes], seed=(bootstrap_seed, j))
        boots = {a: {k: [] for k in metrics} for a in arms}
        for idx in resampler.draw(n_boot):
            for a in arms:
                r = evaluate(idx, j, a)
                for k in metrics:
                    boots[a][k].append(r[k])
        jack = None
        if ci_method == "bca":  # leave-one-patient-out jackknife for the acceleration
            jack = {a: {k: [] for k in metrics} for a in arms}
            for c in range(codes.max() + 1):
                keep = np.flatnonzero(codes != c)
                for a in arms:
                    r = evaluate(keep, j, a)
                    for k in metrics:
                        jack[a][k].append(r[k])
        m = mask[:, j]
        for a in arms:
            for k in metrics:
                dist = np.asarray(boots[a][k], float)
                p, test = np.nan, ""
                if a != reference_arm and not np.isnan(full[(a, j)][k]):
                    sub = _threshold_test(k)
                    if k == "auroc":
                        p, test = delong_test(y[m, j], S[a][m, j], S[reference_arm][m, j]).p_value, "delong"
                    elif sub is not None:
                        yy = y[m, j]
                        sel = {"pos": yy, "neg": ~yy, "all": np.ones_like(yy)}[sub]
                        pa = S[a][m, j] >= thr[a][j]
                        pr = S[reference_arm][m, j] >= thr[reference_arm][j]
                        p, test = mcnemar_test(yy[sel], pa[sel], pr[sel])["p_value"], "mcnemar"
                    else:
                        p = bootstrap_wald_pvalue(full[(a, j)][k] - full[(reference_arm, j)][k],
                                                  dist - np.asarray(boots[reference_arm][k], float))
                        test = "bootstrap"
                add(a, names[j], k, full[(a, j)][k], dist, p=p, test=test, n=full[(a, j)]["n"],
                    n_pos=full[(a, j)]["n_pos"], t=thr[a][j],
                    jack=None if jack is None else np.asarray(jack[a][k], float))
            if a != reference_arm and "auroc" in metrics:
                d = np.asarray(boots[a]["auroc"], float) - np.asarray(boots[reference_arm]["auroc"], float)
                est = full[(a, j)]["auroc"] - full[(reference_arm, j)]["auroc"]
                p = next(r["p_value"] for r in rows if r["arm"] == a and r["label"] == names[j] and r["metric"] == "auroc")
                jd = None if jack is None else np.asarray(jack[a]["auroc"], float) - np.asarray(jack[reference_arm]["auroc"], float)
                add(a, names[j], "auroc_diff", est, d, p=p, test="delong" if not np.isnan(p) else "",
                    n=full[(a, j)]["n"], n_pos=full[(a, j)]["n_pos"], jack=jd)

    # 4. macro: unstratified cluster bootstrap over all labels at once; resamples where a label
    #    that is defined on the full test set has no positives are dropped
    defined = {k: [j for j in range(L) if not np.isnan(full[(reference_arm, j)][k])] for k in metrics}
    macro_full = {a: {k: float(np.mean([full[(a, j)][k] for j in defined[k]])) if defined[k] else np.nan
                      for k in metrics} for a in arms}
    macro_boot = {a: {k: [] for k in metrics} for a in arms}
    for idx in ClusterResampler(len(y), pid, None, seed=(bootstrap_seed, L)).draw(n_boot):
        for a in arms:
            per = [evaluate(idx, j, a) for j in range(L)]
            for k in metrics:
                v = [per[j][k] for j in defined[k]]
                macro_boot[a][k].append(np.mean(v) if v and not np.isnan(v).any() else np.nan)
    for a in arms:
        for k in metrics:
            dist = np.asarray(macro_boot[a][k], float)
            p, test = np.nan, ""
            if a != reference_arm and not np.isnan(macro_full[a][k]):
                p = bootstrap_wald_pvalue(macro_full[a][k] - macro_full[reference_arm][k],
                                          dist - np.asarray(macro_boot[reference_arm][k], float))
                test = "bootstrap"
            add(a, "macro", k, macro_full[a][k], dist, p=p, test=test, n=len(y))
        if a != reference_arm and "auroc" in metrics:
            d = np.asarray(macro_boot[a]["auroc"], float) - np.asarray(macro_boot[reference_arm]["auroc"], float)
            est = macro_full[a]["auroc"] - macro_full[reference_arm]["auroc"]
            add(a, "macro", "auroc_diff", est, d, p=bootstrap_wald_pvalue(est, d), test="bootstrap", n=len(y))

    # 5. multiplicity: one family per metric over non-reference arms and labels
    df = pd.DataFrame(rows)
    df = _adjust_by_metric(df, p_adjust)
    return check_results_table(df)


# --- several seeds --------------------------------------------------------------------------------
def seed_summary(values, alpha: float = 0.05) -> dict:
    """Mean, sd and the t-interval ``mean ± t_{n−1, 1−α/2} · sd / √n`` of per-seed values (NaN dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return {"mean": np.nan, "sd": np.nan, "n": 0, "ci_low": np.nan, "ci_high": np.nan}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "sd": np.nan, "n": 1, "ci_low": np.nan, "ci_high": np.nan}
    sd = float(v.std(ddof=1))
    half = float(sps.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n))
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def paired_seed_test(a, b, test: str = "t") -> dict:
    """Paired test of per-seed values ``a`` vs ``b`` (same seeds, same order): ``"t"`` (scipy
    ``ttest_rel``) or ``"wilcoxon"`` (signed-rank; exact for small n). Pairs with a NaN are dropped."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return {"statistic": np.nan, "p_value": np.nan, "n": len(a)}
    d = a - b
    if np.all(d == 0):
        return {"statistic": 0.0, "p_value": 1.0, "n": len(a)}
    if test == "t":
        r = sps.ttest_rel(a, b)
    elif test == "wilcoxon":
        r = sps.wilcoxon(a, b)
    else:
        raise ValueError(f"test must be 't' or 'wilcoxon', got {test!r}")
    return {"statistic": float(r.statistic), "p_value": float(r.pvalue), "n": len(a)}


SIGNED_METRICS = frozenset({"mcc", "kappa", "youden"})


def metric_range(metric: str) -> tuple[float, float]:
    """The values a metric can take: [−1, 1] for MCC, κ, Youden's J and differences (``*_diff``),
    [0, 1] for the others. Seed t-intervals are clipped to it (with 2-3 seeds they can overshoot)."""
    return (-1.0, 1.0) if metric in SIGNED_METRICS or metric.endswith("_diff") else (0.0, 1.0)


def summarize_seeds(results: pd.DataFrame, *, reference_arm: str | None = None, test: str = "t",
                    alpha: float = 0.05, p_adjust: str = "holm") -> pd.DataFrame:
    """``seed="pooled"`` rows from per-seed rows of the results table: the mean over seeds with its
    t-interval (clipped to :func:`metric_range`), and a paired test (``t`` or ``wilcoxon``, paired by seed) against ``reference_arm``
    (default: the table's), Holm-adjusted per metric across arms and labels."""
    df = results[results["seed"].astype(str) != "pooled"]
    if df.empty:
        raise ValueError("summarize_seeds needs per-seed rows (seed != 'pooled')")
    if reference_arm is None:
        refs = df["reference_arm"].dropna().unique()
        if len(refs) != 1:
            raise ValueError(f"pass reference_arm: the table has reference arms {list(refs)}")
        reference_arm = refs[0]
    wide = df.pivot_table(index=["label", "metric", "seed"], columns="arm", values="estimate", aggfunc="first")
    rows = []
    for (arm, label, metric), g in df.groupby(["arm", "label", "metric"], sort=False):
        s = seed_summary(g["estimate"], alpha)
        p = np.nan
        if arm != reference_arm and reference_arm in wide.columns and metric != "auroc_diff":
            w = wide.loc[(label, metric)]
            p = paired_seed_test(w[arm].to_numpy(), w[reference_arm].to_numpy(), test)["p_value"]
        elif metric == "auroc_diff":  # one-sample test of the per-seed differences against 0
            v = g["estimate"].to_numpy(float)
            p = paired_seed_test(v, np.zeros_like(v), test)["p_value"]
        lo, hi = metric_range(metric)
        rows.append({"arm": arm, "label": label, "metric": metric, "seed": "pooled", "estimate": s["mean"],
                     "ci_low": np.clip(s["ci_low"], lo, hi), "ci_high": np.clip(s["ci_high"], lo, hi), "p_value": p, "reference_arm": reference_arm,
                     "n": float(g["n"].mean()), "n_pos": float(g["n_pos"].mean()), "n_seeds": s["n"],
                     "threshold": float(g["threshold"].mean()), "threshold_policy": g["threshold_policy"].iloc[0],
                     "ci_method": "t", "test": "" if np.isnan(p) else ("paired_t" if test == "t" else "wilcoxon")})
    return check_results_table(_adjust_by_metric(pd.DataFrame(rows), p_adjust))


def mixed_model_arms(results: pd.DataFrame, *, metric: str = "auroc", reference_arm: str | None = None,
                     alpha: float = 0.05, p_adjust: str = "holm") -> pd.DataFrame:
    """Arm effects on a metric across labels and seeds by a linear mixed model (statsmodels MixedLM):

        estimate ~ C(arm, Treatment(reference_arm)) + C(label),   random intercept per seed,

    fitted by REML on the per-label, per-seed rows. Label is a fixed effect (labels differ in
    difficulty); the seed intercept captures a run's shared luck across labels. Returns one
    ``metric_diff`` row per non-reference arm (``label="macro"``, ``seed="pooled"``): the
    coefficient (the mean per-label difference to the reference), its Wald CI and p-value,
    Holm-adjusted across arms. Needs ≥ 2 seeds; a fit that does not converge raises; a seed variance
    estimated at 0 (boundary) is warned about.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    df = results[(results["metric"] == metric) & ~results["label"].isin(["macro", "micro"])
                 & (results["seed"].astype(str) != "pooled")].copy()
    if df.empty:
        raise ValueError(f"no per-label, per-seed rows for metric {metric!r}")
    if reference_arm is None:
        reference_arm = df["reference_arm"].dropna().unique()[0]
    if df["seed"].nunique() < 2:
        raise ValueError("mixed_model_arms needs results from at least 2 seeds")
    df = df.dropna(subset=["estimate"])
    df["seed"] = df["seed"].astype(str)
    # arm names may hold any character ("real+synth 200%"): give the formula safe codes
    arms = [reference_arm] + [a for a in df["arm"].unique() if a != reference_arm]
    code = {a: f"arm{i}" for i, a in enumerate(arms)}
    df["arm_code"] = df["arm"].map(code)
    formula = "estimate ~ C(arm_code, Treatment(reference='arm0')) + C(label)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit = smf.mixedlm(formula, df, groups=df["seed"]).fit(reml=True)
    if not fit.converged:
        raise RuntimeError(f"mixed model for {metric!r} did not converge "
                           f"({'; '.join(str(w.message) for w in caught)}); report summarize_seeds instead")
    # statsmodels' own "boundary" warning uses an absolute tolerance (variance < 0.01) that any
    # AUROC-scale data trip; judge the seed variance relative to the residual variance instead
    if float(fit.cov_re.iloc[0, 0]) < 1e-6 * float(fit.scale):
        # a seed variance estimated at 0 is a valid fit (it equals the fixed-effects model); say so
        warnings.warn(f"mixed model for {metric!r}: the between-seed variance is estimated at 0 (boundary of "
                      "the parameter space); the arm effects equal those of a fixed-effects fit", UserWarning, stacklevel=2)
    ci = fit.conf_int(alpha)
    rows = []
    for arm in arms[1:]:
        term = f"C(arm_code, Treatment(reference='arm0'))[T.{code[arm]}]"
        rows.append({"arm": arm, "label": "macro", "metric": f"{metric}_diff", "seed": "pooled",
                     "estimate": float(fit.params[term]), "ci_low": float(ci.loc[term, 0]),
                     "ci_high": float(ci.loc[term, 1]), "p_value": float(fit.pvalues[term]),
                     "reference_arm": reference_arm, "n": int(len(df)), "n_pos": np.nan,
                     "n_seeds": int(df["seed"].nunique()), "threshold": np.nan, "threshold_policy": "",
                     "ci_method": "mixedlm", "test": "mixedlm"})
    return check_results_table(_adjust_by_metric(pd.DataFrame(rows), p_adjust))
