"""Experiment 5 — Supplementation (Khosravi et al. 2024): does adding synthetic images to the real
training set R raise AUROC, internally and on external sites, and how does it compare with training
on synthetic images only and with simply showing the real images more often?

Khosravi et al. add DDPM images sampled at the training distribution (labels *and* demographics) to
the real set at 100 % ... 1000 % of its size, and report AUROC gains of up to +0.02 (p < 0.01) on
internal and external test sets; classifiers trained on synthetic images only match the real one
when the synthetic set is 200-300 % of the real one. Arms (``n`` = ``|R|``):

================================ ==================================================================
``real``                         R alone (the reference of every p-value; "0 %")
``real+synthetic p%``            R + the first ``p·n/100`` natural-prevalence synthetic images
``synthetic p%``                 those synthetic images alone (sizes matched to the arms above)
``real+duplicates p%``           R + ``p·n/100`` copies of R's images (R repeated, then a prefix):
                                 the same number of training images as ``real+synthetic p%``, with no
                                 new content (augmentation still applies): ``real+synthetic p%`` −
                                 ``real+duplicates p%`` is the test of what the generator adds
================================ ==================================================================

Every classifier trains for the same optimizer-step budget ``clf_steps`` whatever its set size, and
keeps the weights of its best validation macro-AUROC (the fair protocol of
:func:`cxrlib.experiments.common.evaluate_arms`; results carry ``optimizer_steps`` and
``selected_step``), for ``n_seeds`` seeds. With ``clf_steps = None`` it trains ``clf_epochs`` passes
over its own set instead (Khosravi's setting: a larger set is also a longer run).

**The synthetic stream.** Synthetic images come in chunks of ``ceil(|R| / 4)`` images
(:data:`CHUNKS_PER_R`: 25 % of R); chunk ``k`` draws its conditions from R (:func:`cxrlib.generators.conditions.prevalence_conditions`, rows of R with replacement, so
label prevalence, co-occurrence and demographics are R's) with the seed
``derive_seed(seed, "natural", k)`` and is one cached synthetic set (:func:`cxrlib.experiments.synthetic.natural_synthetic`).
The first ``m`` images of the stream are therefore the same whatever the largest percentage asked
for: a 200 % arm uses a prefix of the 1000 % images, a larger grid only samples the new chunks, and
chapter 3's natural-prevalence synthetic set is the start of the same stream (same cache entries).

**Statistics** (:mod:`cxrlib.stats`): per seed and test set, AUROC per label with a paired DeLong test
against ``real``, macro AUROC with a patient-level paired bootstrap, Holm-adjusted across arms and
labels; over seeds, the mean with its t-interval and a paired t-test (``seed = "pooled"`` rows).
AUROC needs no threshold: the study field ``threshold_policy`` is not used here.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..data.base import CXRDataset
from .common import RealSets, StudyConfig, all_test_sets, evaluate_arms, merge_profiles, seed_average
from .synthetic import duplicates, n_images

FULL_GRID = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    NAME: ClassVar[str] = "supplementation"
    supplement_percents: tuple[int, ...] = FULL_GRID  # synthetic images added to R, in % of |R| (0 = the real arm)
    synthetic_only_percents: tuple[int, ...] = FULL_GRID[1:]  # synthetic-only arms, sizes in % of |R|
    duplicate_percents: tuple[int, ...] = FULL_GRID[1:]  # count-matched control: copies of R added, in % of |R|
    evaluate_external: bool = True  # also test on the external sites (external_sites)

    PROFILES: ClassVar = merge_profiles({
        "smoke": dict(supplement_percents=(0, 100, 200), synthetic_only_percents=(200,), duplicate_percents=(200,)),
        # cpu: the budget allows 0-200 % (the paper profile has the full grid); n_seeds and clf_epochs as
        # chapter 3's cpu profile, so the real classifiers are shared
        "cpu": dict(supplement_percents=(0, 100, 200), synthetic_only_percents=(100, 200),
                    duplicate_percents=(200,), n_seeds=2, clf_epochs=6),
        "paper": dict(),
    })

    def validate(self) -> None:
        super().validate()
        for name in ("supplement_percents", "synthetic_only_percents", "duplicate_percents"):
            v = getattr(self, name)
            if any(p < 0 for p in v) or len(set(v)) != len(v):
                raise ConfigError(f"parameter {name!r}: percentages must be distinct and >= 0, got {v}")
        if any(p == 0 for p in (*self.synthetic_only_percents, *self.duplicate_percents)):
            raise ConfigError("parameters 'synthetic_only_percents' and 'duplicate_percents': 0 % is not an arm "
                              "(an empty training set / the real arm itself); remove it")












# ------------------------------------------------------------------------------------------------
# Arms
# ------------------------------------------------------------------------------------------------
def arm_name(kind: str, percent: int) -> str:
    return {"real": "real", "real+synthetic": f"real+synthetic {percent}%", "synthetic": f"synthetic {percent}%",
            "real+duplicates": f"real+duplicates {percent}%"}[kind]


def build_arms(cfg: Config, real: CXRDataset, synthetic: CXRDataset) -> tuple[dict[str, list[CXRDataset]], pd.DataFrame]:
    """The training sets of every arm (module docstring) and a table ``arm, kind, percent, n_real,
    n_synthetic, n_duplicates, n_train``. ``synthetic`` must hold at least the largest percentage's
    images (:func:`synthetic_needed`)."""
    n = len(real)
    need = synthetic_needed(cfg, n)
    if len(synthetic) < need:
        raise ValueError(f"build_arms: {len(synthetic)} synthetic images, but the grid needs {need}")
    arms: dict[str, list[CXRDataset]] = {"real": [real]}
    rows = [dict(arm="real", kind="real", percent=0, n_real=n, n_synthetic=0, n_duplicates=0)]

    def syn(p):
        return synthetic.subset(np.arange(n_images(p, n))) if n_images(p, n) < len(synthetic) else synthetic

    for p in sorted(set(cfg.supplement_percents) - {0}):
        arms[arm_name("real+synthetic", p)] = [real, syn(p)]
        rows.append(dict(arm=arm_name("real+synthetic", p), kind="real+synthetic", percent=p, n_real=n,
                         n_synthetic=n_images(p, n), n_duplicates=0))
    for p in sorted(cfg.synthetic_only_percents):
        arms[arm_name("synthetic", p)] = [syn(p)]
        rows.append(dict(arm=arm_name("synthetic", p), kind="synthetic", percent=p, n_real=0,
                         n_synthetic=n_images(p, n), n_duplicates=0))
    for p in sorted(cfg.duplicate_percents):
        arms[arm_name("real+duplicates", p)] = [real, duplicates(real, n_images(p, n))]
        rows.append(dict(arm=arm_name("real+duplicates", p), kind="real+duplicates", percent=p, n_real=n,
                         n_synthetic=0, n_duplicates=n_images(p, n)))
    table = pd.DataFrame(rows)
    table["n_train"] = table[["n_real", "n_synthetic", "n_duplicates"]].sum(axis=1)
    return arms, table


def synthetic_needed(cfg: Config, n_real: int) -> int:
    """Synthetic images the largest supplemented or synthetic-only arm uses."""
    return max([n_images(p, n_real) for p in (*cfg.supplement_percents, *cfg.synthetic_only_percents)] + [0])


def test_sets(cfg: Config, sets: RealSets) -> dict[str, CXRDataset]:
    """The internal test set and (``evaluate_external``) each external site."""
    return all_test_sets(sets, external=cfg.evaluate_external)


def run(cfg: Config, arms: dict[str, Sequence[CXRDataset]], sets: RealSets, progress: bool = True) -> pd.DataFrame:
    """Train every arm for every seed and evaluate on every test set: AUROC per label and macro and
    the AUROC difference to ``real`` (:func:`cxrlib.experiments.common.evaluate_arms`; the bootstrap of
    the threshold metrics is not needed here)."""
    return evaluate_arms(cfg, arms, sets, reference="real", policies=(), metrics=("auroc",),
                         test_sets=test_sets(cfg, sets), progress=progress)


# ------------------------------------------------------------------------------------------------
# Summaries and figures
# ------------------------------------------------------------------------------------------------
def auroc_curve(results: pd.DataFrame, arm_table: pd.DataFrame, label: str = "macro") -> pd.DataFrame:
    """AUROC of ``label`` per arm and test set, joined with the arm table: ``test_set, arm, kind,
    percent, n_train, estimate, ci_low, ci_high, seed_sd, n_seeds, p_adj_seeds, test``, summarized over
    seeds by :func:`cxrlib.experiments.common.seed_average` (mean over seeds; the envelope of the
    per-seed patient-level bootstrap CIs; the largest per-seed Holm-adjusted p-value: DeLong per
    label, paired bootstrap for macro). The ``real`` arm is repeated with ``kind`` real+synthetic, synthetic
    and real+duplicates at 0 % so every curve starts from it."""
    r = results[(results.metric == "auroc") & (results.label == label)]
    out = seed_average(r, by=("test_set", "arm")).merge(arm_table[["arm", "kind", "percent", "n_train"]], on="arm", how="left")
    real = out[out.kind == "real"]
    anchors = [real.assign(kind=k) for k in ("real+synthetic", "synthetic", "real+duplicates")
               if (out.kind == k).any()]
    out = pd.concat([out, *anchors], ignore_index=True)
    return out.sort_values(["test_set", "kind", "percent"], key=_kind_key).reset_index(drop=True)


def _kind_key(col: pd.Series) -> pd.Series:
    return col.map(KIND_ORDER) if col.name == "kind" else col


KIND_ORDER = {"real": 0, "real+synthetic": 1, "synthetic": 2, "real+duplicates": 3}
KIND_STYLE = {"real+synthetic": dict(color="tab:blue", marker="o"), "synthetic": dict(color="tab:orange", marker="s"),
              "real+duplicates": dict(color="tab:gray", marker="^"), "real": dict(color="black", marker="D")}


def plot_auroc_vs_percent(curve: pd.DataFrame, title: str | None = None):
    """Macro AUROC against the synthetic (or duplicated) percentage, one panel per test set, one line
    per arm kind, with the CIs of :func:`auroc_curve` (the envelope of the per-seed patient-level
    bootstrap 95 % CIs); the real-only arm's CI is the shaded band."""
    import matplotlib.pyplot as plt

    tests = list(dict.fromkeys(curve.test_set))
    fig, axes = plt.subplots(1, len(tests), figsize=(4.6 * len(tests), 4.0), squeeze=False, sharex=True)
    for ax, t in zip(axes[0], tests):
        c = curve[curve.test_set == t]
        real = c[c.kind == "real"].iloc[0]
        if np.isfinite(real.ci_low):
            ax.axhspan(real.ci_low, real.ci_high, color="black", alpha=0.08, lw=0)
        ax.axhline(real.estimate, color="black", lw=1, ls=":", label="real only")
        kinds = [k for k in ("real+synthetic", "synthetic", "real+duplicates") if (c.kind == k).any()]
        for i, k in enumerate(kinds):
            d = c[c.kind == k].sort_values("percent")
            d = d[(d.percent > 0) | (k != "synthetic")]  # synthetic-only has no 0 % point
            x = d.percent + (i - 1) * 8  # a small dodge so the error bars do not overlap
            yerr = np.array([d.estimate - d.ci_low, d.ci_high - d.estimate])
            ax.errorbar(x, d.estimate, yerr=np.nan_to_num(yerr), capsize=3, lw=1.5, ms=5, label=k, **KIND_STYLE[k])
        ax.set_title(t)
        ax.set_xlabel("synthetic (or duplicated) images, % of |R|")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro AUROC")
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def delta_table(results: pd.DataFrame, arm_table: pd.DataFrame) -> pd.DataFrame:
    """AUROC difference to ``real`` per arm, label (and macro) and test set, summarized over seeds
    (:func:`cxrlib.experiments.common.seed_average`): the mean difference, the envelope of the
    per-seed bootstrap CIs, and ``p_adj_seeds``, the largest per-seed Holm-adjusted p-value (DeLong per label,
    paired bootstrap for macro)."""
    r = results[results.metric == "auroc_diff"]
    out = seed_average(r, by=("test_set", "arm", "label")).merge(arm_table[["arm", "kind", "percent"]], on="arm")
    return out.sort_values(["test_set", "kind", "percent", "label"], key=_kind_key).reset_index(drop=True)


def format_delta(delta: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``arm x (test_set, label)`` strings ``+0.012*`` (``*``: ``p_adj_seeds < alpha``)."""
    d = delta.assign(text=[f"{e:+.3f}{'*' if p < alpha else ''}" for e, p in zip(delta.estimate, delta.p_adj_seeds)])
    wide = d.pivot_table(index=["kind", "percent", "arm"], columns=["test_set", "label"], values="text", aggfunc="first")
    return wide.droplevel(["kind", "percent"])


def plot_delta_heatmap(delta: pd.DataFrame, test_set: str = "internal"):
    """Per-label AUROC difference to ``real`` (rows: arms, columns: labels and macro; mean over seeds)
    on one test set; ``*`` marks a Holm-adjusted p < 0.05 in every seed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = delta[delta.test_set == test_set]
    order = list(dict.fromkeys(d.sort_values(["kind", "percent"], key=_kind_key).arm))
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


def verdict(curve: pd.DataFrame, test_set: str = "internal") -> dict:
    """The numbers the "Does it reproduce?" section states, for one test set: the real arm's macro
    AUROC, the best and the largest supplemented arm (gain, CI, adjusted p), the smallest synthetic-
    only size whose CI reaches the real arm's estimate, and the duplicate control at its largest size."""
    c = curve[curve.test_set == test_set]
    real = c[c.kind == "real"].iloc[0]
    sup = c[(c.kind == "real+synthetic") & (c.percent > 0)].sort_values("percent")
    syn = c[(c.kind == "synthetic") & (c.percent > 0)].sort_values("percent")
    dup = c[(c.kind == "real+duplicates") & (c.percent > 0)].sort_values("percent")
    out = {"test_set": test_set, "real": float(real.estimate), "real_ci": (float(real.ci_low), float(real.ci_high))}

    def row(r):
        return {"arm": r.arm, "percent": int(r.percent), "auroc": float(r.estimate), "gain": float(r.estimate - real.estimate),
                "ci": (float(r.ci_low), float(r.ci_high)), "p_adj_seeds": float(r.p_adj_seeds)}

    if len(sup):
        out["largest"] = row(sup.iloc[-1])
        out["best"] = row(sup.loc[sup.estimate.idxmax()])
        out["n_better"] = int((sup.estimate > real.estimate).sum())
        out["n_supplemented"] = len(sup)
    if len(syn):
        reach = syn[syn.ci_high >= real.estimate] if syn.ci_high.notna().all() else syn[syn.estimate >= real.estimate]
        out["synthetic_matches_real_at"] = int(reach.percent.iloc[0]) if len(reach) else None
        out["synthetic_largest"] = row(syn.iloc[-1])
    if len(dup):
        out["duplicates_largest"] = row(dup.iloc[-1])
    return out


def _fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def reproduction_text(verdicts: Sequence[dict], alpha: float = 0.05) -> str:
    """Markdown for the "Does it reproduce?" section from :func:`verdict` of each test set: every
    number comes from the run; the judgement rules are stated in the text."""
    lines = []
    for v in verdicts:
        t = v["test_set"]
        head = f"**{t}** (real only: macro AUROC {v['real']:.3f}, CI {v['real_ci'][0]:.3f}-{v['real_ci'][1]:.3f})"
        parts = []
        if "largest" in v:
            lg, best = v["largest"], v["best"]
            sig = lg["p_adj_seeds"] < alpha
            holds = lg["gain"] > 0 and sig
            parts.append(
                f"supplementing with {lg['percent']} % synthetic images changes macro AUROC by **{lg['gain']:+.3f}** "
                f"(largest per-seed Holm-adjusted p {_fmt_p(lg['p_adj_seeds'])}); {v['n_better']} of "
                f"{v['n_supplemented']} supplemented arms are above the real arm, the best {best['arm']} "
                f"({best['gain']:+.3f}). Khosravi's gain (positive and significant) "
                + ("**reproduces**" if holds else "does **not** reproduce") + " here")
        if "synthetic_largest" in v:
            at = v["synthetic_matches_real_at"]
            parts.append("synthetic-only training " + (f"reaches the real arm (its CI covers the real estimate) from {at} % of |R|"
                                                       if at is not None else
                                                       f"stays below the real arm at every size (at {v['synthetic_largest']['percent']} %: "
                                                       f"{v['synthetic_largest']['gain']:+.3f})")
                         + " (Khosravi: comparable at 200-300 %)")
        if "duplicates_largest" in v:
            d = v["duplicates_largest"]
            parts.append(f"the count-matched control that adds {d['percent']} % *duplicated real* images changes macro AUROC by "
                         f"{d['gain']:+.3f} (p {_fmt_p(d['p_adj_seeds'])})")
        lines.append(f"* {head}: " + "; ".join(parts) + ".")
    return "\n".join(lines)
