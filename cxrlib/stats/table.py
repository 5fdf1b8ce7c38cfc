"""The one results-table format every experiment writes (:data:`RESULT_COLUMNS`, described in
:mod:`cxrlib.stats`) and :func:`compare_arms`, which makes it from per-arm test predictions."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import metrics as M
from .inference import ClusterResampler, _bca_ci, _percentile_ci, adjust_pvalues, bootstrap_wald_pvalue, delong_test, mcnemar_test

RESULT_COLUMNS: tuple[str, ...] = (
    "arm", "label", "metric", "seed", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "reference_arm",
    "n", "n_pos", "n_seeds", "threshold", "threshold_policy", "ci_method", "test",
)


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
        from ..utils import tqdm  # (imports torch: only when asked)

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
