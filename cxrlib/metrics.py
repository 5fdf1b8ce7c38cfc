"""Classification metrics, calibration and threshold policies: what every experiment measures.

Binary metrics (one label, scores in ``[0, 1]``, positive prediction iff ``score >= threshold``,
scikit-learn's convention). With ``TP, FP, TN, FN`` the confusion counts, ``P = TP + FN``,
``N = TN + FP``:

=================== ================================================= ==============================
key                 formula                                            undefined (NaN) when
=================== ================================================= ==============================
auroc               P(s+ > s-) + ½ P(s+ = s-) (Mann-Whitney, midranks) P = 0 or N = 0
auprc               average precision Σ_k (R_k − R_{k−1}) P_k          P = 0
                    (scikit-learn's step-wise definition, no
                    interpolation)
sensitivity         TP / P  (recall, TPR)                              P = 0
specificity         TN / N  (TNR)                                      N = 0
ppv                 TP / (TP + FP)  (precision)                        nothing predicted positive
npv                 TN / (TN + FN)                                     nothing predicted negative
accuracy            (TP + TN) / (P + N)                                no samples
balanced_accuracy   (sensitivity + specificity) / 2                    P = 0 or N = 0
f1                  2 TP / (2 TP + FP + FN)                            P = 0
mcc                 (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN))   P = 0 or N = 0; 0 when the
                                                                       predictions are constant
                                                                       (scikit-learn's and Chicco
                                                                       2020's convention)
kappa               (p_o − p_e) / (1 − p_e), Cohen 1960                P = 0 or N = 0
youden              sensitivity + specificity − 1 (Youden 1950)        P = 0 or N = 0
brier               mean (s − y)²                                      no samples
ece                 Σ_b (n_b / n) |mean(y)_b − mean(s)_b| over bins    no samples
=================== ================================================= ==============================

A metric that is undefined for the data (a label with no positives in a split) is ``NaN`` and an
:class:`UndefinedMetricWarning` names it; it is never reported as 0. Aggregates over labels:

* **macro** — the mean over labels of the per-label values, over the labels where it is defined;
* **micro** — the metric of all (image, label) pairs pooled (threshold metrics from the summed
  confusion counts, each label at its own threshold).

The values equal scikit-learn's (``roc_auc_score``, ``average_precision_score``, ``recall_score``,
``precision_score``, ``balanced_accuracy_score``, ``f1_score``, ``matthews_corrcoef``,
``cohen_kappa_score``, ``brier_score_loss``, ``calibration_curve``; checked in
``tests/test_metrics.py``). AUROC, average precision and the confusion counts are computed here
with NumPy because scikit-learn's input validation costs ~1 ms per call, which a bootstrap of
thousands of resamples × labels × arms cannot afford (this is ~20x faster).

**Threshold policies** (:func:`choose_thresholds`) pick one threshold per label on the *validation*
split; the test metrics then use those thresholds:

* ``fixed`` — the same threshold (0.5) for every label;
* ``youden`` — maximizes Youden's J = TPR − FPR on the validation ROC curve (the highest such
  threshold when several tie);
* ``prevalence`` — the validation prevalence is matched: the threshold is the ``P``-th highest
  validation score, so ``P`` images are predicted positive (more when scores tie at the threshold);
* ``sensitivity`` — the highest threshold whose validation sensitivity is ≥ ``target_sensitivity``
  (default 0.9): the best specificity at that sensitivity.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

THRESHOLD_METRICS: tuple[str, ...] = (
    "sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "f1", "mcc", "kappa", "youden",
)
RANKING_METRICS: tuple[str, ...] = ("auroc", "auprc")
CALIBRATION_METRICS: tuple[str, ...] = ("brier", "ece")
METRICS: tuple[str, ...] = RANKING_METRICS + THRESHOLD_METRICS + CALIBRATION_METRICS
THRESHOLD_POLICIES: tuple[str, ...] = ("fixed", "youden", "prevalence", "sensitivity")


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the data (e.g. no positives): it is reported as NaN."""


def _warn_undefined(metrics: Sequence[str], why: str, name: str | None) -> None:
    where = f" for {name!r}" if name else ""
    warnings.warn(f"{', '.join(metrics)} undefined{where} ({why}): reported as NaN", UndefinedMetricWarning, stacklevel=3)


def _binary_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(f"y_true and y_score must be 1-D of equal length, got shapes {y.shape} and {s.shape}")
    if y.dtype != bool and not ((y == 0) | (y == 1)).all():
        bad = np.unique(y[~((y == 0) | (y == 1))])[:5]
        raise ValueError(f"y_true must hold 0/1 values, found {bad.tolist()}")
    if np.isnan(s).any():
        raise ValueError(f"y_score holds {int(np.isnan(s).sum())} NaN values")
    return y.astype(bool), s


# --- ranking metrics ------------------------------------------------------------------------------
def auroc(y_true, y_score) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with midranks (ties count ½):
    ``(Σ rank(s_i: y_i=1) − P(P+1)/2) / (P·N)``. NaN (no warning) if a class is absent."""
    y, s = _binary_arrays(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(y_true, y_score) -> float:
    """Average precision ``Σ_k (R_k − R_{k−1}) P_k`` over the distinct score thresholds, as
    ``sklearn.metrics.average_precision_score``. NaN (no warning) if there are no positives."""
    y, s = _binary_arrays(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores: one point of the PR curve per distinct threshold
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(y_sorted)[last]
    precision = tps / (last + 1.0)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --- threshold metrics ----------------------------------------------------------------------------
def confusion_counts(y_true, y_pred) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` of boolean predictions."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = int(np.count_nonzero(y & p))
    fp = int(np.count_nonzero(~y & p))
    fn = int(np.count_nonzero(y & ~p))
    return tp, fp, len(y) - tp - fp - fn, fn


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def metrics_from_counts(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """The threshold metrics of the module table from confusion counts (NaN where undefined)."""
    pos, neg = tp + fn, tn + fp
    n = pos + neg
    sens, spec = _div(tp, pos), _div(tn, neg)
    both = pos > 0 and neg > 0
    out = {
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "accuracy": _div(tp + tn, n),
        "balanced_accuracy": (sens + spec) / 2 if both else float("nan"),
        "f1": _div(2 * tp, 2 * tp + fp + fn) if pos > 0 else float("nan"),
        "youden": sens + spec - 1 if both else float("nan"),
    }
    if both:
        denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        out["mcc"] = float((tp * tn - fp * fn) / np.sqrt(denom)) if denom > 0 else 0.0
        p_o = (tp + tn) / n
        p_e = ((tp + fp) * pos + (tn + fn) * neg) / n**2
        out["kappa"] = (p_o - p_e) / (1 - p_e) if p_e < 1 else float("nan")
    else:
        out["mcc"] = out["kappa"] = float("nan")
    return out


# --- calibration ----------------------------------------------------------------------------------
def _bin_edges(y_score: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        return np.percentile(y_score, np.linspace(0, 100, n_bins + 1))
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _calibration_bins(y: np.ndarray, s: np.ndarray, n_bins: int, strategy: str):
    """``(edges, count, sum_score, sum_y)`` per bin; a score on an inner edge falls in the lower bin
    (``np.searchsorted`` on the inner edges, as ``sklearn.calibration.calibration_curve``)."""
    if len(s) and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"y_score must be probabilities in [0, 1], found range [{s.min()}, {s.max()}]")
    edges = _bin_edges(s, n_bins, strategy)
    ids = np.searchsorted(edges[1:-1], s)
    k = len(edges) - 1
    return (edges, np.bincount(ids, minlength=k), np.bincount(ids, weights=s, minlength=k),
            np.bincount(ids, weights=y.astype(float), minlength=k))


def reliability_curve(y_true, y_score, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability-diagram data, one row per non-empty bin: ``bin_low, bin_high, mean_score,
    frac_positive, count``. Same bins as ``sklearn.calibration.calibration_curve``."""
    y, s = _binary_arrays(y_true, y_score)
    edges, count, sum_s, sum_y = _calibration_bins(y, s, n_bins, strategy)
    keep = count > 0
    return pd.DataFrame({
        "bin_low": edges[:-1][keep], "bin_high": edges[1:][keep],
        "mean_score": sum_s[keep] / count[keep], "frac_positive": sum_y[keep] / count[keep],
        "count": count[keep],
    })


def expected_calibration_error(y_true, y_score, n_bins: int = 10, strategy: str = "uniform") -> float:
    """ECE = Σ_b (n_b / n) |frac_positive_b − mean_score_b| over the bins of :func:`reliability_curve`
    (Naeini 2015; Guo 2017) = Σ_b |Σ_{i∈b} (y_i − s_i)| / n. NaN if there are no samples."""
    y, s = _binary_arrays(y_true, y_score)
    if not len(y):
        return float("nan")
    _, _, sum_s, sum_y = _calibration_bins(y, s, n_bins, strategy)
    return float(np.abs(sum_y - sum_s).sum() / len(y))


def brier_score(y_true, y_score) -> float:
    """Brier score ``mean (s − y)²`` (Brier 1950). NaN if there are no samples."""
    y, s = _binary_arrays(y_true, y_score)
    return float(np.mean((s - y) ** 2)) if len(y) else float("nan")


# --- one label ------------------------------------------------------------------------------------
def binary_metrics(y_true, y_score, threshold: float = 0.5, *, n_bins: int = 10, name: str | None = None,
                   warn: bool = True, metrics: Sequence[str] | None = None) -> dict[str, float]:
    """All metrics of the module table for one label (or only ``metrics``), plus ``n``, ``n_pos``
    and ``threshold``.

    ``threshold`` may be NaN (a policy could not choose one): the threshold metrics are then NaN.
    Undefined metrics are NaN and (if ``warn``) one :class:`UndefinedMetricWarning` names them and
    ``name``.
    """
    wanted = METRICS if metrics is None else tuple(metrics)
    unknown = [k for k in wanted if k not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected a subset of {list(METRICS)}")
    y, s = _binary_arrays(y_true, y_score)
    n_pos = int(y.sum())
    out: dict[str, float] = {"n": len(y), "n_pos": n_pos, "threshold": float(threshold)}
    if "auroc" in wanted:
        out["auroc"] = auroc(y, s)
    if "auprc" in wanted:
        out["auprc"] = auprc(y, s)
    if any(k in wanted for k in THRESHOLD_METRICS):
        if np.isnan(threshold):
            out.update({k: float("nan") for k in THRESHOLD_METRICS})
        else:
            out.update(metrics_from_counts(*confusion_counts(y, s >= threshold)))
    if "brier" in wanted:
        out["brier"] = brier_score(y, s)
    if "ece" in wanted:
        out["ece"] = expected_calibration_error(y, s, n_bins)
    if warn:
        undefined = [k for k in wanted if np.isnan(out[k])]
        if undefined:
            why = f"{n_pos} positives and {len(y) - n_pos} negatives"
            if np.isnan(threshold):
                why += ", threshold NaN"
            _warn_undefined(undefined, why, name)
    return out


# --- several labels -------------------------------------------------------------------------------
def _as_2d(y, scores, mask):
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, scores = y[:, None], scores[:, None]
    if y.shape != scores.shape:
        raise ValueError(f"labels {y.shape} and scores {scores.shape} differ in shape")
    mask = np.ones(y.shape, bool) if mask is None else np.asarray(mask, dtype=bool).reshape(y.shape)
    return y, scores, mask


def _label_names(label_names, n_labels: int) -> list[str]:
    if label_names is None:
        return [f"label_{j}" for j in range(n_labels)]
    label_names = list(label_names)
    if len(label_names) != n_labels:
        raise ValueError(f"{len(label_names)} label names for {n_labels} label columns")
    return label_names


def label_metrics(y, scores, mask=None, thresholds=0.5, label_names=None, *, n_bins: int = 10) -> pd.DataFrame:
    """Per-label, macro and micro metrics as a tidy DataFrame.

    ``y`` ``[N, L]`` 0/1, ``scores`` ``[N, L]`` probabilities, ``mask`` ``[N, L]`` (False = ignore
    that entry, e.g. an uncertain label), ``thresholds`` a scalar or ``[L]`` (see
    :func:`choose_thresholds`). Columns: ``label, metric, estimate, n, n_pos, threshold, n_labels``
    (``n_labels`` = how many labels a macro value averages). Undefined values are NaN (warned).
    """
    y, scores, mask = _as_2d(y, scores, mask)
    n_labels = y.shape[1]
    names = _label_names(label_names, n_labels)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_labels,))
    rows, per_label = [], []
    tot = np.zeros(4)
    for j, name in enumerate(names):
        m = mask[:, j]
        res = binary_metrics(y[m, j], scores[m, j], thr[j], n_bins=n_bins, name=name)
        per_label.append(res)
        if not np.isnan(thr[j]):
            tot += confusion_counts(y[m, j], scores[m, j] >= thr[j])
        rows += [(name, k, res[k], res["n"], res["n_pos"], thr[j], 1) for k in METRICS]
    # macro: mean over the labels where the metric is defined (their absence was already warned)
    for k in METRICS:
        vals = np.array([r[k] for r in per_label], dtype=float)
        ok = ~np.isnan(vals)
        rows.append(("macro", k, float(vals[ok].mean()) if ok.any() else float("nan"), len(y), np.nan, np.nan, int(ok.sum())))
    # micro: all masked (image, label) pairs pooled
    yy, ss = y[mask].astype(bool), scores[mask]
    micro = {"auroc": auroc(yy, ss), "auprc": auprc(yy, ss), "brier": brier_score(yy, ss),
             "ece": expected_calibration_error(yy, ss, n_bins)}
    if np.isnan(thr).any():
        micro.update({k: float("nan") for k in THRESHOLD_METRICS})
    else:
        micro.update(metrics_from_counts(*tot))
    rows += [("micro", k, micro[k], int(mask.sum()), int(yy.sum()), np.nan, n_labels) for k in METRICS]
    return pd.DataFrame(rows, columns=["label", "metric", "estimate", "n", "n_pos", "threshold", "n_labels"])


def macro_auroc(y, scores, mask=None) -> float:
    """Mean per-label AUROC over the labels where it is defined (NaN if none is); no warnings."""
    y, scores, mask = _as_2d(y, scores, mask)
    vals = [auroc(y[mask[:, j], j], scores[mask[:, j], j]) for j in range(y.shape[1])]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


# --- threshold policies ---------------------------------------------------------------------------
def _roc_points(y: np.ndarray, s: np.ndarray):
    """ROC curve at every distinct threshold, highest first: ``(thresholds, tpr, fpr)``; predicting
    positive iff ``s >= threshold``. (As ``sklearn.metrics.roc_curve`` without its +inf point.)"""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = last + 1 - tps
    return s_sorted[last], tps / y.sum(), fps / (len(y) - y.sum())


def choose_thresholds(y_val, s_val, policy: str = "fixed", mask=None, *, threshold: float = 0.5,
                      target_sensitivity: float = 0.9, label_names=None) -> np.ndarray:
    """One threshold per label chosen on validation data by ``policy`` (see the module docstring).

    ``y_val``/``s_val`` ``[N, L]`` (or 1-D for one label), ``mask`` as in :func:`label_metrics`.
    A label whose validation split lacks positives or negatives gets NaN (warned) under every policy
    except ``fixed``; its threshold metrics on test are then NaN too.
    """
    if policy not in THRESHOLD_POLICIES:
        raise ValueError(f"unknown threshold policy {policy!r}; expected one of {list(THRESHOLD_POLICIES)}")
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    y, s, mask = _as_2d(y_val, s_val, mask)
    names = _label_names(label_names, y.shape[1])
    out = np.full(y.shape[1], float(threshold))
    if policy == "fixed":
        return out
    for j in range(y.shape[1]):
        yj, sj = _binary_arrays(y[mask[:, j], j], s[mask[:, j], j])
        n_pos = int(yj.sum())
        if n_pos == 0 or n_pos == len(yj):
            _warn_undefined([f"{policy} threshold"], f"validation has {n_pos} positives of {len(yj)}", names[j])
            out[j] = np.nan
            continue
        if policy == "prevalence":
            out[j] = np.sort(sj)[::-1][n_pos - 1]
            continue
        thr, tpr, fpr = _roc_points(yj, sj)
        if policy == "youden":
            out[j] = thr[int(np.argmax(tpr - fpr))]  # argmax = first = highest threshold among ties
        else:  # sensitivity: tpr is non-decreasing as the threshold falls; the last point has tpr 1
            out[j] = thr[int(np.argmax(tpr >= target_sensitivity - 1e-12))]
    return out


def apply_thresholds(scores, thresholds) -> np.ndarray:
    """Boolean predictions ``scores >= thresholds`` (thresholds broadcast over the label axis)."""
    return np.asarray(scores) >= np.asarray(thresholds)
