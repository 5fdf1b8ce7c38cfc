"""One tidy table of every fidelity metric for a (real, synthetic) pair."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..utils import derive_seed
from .diversity import mean_pairwise_ms_ssim
from .features import extract_features
from .labels import label_consistency
from .memorization import memorization_audit
from .metrics import SmallSampleWarning, bootstrap_ci, frechet_distance, kernel_distance, precision_recall_density_coverage

REPORT_COLUMNS = ("metric", "label", "value", "ci_low", "ci_high", "n_real", "n_syn")

# What each metric row means (direction and scale), for tables and the book's methods chapter.
METRIC_DESCRIPTIONS = {
    "fd": "Fréchet distance in the extractor's feature space (lower = closer to real)",
    "kid": "kernel distance, unbiased MMD² with the cubic polynomial kernel (lower = closer; ~0 = same distribution)",
    "precision": "share of synthetic images on the real manifold (fidelity, Kynkäänniemi 2019)",
    "recall": "share of real images on the synthetic manifold (diversity, Kynkäänniemi 2019)",
    "density": "mean number of real k-NN balls holding a synthetic image, / k (Naeem 2020; ~1 for same distribution)",
    "coverage": "share of real images whose k-NN ball holds a synthetic image (Naeem 2020)",
    "ms_ssim_syn": "mean pairwise MS-SSIM within the synthetic set (higher = less diverse)",
    "ms_ssim_real": "mean pairwise MS-SSIM within the real set (the reference for ms_ssim_syn)",
    "memorized_fraction_pixel": "share of synthetic images closer to a training image (pixels) than the closest memorization_quantile (default 5 %) of held-out real images are",
    "memorized_expected_pixel": "the false-alarm share of that rule (held-out images under the threshold)",
    "nn_ratio_median_pixel": "median of d(syn, train) / median d(held-out, train) in pixels (~1 = as novel as new real images)",
    "memorized_fraction_feature": "as memorized_fraction_pixel, in the extractor's feature space",
    "memorized_expected_feature": "as memorized_expected_pixel, in feature space",
    "nn_ratio_median_feature": "as nn_ratio_median_pixel, in feature space",
    "label_auroc": "AUROC of the oracle's score vs the conditioning label (0.5 = label not carried); 'all' = macro mean",
}


def _positive(labels, j) -> np.ndarray:
    return np.asarray(labels, dtype=np.float64)[:, j] == 1.0


def fidelity_report(
    real_images,
    real_labels,
    syn_images,
    syn_labels,
    extractor=None,
    *,
    label_names,
    train_images=None,
    oracle_scores=None,
    syn_label_mask=None,
    real_features=None,
    syn_features=None,
    train_features=None,
    per_label: bool = True,
    k: int = 5,  # k-NN for precision / recall / density / coverage (Naeem's default)
    n_boot: int = 200,  # bootstrap resamples for the FD / KID intervals (0 = no interval)
    ci_level: float = 0.95,
    ci_method: str = "basic",  # or "percentile"; see metrics.bootstrap_ci for why basic
    ms_ssim_pairs: int = 1000,  # pairs sampled per set for the mean pairwise MS-SSIM
    memorization_quantile: float = 0.05,  # held-out quantile that calibrates the replica threshold
    batch_size: int = 256,
    device: str = "cpu",
    seed: int = 0,
) -> pd.DataFrame:
    """All fidelity metrics of a synthetic set against a real one, as a tidy DataFrame.

    Columns ``metric, label, value, ci_low, ci_high, n_real, n_syn``; ``label`` is ``"all"`` or a
    label name. Per label, the real subset is the images whose *true* label is positive and the
    synthetic subset the images *conditioned* on that label.

    Parameters
    ----------
    real_images, real_labels
        The real reference set: uint8 ``[N, 1, S, S]`` (or float in [0, 1]) and 0/1 labels
        ``[N, L]``. It should be **held out** from the generator's training data (test FD does not
        reward memorisation); it also calibrates the memorisation audit.
    syn_images, syn_labels
        The synthetic set and its conditioning labels ``[M, L]`` (``syn_label_mask`` False = that
        label was left unconditioned; only used for ``label_auroc``).
    extractor
        A :class:`~cxrlib.fidelity.features.FeatureExtractor` or a trained classifier (penultimate
        features); may be None only if ``real_features``/``syn_features`` (and ``train_features``)
        are given.
    train_images
        The generator's training images: adds the memorisation rows (pixel space, and feature space).
    oracle_scores
        An oracle classifier's scores on ``syn_images`` ``[M, L]``: adds ``label_auroc`` rows.

    Rows (see :data:`METRIC_DESCRIPTIONS`): ``fd`` (overall only: FD needs n in the thousands) and
    ``kid`` with bootstrap CIs; ``precision, recall, density, coverage``; ``ms_ssim_syn`` and
    ``ms_ssim_real``; the memorisation rows (``n_real`` = held-out images); ``label_auroc``
    (``n_real`` empty). Metrics below their minimum n (:data:`~cxrlib.fidelity.metrics.MIN_N`) are
    still reported, with their n, and one :class:`SmallSampleWarning` lists them. A label with too
    few images for a metric (fewer than k + 1 for PRDC, fewer than 2 for KID) gets NaN.
    """
    label_names = tuple(label_names)
    real_labels = np.asarray(real_labels, dtype=np.float64)
    syn_labels = np.asarray(syn_labels, dtype=np.float64)
    n_real, n_syn = len(real_images), len(syn_images)
    if real_labels.shape != (n_real, len(label_names)) or syn_labels.shape != (n_syn, len(label_names)):
        raise ValueError(
            f"labels must be [N, {len(label_names)}] for label_names {label_names}; got real {real_labels.shape} "
            f"for {n_real} images and synthetic {syn_labels.shape} for {n_syn} images"
        )

    rows: list[dict] = []

    def add(metric, label, value, n_r, n_s, lo=np.nan, hi=np.nan):
        rows.append({"metric": metric, "label": label, "value": value, "ci_low": lo, "ci_high": hi, "n_real": n_r, "n_syn": n_s})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        # 1. features (once per set)
        def feats(given, images):
            if given is not None:
                return np.asarray(given, dtype=np.float64)
            if extractor is None:
                raise ValueError("fidelity_report: give an extractor, or precomputed real_features/syn_features")
            return extract_features(extractor, images, batch_size=batch_size, device=device)

        f_real, f_syn = feats(real_features, real_images), feats(syn_features, syn_images)

        # 2. overall distribution metrics, with bootstrap intervals
        fd = frechet_distance(f_real, f_syn)
        kid = kernel_distance(f_real, f_syn)
        for name, point in (("fd", fd), ("kid", kid)):
            lo = hi = np.nan
            if n_boot:
                ci = bootstrap_ci(name, f_real, f_syn, n_boot=n_boot, level=ci_level, method=ci_method, seed=derive_seed(seed, name, "all"))
                lo, hi = ci["ci_low"], ci["ci_high"]
            add(name, "all", point["value"], n_real, n_syn, lo, hi)

        # 3. precision / recall / density / coverage and diversity, overall then per label
        groups = [("all", np.ones(n_real, bool), np.ones(n_syn, bool))]
        if per_label:
            groups += [(name, _positive(real_labels, j), _positive(syn_labels, j)) for j, name in enumerate(label_names)]
        for label, mr, ms in groups:
            nr, ns = int(mr.sum()), int(ms.sum())
            if min(nr, ns) > k:
                prdc = precision_recall_density_coverage(f_real[mr], f_syn[ms], k=k)
                for m in ("precision", "recall", "density", "coverage"):
                    add(m, label, prdc[m], nr, ns)
            else:
                for m in ("precision", "recall", "density", "coverage"):
                    add(m, label, np.nan, nr, ns)
            if label != "all":
                if min(nr, ns) >= 2:
                    kid_l = kernel_distance(f_real[mr], f_syn[ms])["value"]
                    ci = {"ci_low": np.nan, "ci_high": np.nan}
                    if n_boot:
                        ci = bootstrap_ci("kid", f_real[mr], f_syn[ms], n_boot=n_boot, level=ci_level, method=ci_method, seed=derive_seed(seed, "kid", label))
                    add("kid", label, kid_l, nr, ns, ci["ci_low"], ci["ci_high"])
                else:
                    add("kid", label, np.nan, nr, ns)
            for metric, images, sel, n_r, n_s in (("ms_ssim_syn", syn_images, ms, np.nan, ns), ("ms_ssim_real", real_images, mr, nr, np.nan)):
                idx = np.flatnonzero(sel)
                div = mean_pairwise_ms_ssim(images[idx], max_pairs=ms_ssim_pairs, seed=derive_seed(seed, metric, label), what=f"{metric}, {label}")
                add(metric, label, div["value"], n_r, n_s)

        # 4. memorisation audit against the generator's training images (real set = held-out calibration)
        if train_images is not None:
            f_train = None
            if train_features is not None or extractor is not None:
                f_train = feats(train_features, train_images)
            audits = memorization_audit(
                syn_images,
                train_images,
                real_images,
                syn_features=f_syn if f_train is not None else None,
                train_features=f_train,
                heldout_features=f_real if f_train is not None else None,
                quantile=memorization_quantile,
            )
            for space, audit in audits.items():
                add(f"memorized_fraction_{space}", "all", audit.flagged_fraction, n_real, n_syn)
                add(f"memorized_expected_{space}", "all", audit.expected_fraction, n_real, n_syn)
                add(f"nn_ratio_median_{space}", "all", float(audit.table["ratio"].median()), n_real, n_syn)

        # 5. label consistency under an oracle
        if oracle_scores is not None:
            lc = label_consistency(oracle_scores, syn_labels, label_names, mask=syn_label_mask)
            add("label_auroc", "all", float(np.nanmean(lc["auroc"])) if lc["auroc"].notna().any() else np.nan, np.nan, int(lc["n"].max()))
            for r in lc.itertuples():
                add("label_auroc", r.label, r.auroc, np.nan, r.n)

    # one summary warning for all small-sample cases, other warnings passed on unchanged
    small = [str(w.message).split(" is below")[0] for w in caught if issubclass(w.category, SmallSampleWarning)]
    for w in caught:
        if not issubclass(w.category, SmallSampleWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if small:
        warnings.warn(
            f"fidelity_report: {len(small)} estimate(s) rest on fewer samples than the documented minimum "
            f"(cxrlib.fidelity.metrics.MIN_N): {'; '.join(small[:12])}{' ...' if len(small) > 12 else ''}",
            SmallSampleWarning,
            stacklevel=2,
        )
    df = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    for c in ("n_real", "n_syn"):
        df[c] = df[c].astype("Int64")
    df.attrs["extractor"] = getattr(extractor, "name", type(extractor).__name__ if extractor is not None else "precomputed")
    return df
