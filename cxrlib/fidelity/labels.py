"""Label consistency: does a synthetic image show the finding it was conditioned on?

An *oracle* classifier trained on real data scores every synthetic image; per label, the AUROC of
the oracle's score against the conditioning label measures how well the generator carries that
label (0.5 = not at all, 1 = perfectly separable). An oracle's own AUROC on real test images is the
ceiling to compare with. :func:`oracle_agreement_mask` optionally keeps only the synthetic images
the oracle agrees with.

That AUROC compares images drawn under *different* condition vectors, so an oracle that learned which
findings co-occur (consolidation with effusion, say) can hide or fake a label's effect. The
counterfactual test :func:`paired_label_effect` removes that confounder: each condition drawn for a
label is sampled twice with the same per-image seed, once as drawn and once with only that label
switched off (:func:`cxrlib.generators.conditions.flipped_conditions`); whatever changes in the oracle's score is
the generator's response to that one label.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .metrics import warn_small_n


def _check_scores(scores, labels, label_names, mask):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"oracle scores {scores.shape} and conditioning labels {labels.shape} must both be [N, L]")
    if len(label_names) != scores.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {scores.shape[1]} label columns")
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask {mask.shape} must match labels {labels.shape}")
    bad = mask & ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"conditioning labels must be 0 or 1 where not masked; found {sorted(set(labels[bad].tolist()))[:5]}")
    return scores, labels, mask


def label_consistency(scores, cond_labels, label_names, *, mask=None, warn: bool = True) -> pd.DataFrame:
    """Per-label AUROC of oracle score vs intended (conditioning) label.

    ``scores``: oracle probabilities or logits ``[N, L]``; ``cond_labels``: 0/1 ``[N, L]``;
    ``mask``: optional bool ``[N, L]``, False = condition unknown for that label (excluded).
    Returns a DataFrame with ``label, auroc, n, n_pos, n_neg``. A label with a single class among
    the synthetic images has AUROC NaN and a warning (it is undefined, not 0.5).
    """
    from ..metrics import auroc

    scores, labels, mask = _check_scores(scores, cond_labels, label_names, mask)
    rows = []
    for j, name in enumerate(label_names):
        m = mask[:, j]
        y, s = labels[m, j], scores[m, j]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos == 0 or n_neg == 0:
            if warn:
                warnings.warn(
                    f"label_consistency: label {name!r} has {n_pos} positive and {n_neg} negative synthetic "
                    "images; AUROC is undefined (NaN)",
                    UserWarning,
                    stacklevel=2,
                )
            auc = float("nan")
        else:
            if warn:
                warn_small_n("label_auroc", min(n_pos, n_neg), f"label {name!r}")
            auc = auroc(y, s)
        rows.append({"label": name, "auroc": auc, "n": int(m.sum()), "n_pos": n_pos, "n_neg": n_neg})
    return pd.DataFrame(rows)


def oracle_agreement_mask(scores, cond_labels, *, thresholds=0.5, mask=None, min_agreement: float = 1.0) -> np.ndarray:
    """Which synthetic images to keep: bool ``[N]``.

    The oracle *agrees* with image i on label j when ``(scores[i, j] >= thresholds[j]) ==
    cond_labels[i, j]`` (``thresholds``: a scalar or one per label, e.g. the oracle's Youden-optimal
    thresholds chosen on real validation data). An image is kept when it agrees on at least
    ``min_agreement`` of its unmasked labels (1.0 = on all of them). Images with no unmasked label
    are kept (nothing to disagree with).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(cond_labels, dtype=np.float64)
    names = [str(j) for j in range(scores.shape[1])] if scores.ndim == 2 else []
    scores, labels, mask = _check_scores(scores, labels, names, mask)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (scores.shape[1],))
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be in [0, 1], got {min_agreement}")
    agree = ((scores >= thr) == (labels == 1)) & mask
    n = mask.sum(axis=1)
    frac = np.divide(agree.sum(axis=1), n, out=np.ones(len(n)), where=n > 0)
    return frac >= min_agreement - 1e-12


def paired_label_effect(score_on, score_off, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """The effect of one label on the oracle's score for it, from paired twins.

    ``score_on[i]`` and ``score_off[i]`` are the oracle's scores for that label on twin images *i*:
    the same seed and condition, except that the label is on in the first and off in the second.
    Returns ``auroc`` (on-twins vs off-twins; 0.5 = the label changes nothing the oracle sees), its
    percentile CI (``ci_low``, ``ci_high``) from a bootstrap over pairs (:func:`cxrlib.stats.bootstrap_ci`,
    one cluster per pair), ``frac_higher`` (pairs where the score rose), ``mean_diff``, the two-sided
    Wilcoxon signed-rank ``p_value`` of the paired differences (scipy; 1.0 when every difference is 0)
    and ``n`` pairs.
    """
    from scipy.stats import wilcoxon

    from ..metrics import auroc
    from ..stats import bootstrap_ci

    on = np.asarray(score_on, dtype=np.float64).ravel()
    off = np.asarray(score_off, dtype=np.float64).ravel()
    if on.shape != off.shape:
        raise ValueError(f"paired scores must have the same length, got {on.shape[0]} and {off.shape[0]}")
    if len(on) < 2:
        raise ValueError(f"paired_label_effect needs at least 2 pairs, got {len(on)}")
    if not (np.isfinite(on).all() and np.isfinite(off).all()):
        raise ValueError("paired scores contain NaN or inf")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(on)
    warn_small_n("label_auroc", n, "paired label effect")
    pair = np.r_[np.arange(n), np.arange(n)]  # the bootstrap resamples whole pairs (both twins together)
    boot = bootstrap_ci(auroc, np.r_[np.ones(n), np.zeros(n)], np.r_[on, off], groups=pair, n_boot=n_boot,
                        alpha=1 - level, seed=seed)
    diff = on - off
    p = 1.0 if not np.any(diff) else float(wilcoxon(on, off).pvalue)
    return {"auroc": boot.estimate, "ci_low": boot.ci_low, "ci_high": boot.ci_high, "frac_higher": float((diff > 0).mean()),
            "mean_diff": float(diff.mean()), "p_value": p, "n": n}
