"""Several training seeds: per-seed values summarized with t-intervals, paired tests over seeds, and a
linear mixed model with the seed as random effect (``"pooled"`` rows of the results table)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from .table import _adjust_by_metric, check_results_table

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
