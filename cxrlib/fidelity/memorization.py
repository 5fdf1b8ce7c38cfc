r"""Memorisation (replica) audit: is a synthetic image closer to a training image than fresh real images are?

For each synthetic image we find its nearest training image, in pixel space (root-mean-square
difference of the [0, 1] images, so the scale does not depend on the image size) and in a feature
space (Euclidean distance between extractor features).

Calibration and the flagging rule
---------------------------------
A generator that has not memorised produces images that are as far from the training set as new
real images from the same population are. The real **held-out** set (images the generator never
saw, from the same distribution, disjoint patients) gives that reference: for each held-out image
its nearest-training-image distance :math:`d_h`. With :math:`\tau` the ``quantile`` (default 5 %)
of the held-out distances, a synthetic image :math:`s` is **flagged** when

.. math:: d(s, \text{train}) < \tau .

So a generator that copies nothing has about ``quantile`` of its images flagged (the false-alarm
rate, reported as ``expected_fraction``: the share of held-out images below :math:`\tau`), while
copies and near-copies of training images fall below every held-out distance. Each image also gets
its **distance ratio** :math:`d(s, \text{train}) / \operatorname{median}(d_h)` (ratios well below 1
mean "much closer to a training image than new real images usually are"). Read the flagged fraction
against ``expected_fraction``, not against 0, and look at the figure of closest pairs: pixel-space
neighbours also catch near-blank or over-smoothed images that sit close to everything.

Exact copies are decided without reference to any other distance: the distance of a candidate
nearest pair is recomputed by differencing (:mod:`cxrlib.fidelity.distances`), so a copy is at
exactly 0 on every CPU and BLAS, whether one held-out image leaks or all of them do.

This follows the held-out-calibrated nearest-neighbour tests of Somepalli et al. 2023 and Carlini et
al. 2023 and the "distance to the closest record" practice of synthetic-data privacy audits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .distances import nearest_neighbors
from .features import as_float_images
from .metrics import warn_small_n

# A held-out image within one grey level (RMS over the image) of a training image is a near-copy: a
# re-encoded or lightly edited duplicate. Natural images of different patients differ by far more.
PIXEL_NEAR_COPY = 1.0 / 255.0
# In a feature space there is no grey level; the same image can give features that differ by the
# extractor's float32 round-off (batching), so "near" is relative to the typical feature norm.
FEATURE_NEAR_COPY = 1e-3


def pixel_vectors(images) -> np.ndarray:
    """Images as vectors scaled by 1/sqrt(pixels), so Euclidean distance = RMS pixel difference."""
    x = as_float_images(images).double()
    return (x.flatten(1) / np.sqrt(x[0].numel())).numpy()


@dataclass
class ReplicaAudit:
    """Result of :func:`replica_audit` in one space.

    ``table``: one row per synthetic image: ``syn_index, train_index, distance, ratio, flagged,
    exact_copy`` (``exact_copy``: bit-identical to its nearest training vector).
    ``heldout_exact_copies`` / ``heldout_near_copies``: held-out images that are exact copies
    (distance exactly 0) / near-copies (``0 < distance <= near_copy``) of a training image: a leak of
    the held-out set into the training set, which makes the calibration meaningless.
    """

    space: str
    table: pd.DataFrame
    threshold: float
    quantile: float
    heldout_median: float
    expected_fraction: float
    n_syn: int
    n_train: int
    n_heldout: int
    near_copy: float = float("nan")
    heldout_exact_copies: int = 0
    heldout_near_copies: int = 0

    @property
    def flagged_fraction(self) -> float:
        return float(self.table["flagged"].mean())

    def summary(self) -> dict:
        return {
            "space": self.space,
            "flagged_fraction": self.flagged_fraction,
            "expected_fraction": self.expected_fraction,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "median_ratio": float(self.table["ratio"].median()),
            "heldout_median_distance": self.heldout_median,
            "exact_copies": int(self.table["exact_copy"].sum()),
            "heldout_exact_copies": self.heldout_exact_copies,
            "heldout_near_copies": self.heldout_near_copies,
            "n_syn": self.n_syn,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
        }


def replica_audit(syn, train, heldout, *, quantile: float = 0.05, space: str = "feature",
                  near_copy: float | None = None) -> ReplicaAudit:
    """Flag synthetic vectors closer to the training set than the ``quantile`` of held-out ones.

    ``syn``, ``train``, ``heldout``: vectors ``[N, D]`` in one space (features, or
    :func:`pixel_vectors`). See the module docstring for the rule.

    Leak check: a held-out vector at distance exactly 0 from a training vector (bit-identical: the
    distance is recomputed by differencing, so this holds on every CPU and BLAS and does not depend
    on the other distances) is an **exact copy**; one within ``near_copy`` of it is a **near-copy**.
    Both are warned about. ``near_copy`` defaults to :data:`PIXEL_NEAR_COPY` (one grey level RMS) in
    the ``pixel`` space and to :data:`FEATURE_NEAR_COPY` times the RMS norm of the training vectors
    in a feature space.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    syn, train, heldout = (np.asarray(a, dtype=np.float64) for a in (syn, train, heldout))
    if len(heldout) < 2:
        raise ValueError(f"replica_audit: the held-out set needs at least 2 images, got {len(heldout)}")
    if near_copy is None:
        near_copy = PIXEL_NEAR_COPY if space == "pixel" else FEATURE_NEAR_COPY * float(np.sqrt((train**2).sum(1).mean()))
    warn_small_n("memorization", len(heldout), "held-out real images")
    _, d_h = nearest_neighbors(heldout, train)
    exact, near = int((d_h == 0).sum()), int(((d_h > 0) & (d_h <= near_copy)).sum())
    if exact or near:
        warnings.warn(
            f"replica_audit ({space}): of {len(heldout)} held-out images, {exact} are exact copies and {near} are "
            f"near-copies (distance <= {near_copy:.3g}) of training images -- the held-out set leaks into the "
            "training set, and the flagging threshold is no longer calibrated",
            UserWarning,
            stacklevel=2,
        )
    tau = float(np.quantile(d_h, quantile))
    median = float(np.median(d_h))
    nn_idx, d_s = nearest_neighbors(syn, train)
    table = pd.DataFrame(
        {
            "syn_index": np.arange(len(syn)),
            "train_index": nn_idx,
            "distance": d_s,
            "ratio": d_s / median if median > 0 else np.full(len(syn), np.nan),
            "flagged": d_s < tau,
            "exact_copy": d_s == 0,
        }
    )
    return ReplicaAudit(space, table, tau, quantile, median, float((d_h < tau).mean()), len(syn), len(train), len(heldout),
                        float(near_copy), exact, near)


def memorization_audit(
    syn_images,
    train_images,
    heldout_images,
    *,
    syn_features=None,
    train_features=None,
    heldout_features=None,
    quantile: float = 0.05,
) -> dict[str, ReplicaAudit]:
    """Replica audit in pixel space, and in feature space when all three feature arrays are given.

    Returns ``{"pixel": ReplicaAudit, "feature": ReplicaAudit}`` (the latter only with features).
    The held-out images must come from patients the generator never saw (100
    or more of them, :data:`~cxrlib.fidelity.metrics.MIN_N` ``['memorization']``).
    """
    out = {
        "pixel": replica_audit(
            pixel_vectors(syn_images), pixel_vectors(train_images), pixel_vectors(heldout_images), quantile=quantile, space="pixel"
        )
    }
    feats = (syn_features, train_features, heldout_features)
    if any(f is not None for f in feats):
        if any(f is None for f in feats):
            raise ValueError("memorization_audit: give syn_features, train_features and heldout_features together")
        out["feature"] = replica_audit(*feats, quantile=quantile, space="feature")
    return out



def plot_closest_pairs(audit: ReplicaAudit, syn_images, train_images, *, n: int = 8, title: str | None = None):
    """Figure of the ``n`` synthetic images closest to a training image (top row) above that training
    image (bottom row), with distance, ratio and flag. Returns the matplotlib Figure (not saved)."""
    import matplotlib.pyplot as plt

    syn = as_float_images(syn_images, "syn_images").numpy()
    train = as_float_images(train_images, "train_images").numpy()
    rows = audit.table.nsmallest(min(n, len(audit.table)), "distance")
    k = max(len(rows), 1)
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k, 4.2), squeeze=False)
    for c, (_, r) in enumerate(rows.iterrows()):
        axes[0, c].imshow(syn[int(r.syn_index), 0], cmap="gray", vmin=0, vmax=1)
        axes[0, c].set_title(f"syn {int(r.syn_index)}\nd={r.distance:.3g} r={r.ratio:.2f}" + ("\nFLAGGED" if r.flagged else ""), fontsize=7)
        axes[1, c].imshow(train[int(r.train_index), 0], cmap="gray", vmin=0, vmax=1)
        axes[1, c].set_title(f"train {int(r.train_index)}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        title
        or f"Closest synthetic-training pairs ({audit.space} space); flagged {audit.flagged_fraction:.1%} "
        f"vs {audit.expected_fraction:.1%} expected (n_syn={audit.n_syn}, n_heldout={audit.n_heldout})",
        fontsize=8,
    )
    fig.tight_layout()
    return fig

