"""When does synthetic data help? — the regime map of chapter 5 (the study's own contribution; no seed
study has it).

The gain of supplementing a labeled real set with synthetic images *over supplementing it with the
same number of duplicates of its own images*, as a function of two things a practitioner controls:
the labeled fraction ``f`` of the pool (R_f, the manifest's nested labeled subsets: 10 → 100 %) and
the supplementation ratio ``p`` (synthetic images in % of |R_f|). The generator is Huijben's
two-stage recipe, the source that can carry more than R_f: the unconditional DDPM pretrained on the
whole unlabeled pool, fine-tuned on R_f for ``ft_steps`` (:func:`cxrlib.experiments.synthetic.pool_finetuned_generator`),
sampled at R_f's label and demographic distribution (:func:`cxrlib.experiments.synthetic.natural_synthetic`).

Per fraction, three arm kinds (each ``n_seeds`` classifiers, the fair protocol's equal step budget):

=============================== =====================================================================
``R_f real``                    R_f alone
``R_f + synthetic p%``          R_f + the first ``p·|R_f|/100`` images of R_f's synthetic stream
``R_f + duplicates p%``         R_f + as many copies of R_f's images (the count-matched control)
=============================== =====================================================================

Each map cell is the paired contrast over training seeds (:func:`cxrlib.seed_contrasts.paired_contrast`)
of ``R_f + synthetic p%`` − ``R_f + duplicates p%`` on the internal test set, with its 95 %
t-interval and the Holm-adjusted p across the map's cells (one family). At ``f = labeled_fraction``
R_f is R itself, and the cells are the chapter's pool-pretrained arms (same cache entries).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.base import CXRDataset
from .common import RealSets, StudyConfig, evaluate_arms
from .pretraining import labeled_subset, pct
from .synthetic import duplicates, n_images

KINDS = ("real", "synthetic", "duplicates")


def arm_name(fraction: float, kind: str, percent: int = 0) -> str:
    base = f"R{pct(fraction)}"
    return {"real": f"{base} real", "synthetic": f"{base} + synthetic {percent}%",
            "duplicates": f"{base} + duplicates {percent}%"}[kind]


def build(cfg: StudyConfig, sets: RealSets, progress: bool = True
          ) -> tuple[pd.DataFrame, dict[str, list[CXRDataset]], pd.DataFrame]:
    """Train (or fetch) the pool-pretrained generator fine-tuned on each R_f, sample its stream, and
    assemble the arms. Returns ``(generators, arms, arm table)``: the generator table has one row per
    fraction (``fraction, labeled_images, ft_steps, path``); the arm table ``arm, fraction, kind,
    percent, n_real, n_added, n_train``. ``cfg`` needs ``regime_fractions``, ``regime_percents``,
    ``ft_steps`` and ``ft_lr`` (chapter 5's config)."""
    from . import synthetic as S

    gens, arms, rows = [], {}, []
    need = max(cfg.regime_percents)
    for f in sorted(cfg.regime_fractions):
        r_f = labeled_subset(cfg, sets, f)
        path = S.pool_finetuned_generator(cfg, sets, r_f, ft_steps=cfg.ft_steps, ft_lr=cfg.ft_lr, progress=progress)
        gens.append(dict(fraction=f, labeled_images=len(r_f), ft_steps=cfg.ft_steps, path=str(path)))
        stream = S.natural_synthetic(cfg, path, r_f, n_images(need, len(r_f)), progress=progress)
        n = len(r_f)
        arms[arm_name(f, "real")] = [r_f]
        rows.append(dict(arm=arm_name(f, "real"), fraction=f, kind="real", percent=0, n_real=n, n_added=0))
        for p in sorted(cfg.regime_percents):
            m = n_images(p, n)
            arms[arm_name(f, "synthetic", p)] = [r_f, stream.subset(np.arange(m))]
            arms[arm_name(f, "duplicates", p)] = [r_f, duplicates(r_f, m)]
            rows += [dict(arm=arm_name(f, k, p), fraction=f, kind=k, percent=p, n_real=n, n_added=m)
                     for k in ("synthetic", "duplicates")]
    table = pd.DataFrame(rows)
    table["n_train"] = table["n_real"] + table["n_added"]
    return pd.DataFrame(gens), arms, table


def run(cfg: StudyConfig, arms: dict[str, list[CXRDataset]], table: pd.DataFrame, sets: RealSets,
        progress: bool = True) -> pd.DataFrame:
    """Train every arm for every seed and evaluate macro and per-label AUROC on the internal test set,
    one :func:`cxrlib.experiments.common.evaluate_arms` per fraction (reference: R_f alone); the rows
    carry a ``fraction`` column."""
    out = []
    for f, rows in table.groupby("fraction", sort=True):
        sub = {a: arms[a] for a in rows["arm"]}
        res = evaluate_arms(cfg, sub, sets, reference=arm_name(f, "real"), policies=(), metrics=("auroc",),
                            test_sets={"internal": sets.test}, progress=progress)
        out.append(res.assign(fraction=f))
    return pd.concat(out, ignore_index=True)


def regime_map(results: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per (fraction, percent, ``vs``): the paired contrast over seeds of ``R_f + synthetic p%``
    against ``R_f + duplicates p%`` (``vs = "duplicates"``) and against ``R_f`` alone (``vs = "real"``):
    ``estimate, ci_low, ci_high, p, n_seeds``, and ``p_holm`` (Holm across the map's cells of one
    ``vs``)."""
    from ..seed_contrasts import paired_contrast
    from ..stats import adjust_pvalues

    rows = []
    syn = table[table.kind == "synthetic"]
    for r in syn.itertuples():
        for vs, ref in (("duplicates", arm_name(r.fraction, "duplicates", r.percent)), ("real", arm_name(r.fraction, "real"))):
            ev = paired_contrast(results, r.arm, ref, "auroc", test_set="internal")
            rows.append(dict(fraction=r.fraction, labeled_images=r.n_real, percent=r.percent, vs=vs, estimate=ev.estimate,
                             ci_low=ev.ci_low, ci_high=ev.ci_high, p=ev.p, n_seeds=ev.n))
    out = pd.DataFrame(rows, columns=["fraction", "labeled_images", "percent", "vs", "estimate", "ci_low", "ci_high", "p",
                                      "n_seeds"])
    out["p_holm"] = np.nan
    for vs, idx in out.groupby("vs").groups.items():
        ok = [i for i in idx if np.isfinite(out.at[i, "p"])]
        if ok:
            out.loc[ok, "p_holm"] = adjust_pvalues(out.loc[ok, "p"].to_numpy(), method="holm")
    return out


def plot_heatmap(rmap: pd.DataFrame, vs: str = "duplicates"):
    """The map: labeled fraction (rows) x supplementation ratio (columns), colour = mean gain over
    ``vs``; each cell reads ``estimate [95 % CI]`` and ``*`` where the Holm-adjusted p < 0.05."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = rmap[rmap.vs == vs]
    est = d.pivot_table(index="fraction", columns="percent", values="estimate").sort_index(ascending=False)
    text = d.assign(t=[f"{e:+.3f}{'*' if q < 0.05 else ''}\n[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else f"{e:+.3f}"
                       for e, lo, hi, q in zip(d.estimate, d.ci_low, d.ci_high, d.p_holm.fillna(1.0))])
    annot = text.pivot_table(index="fraction", columns="percent", values="t", aggfunc="first").reindex_like(est)
    finite = est.to_numpy()[np.isfinite(est.to_numpy())]
    lim = float(np.abs(finite).max()) if finite.size else 0.05
    fig, ax = plt.subplots(figsize=(1.9 * est.shape[1] + 2.6, 0.9 * est.shape[0] + 1.6))
    sns.heatmap(est, annot=annot, fmt="", cmap="RdBu", vmin=-lim, vmax=lim, ax=ax, annot_kws={"fontsize": 8},
                cbar_kws={"label": f"macro AUROC: synthetic − {vs}"})
    ax.set_yticklabels([pct(float(t.get_text())) for t in ax.get_yticklabels()], rotation=0)
    ax.set_xticklabels([f"{t.get_text()} %" for t in ax.get_xticklabels()])
    ax.set_ylabel("labeled fraction of the pool (R_f)")
    ax.set_xlabel("synthetic images added, % of |R_f|")
    fig.tight_layout()
    return fig


def plot_lines(rmap: pd.DataFrame, vs: str = "duplicates"):
    """The gain over ``vs`` against the labeled fraction, one line per ratio, with 95 % t-intervals."""
    import matplotlib.pyplot as plt

    d = rmap[rmap.vs == vs]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i, (p, g) in enumerate(d.groupby("percent")):
        g = g.sort_values("fraction")
        yerr = np.nan_to_num(np.array([g.estimate - g.ci_low, g.ci_high - g.estimate]))
        ax.errorbar(g.fraction * (1 + 0.04 * i), g.estimate, yerr=yerr, capsize=3, marker="o", ms=4, label=f"{p} %")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(sorted(d.fraction.unique()), [pct(f) for f in sorted(d.fraction.unique())])
    ax.set_xlabel("labeled fraction of the pool (R_f)")
    ax.set_ylabel(f"macro AUROC: synthetic − {vs}")
    ax.legend(title="synthetic added", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
