"""The figures of chapter 5 (supplementation, :mod:`cxrlib.experiments.supplementation`): AUROC
against the supplementation ratio per arm kind and generator source, the per-label difference
heatmap, the paired gain over the duplicates control along the ratio, and the mixing-sources bars.
Each takes a table the chapter saved and returns a matplotlib figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

MEAN_R_ONLY = "mean over R-only generators"  # the source label of the per-seed mean over R-only generators


def _kind_key(col: pd.Series) -> pd.Series:
    return col.map(KIND_ORDER) if col.name == "kind" else col


KIND_ORDER = {"real": 0, "real+synthetic": 1, "synthetic": 2, "real+duplicates": 3}
KIND_STYLE = {"real+synthetic": dict(color="tab:blue", marker="o"), "synthetic": dict(color="tab:orange", marker="s"),
              "real+duplicates": dict(color="tab:gray", marker="^"), "real": dict(color="black", marker="D")}
SOURCE_LINES = ("-", "--", "-.", ":")


def plot_auroc_vs_percent(curve: pd.DataFrame, title: str | None = None):
    """Macro AUROC against the synthetic (or duplicated) percentage, one panel per test set, one line
    per arm kind and generator source (colour: kind; line style: source), with the CIs of
    :func:`auroc_curve` (the envelope of the per-seed patient-level bootstrap 95 % CIs); the real-only
    arm's CI is the shaded band. The x axis is symmetric-log so 100 % and 1000 % are both readable."""
    import matplotlib.pyplot as plt

    tests = list(dict.fromkeys(curve.test_set))
    sources = [s for s in dict.fromkeys(curve.source) if s]
    fig, axes = plt.subplots(1, len(tests), figsize=(5.2 * len(tests), 4.4), squeeze=False, sharex=True)
    for ax, t in zip(axes[0], tests):
        c = curve[curve.test_set == t]
        real = c[c.kind == "real"].iloc[0]
        if np.isfinite(real.ci_low):
            ax.axhspan(real.ci_low, real.ci_high, color="black", alpha=0.08, lw=0)
        ax.axhline(real.estimate, color="black", lw=1, ls=":", label="real only")
        lines = c[c.kind != "real"][["kind", "source"]].drop_duplicates().itertuples(index=False)
        for i, (k, src) in enumerate(sorted(lines, key=lambda ks: (KIND_ORDER[ks[0]], ks[1]))):
            d = c[(c.kind == k) & (c.source == src)].sort_values("percent")
            d = d[(d.percent > 0) | (k != "synthetic")]  # synthetic-only has no 0 % point
            x = d.percent * (1 + 0.03 * (i - 2))  # a small multiplicative dodge (log axis)
            yerr = np.array([d.estimate - d.ci_low, d.ci_high - d.estimate])
            ls = SOURCE_LINES[sources.index(src) % len(SOURCE_LINES)] if src else "-"
            ax.errorbar(x, d.estimate, yerr=np.nan_to_num(yerr), capsize=3, lw=1.3, ms=4, ls=ls,
                        label=f"{k} [{src}]" if src else k, **KIND_STYLE[k])
        ax.set_xscale("symlog", linthresh=100)
        ticks = sorted({int(p) for p in c.percent})
        ax.set_xticks(ticks, [str(p) for p in ticks])
        ax.set_title(t)
        ax.set_xlabel("synthetic (or duplicated) images, % of |R|")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro AUROC")
    axes[0][-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_delta_heatmap(delta: pd.DataFrame, test_set: str = "internal"):
    """Per-label AUROC difference to ``real`` (rows: arms, columns: labels and macro; mean over seeds)
    on one test set; ``*`` marks a Holm-adjusted p < 0.05 in every seed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = delta[delta.test_set == test_set]
    order = list(dict.fromkeys(d.sort_values(["kind", "source", "percent"], key=_kind_key).arm))
    labels = [l for l in dict.fromkeys(d.label) if l != "macro"] + ["macro"]
    est = d.pivot_table(index="arm", columns="label", values="estimate").reindex(index=order, columns=labels)
    p = d.pivot_table(index="arm", columns="label", values="p_adj_seeds").reindex(index=order, columns=labels)
    annot = est.map(lambda v: f"{v:+.3f}") + p.map(lambda v: "*" if v < 0.05 else "")
    lim = float(np.nanmax(np.abs(est.to_numpy()))) if np.isfinite(est.to_numpy()).any() else 0.05
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 3, 0.45 * len(order) + 1.6))
    sns.heatmap(est, annot=annot, fmt="", cmap="RdBu", vmin=-lim, vmax=lim, ax=ax, cbar_kws={"label": "AUROC - AUROC(real)"})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(f"{test_set}: AUROC difference to the real-only arm (* Holm-adjusted p < 0.05 in every seed)")
    fig.tight_layout()
    return fig


def plot_contrasts(table: pd.DataFrame, vs: str = "duplicates"):
    """The gain of real+synthetic over real+duplicates (``vs``) against the supplementation ratio, one
    line per source, with the 95 % t-intervals over seeds: where along the ratio a gain lives, if anywhere."""
    import matplotlib.pyplot as plt

    tests = list(dict.fromkeys(table.test_set))
    fig, axes = plt.subplots(1, len(tests), figsize=(5.0 * len(tests), 3.8), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], tests):
        d = table[(table.test_set == t) & (table.vs == vs)]
        for i, (src, g) in enumerate(d.groupby("source", sort=False)):
            g = g.sort_values("percent")
            yerr = np.nan_to_num(np.array([g.estimate - g.ci_low, g.ci_high - g.estimate]))
            ax.errorbar(g.percent * (1 + 0.03 * (i - 1)), g.estimate, yerr=yerr, capsize=3, marker="o", ms=4,
                        lw=2.2 if src == MEAN_R_ONLY else 1.2, label=src)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ticks = sorted({int(p) for p in d.percent})
        ax.set_xticks(ticks, [str(p) for p in ticks])
        ax.minorticks_off()
        ax.set_title(t)
        ax.set_xlabel("synthetic images added, % of |R|")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"macro AUROC: real+synthetic − real+{vs}" if vs == "duplicates" else "macro AUROC: real+synthetic − real")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_mixing(summary: pd.DataFrame):
    """Grouped bars: macro AUROC (mean over seeds) of each mixing arm, one group per test set."""
    import matplotlib.pyplot as plt

    tests = list(dict.fromkeys(summary.test_set))
    arms = list(dict.fromkeys(summary.arm))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(tests), 3.8))
    w = 0.8 / max(1, len(arms))
    colors = ("tab:gray", "tab:blue", "tab:olive")
    for i, a in enumerate(arms):
        d = summary[summary.arm == a].set_index("test_set").reindex(tests)
        ax.bar(np.arange(len(tests)) + (i - (len(arms) - 1) / 2) * w, d.auroc, w, label=a, color=colors[i % len(colors)])
    ax.set_xticks(np.arange(len(tests)), tests)
    finite = summary.auroc[np.isfinite(summary.auroc)]
    if len(finite):
        ax.set_ylim(max(0.0, float(finite.min()) - 0.05), min(1.0, float(finite.max()) + 0.03))
    ax.set_ylabel("macro AUROC (mean over seeds)")
    ax.set_xlabel("test set")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
