"""Plot helpers shared by the experiments (matplotlib/seaborn figures, returned, never saved here:
``RunContext.save_figure`` saves them as citable figures)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def image_grid(images, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               cell: float = 0.9, title: str | None = None):
    """A grid of grayscale images ``[R, C, S, S]`` (uint8 or float in [0, 1]) with row/column labels."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [rows, cols, S, S], got shape {images.shape}")
    R, C = images.shape[:2]
    label_w = 1.9 if row_labels is not None else 0.0
    fig, axes = plt.subplots(R, C, figsize=(label_w + C * cell, R * cell + (0.35 if col_labels is not None or title else 0.1)),
                             squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.04})
    vmax = 255 if images.dtype == np.uint8 else 1.0
    for r in range(R):
        for c in range(C):
            ax = axes[r, c]
            ax.imshow(images[r, c], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
    if col_labels is not None:
        for c in range(C):
            axes[0, c].set_title(col_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=label_w / (label_w + C * cell) if row_labels is not None else 0.01, right=0.99, top=0.92 if (col_labels is not None or title) else 0.99, bottom=0.01)
    return fig


def heatmap(matrix, title: str, ax=None, fmt: str = ".2f", vmin=None, vmax=None, cmap="viridis", annot: bool = True):
    """A labelled heatmap of a DataFrame (seaborn)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * matrix.shape[1] + 2.5, 0.4 * matrix.shape[0] + 1.5))
    sns.heatmap(matrix, annot=annot, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax, cbar=True,
                annot_kws={"fontsize": 6}, square=False)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    return ax


def plot_validation_curve(curve: pd.DataFrame, title: str = "R alone"):
    """Validation macro-AUROC against optimizer steps, one line per seed, the kept weights marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for seed, g in curve.groupby("seed"):
        line, = ax.plot(g["step"], g["val_macro_auroc"], marker=".", label=f"seed {seed}")
        kept = g[g["best"].astype(bool)].tail(1)
        ax.scatter(kept["step"], kept["val_macro_auroc"], s=80, facecolor="none", edgecolor=line.get_color(), zorder=3)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("validation macro AUROC")
    ax.set_title(f"{title}: validation curve over the step budget (circle: kept weights)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
