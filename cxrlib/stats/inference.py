"""The statistical tests and intervals of the study: DeLong, the patient-level (cluster) bootstrap,
McNemar, and multiplicity adjustment. The choices and their limits are in :mod:`cxrlib.stats`."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.stats import rankdata

from .. import metrics as M

P_ADJUST_METHODS = ("holm", "bonferroni", "fdr_bh")


# --- DeLong ---------------------------------------------------------------------------------------
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
