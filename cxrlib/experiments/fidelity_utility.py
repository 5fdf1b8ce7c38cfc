"""Experiment 6 — Fidelity vs utility (Huijben et al. 2024; Schaudt et al. 2023).

Huijben et al. "demonstrate that fidelity and classification metrics do not consistently exhibit
the same trends"; Schaudt et al. find "an unexpected negative correlation between image quality and
downstream classification improvement". This chapter measures both on many variants of the study's
DDPM family and rank-correlates them.

**Variants** (each samples the same conditions table with the same per-image seeds: chapter 2's
evaluation conditions, so the sampler and guidance sets chapter 2 made are reused from the cache):

=============== ===================================================================================
family          variants
=============== ===================================================================================
checkpoint      the main generator's EMA snapshots at ``gen_checkpoints`` (study sampler)
default         the final main generator with the study's sampler, steps and guidance
guidance        the final generator at each classifier-free guidance weight of ``guidance_scales``
                (default: chapter 2's ``grid_guidance``)
sampler         the final generator with each ``<sampler>-<steps>`` of ``samplers`` (default:
                chapter 2's ``sampler_grid``)
chapter 4       chapter 4's generators (pretrained + fine-tuned, scratch on other fractions), if
                they are in the cache (``pretraining_variants``)
=============== ===================================================================================

**Fidelity** of each synthetic set against the real test set (:func:`pretraining.fidelity`: FD,
KID, precision, recall, density, coverage in the ``study`` feature space, MS-SSIM diversity as the
gap to the real set's, and label consistency = the oracle's AUROC against the conditioning labels).

**Utility** of each set on the real internal test set: ``gain`` = macro AUROC of a classifier
trained on R + synthetic minus that of one trained on R alone, and ``syn_only`` = macro AUROC of a
classifier trained on the synthetic set alone.

**Rank correlations** (:func:`rank_correlations`) of every fidelity metric with every utility, over
the *independently trained* generators (:data:`INDEPENDENT_FAMILIES`: the primary analysis, which the
verdict reads) and, as a secondary analysis, over every variant:
Spearman's ρ and Kendall's τ_b (scipy; their p-values assume independent variants), with percentile
bootstrap CIs over variants. Caveats that no statistic removes: n is the number of variants (about
ten); the variants are not independent draws of "a generator" (snapshots of one run, one model under
several samplers), so the CIs are optimistic about what generalizes to other generator families; the
utility of each variant is itself noisy (classifier seed, test-set sampling).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError
from . import common
from . import pretraining as P
from . import synthetic
from .common import StudyConfig, merge_profiles

# Fidelity metrics correlated with utility, and which direction means "more faithful / better".
# Diversity enters as ms_ssim_gap = |MS-SSIM(synthetic) - MS-SSIM(real)|: a set is as diverse as the
# real images when its mean pairwise MS-SSIM matches theirs (pure noise has the lowest MS-SSIM of all,
# so "lower MS-SSIM = better" would reward it).
FIDELITY_METRICS = ("fd", "kid", "precision", "recall", "density", "coverage", "ms_ssim_gap", "label_auroc")
BETTER = {"fd": "lower", "kid": "lower", "precision": "higher", "recall": "higher", "density": "higher",
          "coverage": "higher", "ms_ssim_gap": "lower", "label_auroc": "higher"}
def metric_descriptions() -> dict:
    """What each correlated metric means (:data:`cxrlib.fidelity.METRIC_DESCRIPTIONS` plus the gap)."""
    from ..fidelity import METRIC_DESCRIPTIONS

    return {**METRIC_DESCRIPTIONS, "ms_ssim_gap": "|ms_ssim_syn - ms_ssim_real|: how far the synthetic set's diversity is "
            "from the real set's (lower = as diverse as real images)"}


UTILITIES = {"gain": "AUROC gain of R + synthetic over R", "syn_only": "AUROC of synthetic-only training"}
FAMILY_ORDER = ("checkpoint", "default", "guidance", "sampler", "chapter 4")
# Families whose variants are independently trained generators (the primary analysis): the main generator
# and chapter 4's (scratch on other labeled fractions, pretrained + fine-tuned). Snapshots of one run and one
# set of weights under other samplers or guidance weights are the secondary analysis.
INDEPENDENT_FAMILIES = ("default", "chapter 4")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    NAME: ClassVar[str] = "fidelity_utility"
    guidance_scales: tuple[float, ...] | None = None  # guidance weights w on the final generator; None = chapter 2's grid_guidance (its sets are reused)
    samplers: tuple[str, ...] | None = None  # "<sampler>-<steps>" settings on the final generator; None = chapter 2's sampler_grid
    checkpoint_variants: bool = True  # include the EMA snapshots at gen_checkpoints
    pretraining_variants: str = "if_cached"  # chapter 4's generators: if_cached | always (train if missing) | never
    n_syn: int = 600  # synthetic images per variant (same conditions and seeds for all; = chapter 2's n_eval and chapter 4's n_syn to share their sets)
    ms_ssim_pairs: int = 500  # image pairs per set for the mean pairwise MS-SSIM
    fidelity_n_boot: int = 100  # bootstrap resamples for each variant's FD/KID CIs (0 = none; not used by the correlations)
    n_boot_corr: int = 2000  # bootstrap resamples over variants for the rank-correlation CIs

    PROFILES: ClassVar = merge_profiles({
        # n_syn is chapter 2's n_eval at each profile: its sampler and guidance sets come from the cache
        "smoke": dict(n_syn=48, ms_ssim_pairs=50, fidelity_n_boot=20, n_boot_corr=200),
        # cpu (the hour book): one classifier seed per arm (two arms per variant), the variants of the main generator
        # only (its verdict needs independent generators: cpu-full, with three seeds)
        "cpu": dict(ms_ssim_pairs=300, n_seeds=1),
        # cpu-full: chapter 4's full grid trained if missing: 8 independently trained generators
        "cpu-full": dict(pretraining_variants="always", n_seeds=3),
        "paper": dict(pretraining_variants="always", n_syn=5000, ms_ssim_pairs=2000, fidelity_n_boot=1000),
    })

    def validate(self) -> None:
        super().validate()
        parse_samplers(self.samplers or ())
        if any(w < 0 for w in self.guidance_scales or ()):
            raise ConfigError(f"parameter 'guidance_scales': each must be >= 0, got {self.guidance_scales}")
        if self.pretraining_variants not in ("if_cached", "always", "never"):
            raise ConfigError(f"parameter 'pretraining_variants': {self.pretraining_variants!r} is not one of "
                              "if_cached, always, never")
        if self.n_syn < 2:
            raise ConfigError(f"parameter 'n_syn': must be >= 2, got {self.n_syn}")
        if self.fidelity_n_boot < 0:
            raise ConfigError(f"parameter 'fidelity_n_boot': must be >= 0, got {self.fidelity_n_boot}")
        if self.n_boot_corr < 0:
            raise ConfigError(f"parameter 'n_boot_corr': must be >= 0, got {self.n_boot_corr}")


def parse_samplers(specs: Sequence[str]) -> list[tuple[str, int]]:
    """``["ddim-10", "dpm++-5"]`` -> ``[("ddim", 10), ("dpm++", 5)]`` (chapter 2's notation;
    ConfigError naming a bad one)."""
    from ..generators.sampling import SAMPLERS
    out = []
    for spec in specs:
        name, _, steps = str(spec).rpartition("-")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise ConfigError(f"parameter 'samplers': {spec!r} is not '<sampler>-<steps>' with a sampler of {list(SAMPLERS)} "
                              "and steps >= 1 (e.g. 'ddim-10')")
        out.append((name, int(steps)))
    return out


# ------------------------------------------------------------------------------------------------
# Variants and their synthetic sets
# ------------------------------------------------------------------------------------------------
def sampling_grid(cfg: Config) -> tuple[tuple[float, ...], list[tuple[str, int]]]:
    """The guidance weights and ``(sampler, steps)`` settings of the final generator's variants:
    the config's, or chapter 2's grids at this profile where they are None (so that chapter 2's
    synthetic sets, made on the same conditions, are reused from the cache)."""
    from . import generators as G

    ch2 = G.Config.from_params(profile=cfg.profile) if cfg.guidance_scales is None or cfg.samplers is None else None
    guid = cfg.guidance_scales if cfg.guidance_scales is not None else ch2.grid_guidance
    samp = cfg.samplers if cfg.samplers is not None else ch2.sampler_grid
    return tuple(guid), parse_samplers(samp)


def pretraining_config(cfg: Config) -> P.Config:
    """Chapter 4's config at this profile with this chapter's study fields (the generator recipes)."""
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(StudyConfig)}
    base = P.Config.from_params(profile=cfg.profile)  # chapter 4's grid at this profile
    # chapter 4 requires its scratch fractions to hold labeled_fraction (its reference arm)
    return base.replace(**shared, scratch_fractions=tuple(sorted(set(base.scratch_fractions) | {cfg.labeled_fraction})))


def variants(cfg: Config, sets: common.RealSets, progress: bool = True) -> pd.DataFrame:
    """One row per variant (index = its name): ``family, path, gen_step, sampler, steps, guidance,
    independent`` (an independently trained generator: :data:`INDEPENDENT_FAMILIES`).
    Trains the main generator if needed (it is shared with chapters 2-5), and chapter 4's generators
    only if ``pretraining_variants="always"``."""
    snaps = synthetic.main_generator_snapshots(cfg, sets, progress=progress)
    gens = None
    if cfg.pretraining_variants != "never":
        gens = P.generators(pretraining_config(cfg), sets, progress=progress,
                            cached_only=cfg.pretraining_variants == "if_cached")
    return variant_rows(cfg, snaps, gens)


def variant_rows(cfg: Config, snaps: Mapping[int, object], gens: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of :func:`variants` from the main generator's snapshots ``{step: model folder}`` and chapter
    4's generator table (:func:`pretraining.generators`; None: no chapter-4 variant). Trains nothing (the plan
    builds the same rows from placeholder paths)."""
    final = snaps[cfg.gen_steps]
    d = dict(sampler=cfg.sampler, steps=cfg.sampler_steps, guidance=cfg.guidance)
    rows = [dict(variant=f"final ({cfg.sampler}-{cfg.sampler_steps}, w={cfg.guidance:g})", family="default", path=final,
                 gen_step=cfg.gen_steps, **d)]
    if cfg.checkpoint_variants:
        rows += [dict(variant=f"EMA @ step {s}", family="checkpoint", path=p, gen_step=s, **d)
                 for s, p in sorted(snaps.items()) if s != cfg.gen_steps]
    guidances, samplers = sampling_grid(cfg)
    rows += [dict(variant=f"w={w:g}", family="guidance", path=final, gen_step=cfg.gen_steps, **{**d, "guidance": w})
             for w in guidances if w != cfg.guidance]
    rows += [dict(variant=f"{s}-{n}", family="sampler", path=final, gen_step=cfg.gen_steps, **{**d, "sampler": s, "steps": n})
             for s, n in samplers if (s, n) != (cfg.sampler, cfg.sampler_steps)]
    if gens is not None:
        main_name = P.generator_name("scratch", cfg.labeled_fraction)  # = the final main generator, already a variant
        rows += [dict(variant=g, family="chapter 4", path=r.path, gen_step=r.unlabeled_steps + r.labeled_steps, **d)
                 for g, r in gens.iterrows() if g != main_name]
    out = pd.DataFrame(rows).set_index("variant")
    out["path"] = out.path.astype(str)
    out["independent"] = out.family.isin(INDEPENDENT_FAMILIES)
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return out.iloc[np.argsort([order[f] for f in out.family], kind="stable")]


def synthetic_sets(cfg: Config, sets: common.RealSets, var: pd.DataFrame, progress: bool = True) -> dict:
    """``{variant: synthetic set}`` on chapter 4's shared conditions (cached; reused across chapters)."""
    conds = P.conditions(cfg, sets, cfg.n_syn)
    return {v: P.sample(cfg, r.path, conds, sampler=r.sampler, steps=int(r.steps), guidance=float(r.guidance),
                        progress=progress) for v, r in var.iterrows()}


# ------------------------------------------------------------------------------------------------
# Utility and fidelity per variant
# ------------------------------------------------------------------------------------------------
def utility(cfg: Config, sets: common.RealSets, syn: Mapping, progress: bool = True) -> pd.DataFrame:
    """Arms ``real`` (R), ``synthetic only: v`` and ``real + synthetic: v`` for each variant v, all
    seeds, on the internal test set (results table; reference arm ``real``)."""
    return common.evaluate_arms(cfg, utility_arms(sets.train, syn), sets, reference="real", metrics=("auroc",),
                                test_sets={"internal": sets.test}, progress=progress)


def utility_arms(real, syn: Mapping) -> dict:
    """The training sets of :func:`utility`'s arms: ``real`` (R), then per variant v ``synthetic only: v`` and
    ``real + synthetic: v``."""
    arms = {"real": [real]}
    for v, ds in syn.items():
        arms[f"synthetic only: {v}"] = [ds]
        arms[f"real + synthetic: {v}"] = [real, ds]
    return arms


def variant_table(var: pd.DataFrame, results: pd.DataFrame, fid: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: family, sampling settings, the overall fidelity metrics (FD and KID with
    their bootstrap CIs) and the two utilities with their CIs (pooled over seeds if several)."""
    head_auc = common.headline(results).set_index("arm")
    head_gain = common.headline(results, metric="auroc_diff").set_index("arm")
    f = fid[fid.label == "all"]
    val = f.pivot_table(index="generator", columns="metric", values="value", aggfunc="first")
    lo = f.pivot_table(index="generator", columns="metric", values="ci_low", aggfunc="first")
    hi = f.pivot_table(index="generator", columns="metric", values="ci_high", aggfunc="first")
    rows = []
    for v, r in var.iterrows():
        row = {"variant": v, "family": r.family, "independent": bool(r.get("independent", r.family in INDEPENDENT_FAMILIES)),
               "gen_step": r.gen_step, "sampler": r.sampler, "steps": r.steps, "guidance": r.guidance}
        row.update({m: val.loc[v, m] if m in val.columns else np.nan for m in (*FIDELITY_METRICS, "ms_ssim_syn", "ms_ssim_real")})
        row["ms_ssim_gap"] = abs(row["ms_ssim_syn"] - row["ms_ssim_real"])
        for m in ("fd", "kid"):
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = lo.loc[v, m], hi.loc[v, m]
        g, s = head_gain.loc[f"real + synthetic: {v}"], head_auc.loc[f"synthetic only: {v}"]
        row.update(gain=g.estimate, gain_ci_low=g.ci_low, gain_ci_high=g.ci_high, gain_p=g.p_value,
                   syn_only=s.estimate, syn_only_ci_low=s.ci_low, syn_only_ci_high=s.ci_high)
        rows.append(row)
    return pd.DataFrame(rows)


def reference_fidelity(fid: pd.DataFrame) -> dict:
    """The overall fidelity metrics of the held-out real reference set (the dashed lines of the figure)."""
    f = fid[(fid.generator == "real (validation)") & (fid.label == "all")]
    out = dict(zip(f.metric, f.value))
    if "ms_ssim_syn" in out and "ms_ssim_real" in out:
        out["ms_ssim_gap"] = abs(out["ms_ssim_syn"] - out["ms_ssim_real"])
    return out


# ------------------------------------------------------------------------------------------------
# Rank correlations
# ------------------------------------------------------------------------------------------------
def _rank_corrs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return np.nan, np.nan
    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def rank_correlations(table: pd.DataFrame, metrics: Sequence[str] = FIDELITY_METRICS,
                      utilities: Sequence[str] = tuple(UTILITIES), *, n_boot: int = 2000, alpha: float = 0.05,
                      seed: int = 0) -> pd.DataFrame:
    """Spearman's ρ and Kendall's τ_b between each fidelity metric and each utility over the rows
    (variants) of ``table``, with percentile bootstrap CIs over variants and scipy's p-values.

    Bootstrap: variants are resampled with replacement ``n_boot`` times (the same resamples for
    every pair with the same variants, seeded by ``seed``); a resample in which either
    column is constant has no rank correlation and is dropped (``n_boot_valid`` counts the kept ones).
    ``agreement`` is ρ signed so that **positive = the better-fidelity variants have more utility**
    (``BETTER``: FD, KID, MS-SSIM are better when lower). With n variants the smallest attainable
    p-value and the CI resolution are coarse; ``n`` is reported on every row.
    """
    from scipy.stats import kendalltau, spearmanr

    rows = []
    for util in utilities:
        for m in metrics:
            rng = np.random.default_rng(seed)  # the same resamples of variants for every pair (when n is equal)
            d = table[[m, util]].apply(pd.to_numeric, errors="coerce").dropna()
            x, y = d[m].to_numpy(float), d[util].to_numpy(float)
            n = len(d)
            rho = tau = p_rho = p_tau = np.nan
            if n >= 3 and len(np.unique(x)) > 1 and len(np.unique(y)) > 1:
                sr, kt = spearmanr(x, y), kendalltau(x, y)
                rho, p_rho, tau, p_tau = float(sr.statistic), float(sr.pvalue), float(kt.statistic), float(kt.pvalue)
            boots = np.array([_rank_corrs(x[i], y[i]) for i in (rng.integers(0, n, n) for _ in range(n_boot))]) if n >= 3 and n_boot else np.empty((0, 2))
            ok = ~np.isnan(boots).any(axis=1) if len(boots) else np.zeros(0, bool)
            ci = (np.quantile(boots[ok], [alpha / 2, 1 - alpha / 2], axis=0) if ok.sum() >= 2 else np.full((2, 2), np.nan))
            sign = 1.0 if BETTER.get(m, "higher") == "higher" else -1.0
            rows.append({"utility": util, "metric": m, "better": BETTER.get(m, "higher"), "n": n,
                         "spearman": rho, "spearman_ci_low": ci[0, 0], "spearman_ci_high": ci[1, 0], "spearman_p": p_rho,
                         "kendall": tau, "kendall_ci_low": ci[0, 1], "kendall_ci_high": ci[1, 1], "kendall_p": p_tau,
                         "agreement": sign * rho, "n_boot_valid": int(ok.sum())})
    return pd.DataFrame(rows)


def verdict(corr: pd.DataFrame) -> dict:
    """Numbers for the "Does it reproduce?" text, per utility: how many metrics agree (ρ signed so
    that positive = better fidelity goes with more utility) and how many CIs exclude 0; the metric
    that predicts utility best; and Schaudt's image-quality metric (FD) specifically."""
    out = {}
    for util, d in corr.groupby("utility", sort=False):
        d = d.dropna(subset=["spearman"])
        excl = (d.spearman_ci_low > 0) | (d.spearman_ci_high < 0)
        best = d.loc[d.agreement.idxmax()] if len(d) else None
        fd = d[d.metric == "fd"]
        out[util] = {
            "n_metrics": len(d), "n_agree": int((d.agreement > 0).sum()), "n_disagree": int((d.agreement < 0).sum()),
            "metrics_disagree": list(d.metric[d.agreement < 0]),
            "metrics_disagree_ci_excludes_0": list(d.metric[(d.agreement < 0) & excl]),
            "n_ci_excludes_0": int(excl.sum()), "metrics_ci_excludes_0": list(d.metric[excl]),
            "best_metric": None if best is None else best.metric, "best_agreement": np.nan if best is None else best.agreement,
            "fd_agreement": float(fd.agreement.iloc[0]) if len(fd) else np.nan,
            "fd_ci": (float(-fd.spearman_ci_high.iloc[0]), float(-fd.spearman_ci_low.iloc[0])) if len(fd) else (np.nan, np.nan),
            "n_variants": int(d.n.max()) if len(d) else 0,
        }
    return out


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
FAMILY_STYLE = {"checkpoint": ("tab:purple", "v"), "default": ("black", "*"), "guidance": ("tab:red", "o"),
                "sampler": ("tab:green", "s"), "chapter 4": ("tab:blue", "D")}


def plot_scatter(table: pd.DataFrame, corr: pd.DataFrame, ref: Mapping[str, float] | None = None,
                 metrics: Sequence[str] = FIDELITY_METRICS, utilities: Sequence[str] = tuple(UTILITIES)):
    """A grid of scatter plots: one row per utility, one column per fidelity metric, one point per
    variant (colour = family, vertical bars = the utility's 95 % CI), ρ and τ in each title, the held-out
    real reference set's value as a dashed line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(utilities), len(metrics), figsize=(2.25 * len(metrics), 2.3 * len(utilities) + 0.6),
                             squeeze=False, sharey="row")
    c = corr.set_index(["utility", "metric"])
    for i, util in enumerate(utilities):
        for j, m in enumerate(metrics):
            ax = axes[i, j]
            for fam, d in table.groupby("family", sort=False):
                color, marker = FAMILY_STYLE.get(fam, ("0.5", "o"))
                yerr = np.nan_to_num(np.clip([d[util] - d[f"{util}_ci_low"], d[f"{util}_ci_high"] - d[util]], 0, None))
                ax.errorbar(d[m], d[util], yerr=yerr,
                            fmt=marker, color=color, ms=6 if marker == "*" else 4, elinewidth=0.6, capsize=0, alpha=0.85,
                            label=fam)
            if ref and m in ref and np.isfinite(ref[m]):
                ax.axvline(ref[m], color="0.5", ls="--", lw=0.8)
            if util == "gain":
                ax.axhline(0, color="0.7", lw=0.6)
            r = c.loc[(util, m)] if (util, m) in c.index else None
            if r is not None and np.isfinite(r.spearman):
                ax.set_title(f"ρ={r.spearman:+.2f}  τ={r.kendall:+.2f}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(utilities) - 1:
                ax.set_xlabel(f"{m} ({BETTER.get(m, 'higher')} = better)", fontsize=8)
            if j == 0:
                ax.set_ylabel(UTILITIES.get(util, util), fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_correlations(corr: pd.DataFrame):
    """Spearman's ρ, signed as agreement (positive = better fidelity with more utility), with its
    bootstrap 95 % CI, per fidelity metric and utility."""
    import matplotlib.pyplot as plt

    utils = list(dict.fromkeys(corr.utility))
    fig, axes = plt.subplots(1, len(utils), figsize=(4.2 * len(utils), 0.38 * corr.metric.nunique() + 1.4), sharey=True,
                             squeeze=False)
    for ax, util in zip(axes[0], utils):
        d = corr[corr.utility == util].reset_index(drop=True)
        sign = np.where(d.better == "higher", 1.0, -1.0)
        lo = np.where(sign > 0, d.spearman_ci_low, -d.spearman_ci_high)
        hi = np.where(sign > 0, d.spearman_ci_high, -d.spearman_ci_low)
        y = np.arange(len(d))
        # a percentile interval over few variants can miss its own point estimate: clip, don't crash
        err = np.clip([d.agreement - lo, hi - d.agreement], 0, None)
        ax.errorbar(d.agreement, y, xerr=np.nan_to_num(err), fmt="o", color="tab:blue", capsize=3)
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(d.metric, fontsize=8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("Spearman ρ, signed: + = better fidelity, more utility", fontsize=8)
        ax.set_title(UTILITIES.get(util, util), fontsize=9)
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# The cost plan (cxr run --plan)
# ------------------------------------------------------------------------------------------------
def plan_jobs(cfg: Config, data) -> list:
    """The jobs of a run of this chapter (``cxr run --plan``, :mod:`cxrlib.plan`): the main generator (one run,
    its EMA snapshots on the way), chapter 4's generators when ``pretraining_variants="always"``, one synthetic
    set per variant of :func:`variant_rows` (``n_syn`` images at its sampler, steps and guidance), the oracle of
    the fidelity metrics and every arm x seed of :func:`utility_arms`.

    With ``"if_cached"`` chapter 4's generators are not trained here, but their sets and classifiers are
    counted as if chapter 4 had cached them (a book run does: without them the run is shorter, never longer).
    Chapter 4's generators and the sets of the final generator and of chapter 4's carry chapter 4's marks
    (:func:`pretraining_plan.shared_name`): the same cache entries, counted once in a book plan."""
    from ..plan import Job, classifier_jobs, evaluations, oracle_job, set_mark, stand_in
    from .pretraining_plan import shared_name

    sizes, n, size = data.sizes, data.sizes["train"], cfg.image_size
    snaps = sorted({s for s in cfg.gen_checkpoints if 0 < s < cfg.gen_steps} | {cfg.gen_steps})
    jobs = [Job("generator", f"conditional DDPM on R (the main generator; EMA snapshots at {snaps})", cfg.gen_steps,
                cfg.gen_batch_size, size, "generator", n, shared="main generator")]
    gens, pcfg = None, pretraining_config(cfg)
    if cfg.pretraining_variants != "never":
        gen_jobs, gens = _chapter4_plan(cfg, data)
        jobs += gen_jobs if cfg.pretraining_variants == "always" else []
    var = variant_rows(cfg, dict.fromkeys(snaps), gens)
    maybe = " (if chapter 4 cached its generator)" if cfg.pretraining_variants == "if_cached" else ""
    for v, r in var.iterrows():
        if r.family == "chapter 4":  # chapter 4's set of that generator
            model = shared_name(pcfg, gens.loc[v, "kind"], gens.loc[v, "fraction"])
        else:  # the final main generator's sets are chapter 2's and 4's; nobody else samples a snapshot
            model = "" if r.family == "checkpoint" else "main generator"
        mark = set_mark(model, r.sampler, r.steps, r.guidance)
        jobs.append(Job("sampling", f"synthetic set of {v}{maybe if r.family == 'chapter 4' else ''}",
                        evaluations(r.steps, r.guidance), cfg.n_syn, size, "generator", cfg.n_syn, shared=mark))
    jobs.append(oracle_job(cfg, sizes))
    arms = utility_arms(stand_in(n), {v: stand_in(cfg.n_syn) for v in var.index})
    return jobs + classifier_jobs(cfg, {a: sum(len(d) for d in ds) for a, ds in arms.items()}, sizes, sizes["test"],
                                  real="real")


def _chapter4_plan(cfg: Config, data) -> tuple[list, pd.DataFrame]:
    """The generator jobs of :func:`pretraining.generators` on :func:`pretraining_config` (the pool pretraining, a
    fine-tuning per ``ft_fractions``, a from-scratch run per ``scratch_fractions`` other than R's, which is the
    main generator), marked as chapter 4's plan marks them, and the generator table for :func:`variant_rows`."""
    from .pretraining_plan import generator_jobs, plan_sets, planned_generators

    pcfg = pretraining_config(cfg)
    gens = planned_generators(pcfg, plan_sets(data))  # R_f drawn by pretraining.labeled_subset from the pool's metadata
    jobs = [dataclasses.replace(j, name=f"chapter 4: {j.name}") for j in generator_jobs(pcfg, data, gens)
            if j.shared != "main generator"]  # scratch at R's fraction is the main generator, counted once
    pre_steps = pcfg.pretrain_steps or pcfg.gen_steps
    steps = {"pretrained+FT": pcfg.ft_steps, "scratch": pcfg.gen_steps}
    table = gens.assign(unlabeled_steps=[pre_steps if k == "pretrained+FT" else 0 for k in gens.kind],
                        labeled_steps=[steps[k] for k in gens.kind], path=None)
    return jobs, table
