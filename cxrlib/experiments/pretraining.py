"""Experiment 4 — Labeled-fraction pretraining (Huijben et al. 2024).

Huijben et al. pretrain a DDPM *unconditionally* on every image (labels hidden), fine-tune it
*conditionally* on a labeled subset, and find that "this approach allows the amount of labeled
training data to be reduced to 25 % of the original set". This chapter reproduces the comparison:

=================== =============================================================================
generator           recipe
=================== =============================================================================
pretrained+FT f     the unconditional DDPM of :func:`synthetic.pretrained_generator` (the whole pool,
                    labels hidden, ``gen_steps`` steps; shared with chapter 7), then ``ft_steps``
                    conditional steps on the labeled subset R_f
scratch f           the study's conditional DDPM recipe trained from scratch on R_f (``gen_steps``
                    steps). At ``f = labeled_fraction`` it *is* :func:`synthetic.main_generator`.
=================== =============================================================================

R_f is the set of pool images in the manifest's nested labeled subset of fraction f
(10 % ⊂ 25 % ⊂ 50 % ⊂ 100 %), drawn by the rule of :func:`common.real_sets`.

Every generator samples the **same** conditions table (``n_syn`` label vectors and demographics
drawn from R at its prevalence; chapter 2's evaluation conditions) with the **same** per-image
seeds, so the synthetic sets differ only by the generator (common random numbers: a paired
comparison), and chapters 2, 4 and 6 share the sets through the cache.

For each generator:

* **utility** — a classifier trained on its synthetic images only (optionally R_f + synthetic),
  tested on the real internal test set: macro and per-label AUROC with patient-level bootstrap CIs,
  DeLong p-values per label against the reference arm (the synthetic-only classifier of the
  study's main generator, scratch at ``labeled_fraction``), pooled over ``n_seeds`` seeds;
* **fidelity** — :func:`cxrlib.fidelity.fidelity_report` against the real test set in the
  ``study`` feature space (the penultimate layer of :func:`common.oracle`, a classifier trained on
  the labeled pool), and **label consistency** (the oracle's AUROC on the synthetic images against
  their conditioning labels).

Compute is *not* matched: pretrained+FT has seen ``gen_steps`` unlabeled + ``ft_steps`` labeled
batches, scratch ``gen_steps`` labeled batches; the generator table states both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..data.base import CXRDataset
from . import common
from . import synthetic
from .common import StudyConfig, merge_profiles

# The fidelity metrics shown in the summary (rows of fidelity_report with label "all").
SUMMARY_FIDELITY = ("fd", "kid", "precision", "recall", "density", "coverage", "ms_ssim_syn", "label_auroc")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    NAME: ClassVar[str] = "pretraining"
    ft_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)  # labeled fractions of the pool the pretrained DDPM is fine-tuned on
    scratch_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)  # labeled fractions a DDPM is trained on from scratch (must hold labeled_fraction)
    pretrain_steps: int | None = None  # unconditional pretraining steps; None = gen_steps (the generator shared with chapter 7)
    ft_steps: int = 600  # conditional fine-tuning steps from the pretrained EMA weights (far fewer than gen_steps)
    ft_lr: float | None = None  # fine-tuning learning rate (after a warm-up of ft_steps // 10, at most 100); None = gen_lr
    n_syn: int = 600  # synthetic images per generator (= chapter 2's n_eval: its set of the main generator is reused)
    real_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)  # also train a classifier on real R_f only, for these f (the yardstick)
    real_plus_syn: bool = False  # also train R_f + synthetic classifiers for each generator
    margin: float = 0.02  # non-inferiority margin on macro AUROC for "f labels suffice" (pretrained+FT f vs all labels)
    ms_ssim_pairs: int = 500  # image pairs per set for the mean pairwise MS-SSIM (diversity)

    PROFILES: ClassVar = merge_profiles({
        # smoke: the smoke study generator (R = 50 % of the pool) against a 10-step fine-tune on the same R
        "smoke": dict(ft_fractions=(0.5,), scratch_fractions=(0.5,), real_fractions=(0.5,), ft_steps=10, n_syn=48,
                      ms_ssim_pairs=50),
        # cpu (the hour book): no pretraining chain (pool DDPM + fine-tunings, ~18 min on 2 cores), only the main
        # generator; cpu-full: Huijben's grid (10/25/50/100 %, both recipes; 600 fine-tuning steps: labels carried from
        # ~600 steps in the chapter-2 A/B, 300 did not), synthetic-only and real+synthetic (chapter 5's regime-map generators)
        "cpu": dict(ft_fractions=(), scratch_fractions=(0.25,), real_fractions=(0.25,), ft_steps=600, n_seeds=1),
        "cpu-full": dict(n_seeds=5, ft_fractions=(0.1, 0.25, 0.5, 1.0), scratch_fractions=(0.1, 0.25, 0.5, 1.0),
                         real_fractions=(0.1, 0.25, 0.5, 1.0), real_plus_syn=True),
        # paper: Huijben's grid, fine-tuning a quarter of the from-scratch steps
        "paper": dict(ft_steps=50_000, n_syn=5000, real_plus_syn=True, ms_ssim_pairs=2000),
    })

    def validate(self) -> None:
        super().validate()
        for name in ("ft_fractions", "scratch_fractions", "real_fractions"):
            fr = getattr(self, name)
            if (not fr and name == "scratch_fractions") or not all(0 < f <= 1 for f in fr):
                raise ConfigError(f"parameter {name!r}: expected fractions in (0, 1], got {fr}")
            if len(set(fr)) != len(fr):
                raise ConfigError(f"parameter {name!r}: duplicate fractions in {fr}")
        if not any(abs(f - self.labeled_fraction) < 1e-9 for f in self.scratch_fractions):
            raise ConfigError(f"parameter 'scratch_fractions': must hold labeled_fraction={self.labeled_fraction} "
                              f"(the study's main generator, the reference arm); got {self.scratch_fractions}")
        if self.ft_steps < 1:
            raise ConfigError(f"parameter 'ft_steps': must be >= 1, got {self.ft_steps}")
        if self.pretrain_steps is not None and self.pretrain_steps < 1:
            raise ConfigError(f"parameter 'pretrain_steps': must be >= 1 or None, got {self.pretrain_steps}")
        if self.n_syn < 2:
            raise ConfigError(f"parameter 'n_syn': must be >= 2, got {self.n_syn}")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"parameter 'margin': must be in [0, 1), got {self.margin}")


def pct(fraction: float) -> str:
    """0.25 -> '25%' (names of generators and arms)."""
    return f"{100 * fraction:g}%"


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def labeled_subset(cfg: StudyConfig, sets: common.RealSets, fraction: float) -> CXRDataset:
    """R_f: the pool images in the manifest's nested labeled subset of ``fraction`` (the rule of
    :func:`common.real_sets`; at ``fraction == labeled_fraction`` it returns ``sets.train`` itself,
    so the scratch generator there is the study's main generator)."""
    if abs(fraction - cfg.labeled_fraction) < 1e-9:
        return sets.train
    if fraction >= 1:
        return sets.pool
    if "labeled_frac" not in sets.pool.meta:
        raise ValueError(f"dataset {cfg.dataset!r} has no labeled subsets in its manifest; use fractions of 1.0 only")
    lab = pd.to_numeric(sets.pool.meta["labeled_frac"], errors="coerce").to_numpy()
    out = sets.pool.subset(np.flatnonzero(lab <= fraction + 1e-9))
    out.name = f"{sets.pool.name} labeled {pct(fraction)}"
    if len(out) == 0:
        raise ValueError(f"the labeled subset {pct(fraction)} of the pool ({len(sets.pool)} images) is empty")
    return out


def conditions(cfg: StudyConfig, sets: common.RealSets, n: int) -> pd.DataFrame:
    """The conditions every generator of chapters 4 and 6 samples: ``n`` rows of R (labels and
    demographics jointly, at R's prevalence). They are chapter 2's evaluation conditions
    (:func:`generators.eval_conditions`), so with ``n`` equal to its ``n_eval`` the main generator's
    synthetic sets of chapter 2 (sampler and guidance variants) come from the cache."""
    from ..generators.conditions import prevalence_conditions
    return prevalence_conditions(sets.train, n, label_names=cfg.labels, seed=cfg.seed)


# The synthetic-set name chapter 2 uses for those conditions (it sets the sets' seed).
SET_NAME = "eval-prevalence"


def sample(cfg: StudyConfig, generator_dir: str | Path, conds: pd.DataFrame, *, sampler: str | None = None,
           steps: int | None = None, guidance: float | None = None, progress: bool = True):
    """One synthetic set of ``generator_dir`` on ``conds`` (cached). Every generator and sampler
    setting uses the same per-image seeds (the set's name, hence its seed, does not depend on them)."""
    return synthetic.synthetic_set(cfg, generator_dir, conds, name=SET_NAME, sampler=sampler, steps=steps,
                                guidance=guidance, progress=progress)


# ------------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------------
def cached_generator(cfg: StudyConfig, train: CXRDataset, *, name: str, steps: int, unconditional: bool = False,
                     init_from: str | Path | None = None, **overrides) -> Path | None:
    """The model folder of a generator :func:`synthetic.train_cached_generator` would return for these
    arguments if it is in the cache, else None (nothing is trained). The key is built as there
    (``tests/test_exp_pretraining.py`` checks that the two agree)."""
    from .. import cache as C
    from ..generators.ddpm import load_generator
    opts = synthetic.generator_options(cfg)
    opts.update(overrides)
    opts.update(unconditional=unconditional)
    recipe = {"name": name, "options": {k: v for k, v in opts.items() if k not in ("device", "progress")},
              "init": load_generator(init_from).generator_id if init_from is not None else None}
    k = C.key("generator", {**recipe, "steps": int(steps)}, inputs=[common.fingerprint(train)])
    return C.get(k) / "model" if C.default_cache().exists(k) else None


def _generator(cfg: StudyConfig, train: CXRDataset, *, cached_only: bool, progress: bool, name: str, steps: int,
               **kw) -> Path | None:
    """Train (or fetch) one generator snapshot; with ``cached_only``, only fetch (None if absent)."""
    if cached_only:
        return cached_generator(cfg, train, name=name, steps=steps, **kw)
    return synthetic.train_cached_generator(cfg, train, name=name, steps=steps, progress=progress, **kw)[steps] / "model"


def pretrained(cfg: Config, sets: common.RealSets, progress: bool = True, cached_only: bool = False) -> Path | None:
    """The unconditional DDPM (pool, labels hidden): with ``pretrain_steps`` None (or = gen_steps) it
    is the generator of :func:`synthetic.pretrained_generator`, shared with chapter 7 (same recipe, same
    cache key). None with no ``ft_fractions``: nothing is fine-tuned, so nothing is pretrained (``cpu``)."""
    if not cfg.ft_fractions:
        return None
    steps = cfg.pretrain_steps or cfg.gen_steps
    if steps == cfg.gen_steps and not cached_only:
        return synthetic.pretrained_generator(cfg, sets, progress=progress)
    return _generator(cfg, sets.pool, cached_only=cached_only, progress=progress, name="ddpm-unconditional-pretrain",
                      steps=steps, unconditional=True)


def finetune_options(cfg: Config) -> dict:
    """The overrides of the fine-tuning runs: learning rate and a short warm-up
    (:func:`cxrlib.experiments.synthetic.finetune_options`, shared with chapter 5's pool-pretrained source)."""
    return synthetic.finetune_options(cfg, cfg.ft_steps, cfg.ft_lr)


def finetuned(cfg: Config, train: CXRDataset, pretrained_dir: Path, progress: bool = True,
              cached_only: bool = False) -> Path | None:
    """The pretrained DDPM fine-tuned conditionally on ``train`` for ``ft_steps`` (cached)."""
    return _generator(cfg, train, cached_only=cached_only, progress=progress, name="ddpm-finetune", steps=cfg.ft_steps,
                      init_from=pretrained_dir, **finetune_options(cfg))


def scratch(cfg: Config, sets: common.RealSets, fraction: float, progress: bool = True,
            cached_only: bool = False) -> Path | None:
    """The study's conditional DDPM recipe trained from scratch on R_f (at ``labeled_fraction``: the
    main generator, :func:`synthetic.main_generator`)."""
    if abs(fraction - cfg.labeled_fraction) < 1e-9 and not cached_only:
        return synthetic.main_generator(cfg, sets, progress=progress)
    return _generator(cfg, labeled_subset(cfg, sets, fraction), cached_only=cached_only, progress=progress,
                      name="ddpm-conditional", steps=cfg.gen_steps)


def generator_name(kind: str, fraction: float) -> str:
    return f"{kind} {pct(fraction)}"


def generators(cfg: Config, sets: common.RealSets, progress: bool = True, cached_only: bool = False) -> pd.DataFrame:
    """Train (or fetch) every generator of the design: one row per generator (index = its name) with
    ``kind, fraction, labeled_images, unlabeled_steps, labeled_steps, path``. With ``cached_only``
    nothing is trained and the generators not in the cache are left out (chapter 6)."""
    rows = []
    pre = pretrained(cfg, sets, progress=progress, cached_only=cached_only)
    pre_steps = cfg.pretrain_steps or cfg.gen_steps
    for f in sorted(cfg.ft_fractions) if pre is not None else ():
        r_f = labeled_subset(cfg, sets, f)
        rows.append(dict(generator=generator_name("pretrained+FT", f), kind="pretrained+FT", fraction=f,
                         labeled_images=len(r_f), unlabeled_steps=pre_steps, labeled_steps=cfg.ft_steps,
                         path=finetuned(cfg, r_f, pre, progress=progress, cached_only=cached_only)))
    for f in sorted(cfg.scratch_fractions):
        rows.append(dict(generator=generator_name("scratch", f), kind="scratch", fraction=f,
                         labeled_images=len(labeled_subset(cfg, sets, f)), unlabeled_steps=0, labeled_steps=cfg.gen_steps,
                         path=scratch(cfg, sets, f, progress=progress, cached_only=cached_only)))
    out = pd.DataFrame(rows, columns=["generator", "kind", "fraction", "labeled_images", "unlabeled_steps",
                                      "labeled_steps", "path"])
    out = out[out.path.notna()]
    out["path"] = out.path.astype(str)
    return out.set_index("generator")


def training_curves(cfg: Config, sets: common.RealSets, gens: pd.DataFrame) -> pd.DataFrame:
    """The training losses (``train_log.csv`` kept with each cached generator): ``generator, phase,
    step, loss`` with fine-tuning steps counted after the pretraining steps."""
    pre = pretrained(cfg, sets, progress=False)
    pre_steps = cfg.pretrain_steps or cfg.gen_steps
    parts = []

    def read(path, generator, phase, offset):
        log = Path(path).parent / "train_log.csv"
        if log.exists():
            d = pd.read_csv(log)
            parts.append(pd.DataFrame({"generator": generator, "phase": phase, "step": d.step + offset, "loss": d.loss}))

    if pre is not None:
        read(pre, "pretrained (unconditional, pool)", "pretraining", 0)
    for g, row in gens.iterrows():
        ft = row.kind == "pretrained+FT"
        read(row.path, g, "fine-tuning" if ft else "from scratch", pre_steps if ft else 0)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["generator", "phase", "step", "loss"])


def plot_training(curves: pd.DataFrame, smooth: int = 5):
    """Denoising loss against optimizer steps (rolling mean over ``smooth`` log rows); fine-tuning
    continues the pretraining curve."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ls = {"pretraining": ":", "fine-tuning": "-", "from scratch": "--"}
    for i, ((g, phase), d) in enumerate(curves.groupby(["generator", "phase"], sort=False)):
        color = "0.3" if phase == "pretraining" else plt.get_cmap("tab10")(i % 10)
        ax.plot(d.step, d.loss.rolling(smooth, min_periods=1).mean(), color=color, ls=ls[phase], lw=1.3, label=g,
                marker="o" if len(d) < 5 else None, ms=4)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer steps (fine-tuning counted after pretraining)")
    ax.set_ylabel("denoising loss (MSE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def synthetic_sets(cfg: Config, sets: common.RealSets, gens: pd.DataFrame, progress: bool = True) -> dict:
    """``{generator name: synthetic ArrayDataset}``: each generator on the shared conditions."""
    conds = conditions(cfg, sets, cfg.n_syn)
    return {g: sample(cfg, row.path, conds, progress=progress) for g, row in gens.iterrows()}


# ------------------------------------------------------------------------------------------------
# Utility
# ------------------------------------------------------------------------------------------------
def syn_arm(generator: str) -> str:
    return f"synthetic: {generator}"


def reference_arm(cfg: Config) -> str:
    """The arm every p-value compares against: synthetic-only on the study's main generator."""
    return syn_arm(generator_name("scratch", cfg.labeled_fraction))


def arms(cfg: Config, sets: common.RealSets, gens: pd.DataFrame, syn: Mapping[str, CXRDataset]) -> dict:
    """The classifier arms: ``synthetic: <generator>`` for each generator, ``real <f>`` (R_f only)
    for each f of ``real_fractions``, ``real <f> + synthetic: <generator>`` if ``real_plus_syn``."""
    out = {}
    for g, row in gens.iterrows():
        out[syn_arm(g)] = [syn[g]]
    for f in sorted(cfg.real_fractions):
        out[f"real {pct(f)}"] = [labeled_subset(cfg, sets, f)]
    if cfg.real_plus_syn:
        for g, row in gens.iterrows():
            out[f"real {pct(row.fraction)} + {syn_arm(g)}"] = [labeled_subset(cfg, sets, row.fraction), syn[g]]
    return out


def utility(cfg: Config, sets: common.RealSets, gens: pd.DataFrame, syn: Mapping[str, CXRDataset],
            progress: bool = True) -> pd.DataFrame:
    """Every arm's test AUROC against the main generator's synthetic-only arm (results table)."""
    return common.evaluate_arms(cfg, arms(cfg, sets, gens, syn), sets, reference=reference_arm(cfg), metrics=("auroc",),
                                test_sets={"internal": sets.test}, progress=progress)


def contrast_pairs(cfg: Config) -> list[tuple[str, str, str]]:
    """``(question, arm, reference)`` pairs that test Huijben's claims:

    1. *pretraining helps at equal labels*: pretrained+FT f vs scratch f, for each f in both designs;
    2. *f labels suffice*: pretrained+FT f vs the generator with all labels (scratch 100 % if in the
       design, else pretrained+FT 100 %), for each fine-tuned f < 1."""
    pairs = []
    for f in sorted(set(cfg.ft_fractions) & set(cfg.scratch_fractions)):
        pairs.append(("pretraining vs scratch, same labels", syn_arm(generator_name("pretrained+FT", f)),
                      syn_arm(generator_name("scratch", f))))
    full = ("scratch" if 1.0 in cfg.scratch_fractions else "pretrained+FT" if 1.0 in cfg.ft_fractions else None)
    if full is not None:
        for f in sorted(f for f in cfg.ft_fractions if f < 1):
            pairs.append((f"{pct(f)} labels vs all labels", syn_arm(generator_name("pretrained+FT", f)),
                          syn_arm(generator_name(full, 1.0))))
    return pairs


def contrasts(cfg: Config, sets: common.RealSets, gens: pd.DataFrame, syn: Mapping[str, CXRDataset],
              progress: bool = True) -> pd.DataFrame:
    """The paired AUROC differences of :func:`contrast_pairs` (same cached classifiers, same test
    images): one row per pair with the macro difference (pooled over seeds if several: mean and
    t-interval; else the patient-level bootstrap CI), its p-value, the smallest per-label DeLong
    p-value, and whether it is non-inferior at ``margin`` (CI lower bound > −margin)."""
    all_arms = arms(cfg, sets, gens, syn)
    rows = []
    for question, a, b in contrast_pairs(cfg):
        res = common.evaluate_arms(cfg, {b: all_arms[b], a: all_arms[a]}, sets, reference=b, metrics=("auroc",),
                                   test_sets={"internal": sets.test}, progress=progress)
        d = common.headline(res, metric="auroc_diff")
        d = d[d.arm == a].iloc[0]
        per_label = res[(res.metric == "auroc") & (res.arm == a) & (res.label != "macro") & (res.seed.astype(str) != "pooled")]
        rows.append({"question": question, "arm": a, "reference": b, "auroc_diff": d.estimate, "ci_low": d.ci_low,
                     "ci_high": d.ci_high, "p_value": d.p_value, "test": d.test, "n_seeds": d.n_seeds,
                     "min_delong_p_per_label": per_label["p_value"].min(),
                     "noninferior": bool(d.ci_low > -cfg.margin) if np.isfinite(d.ci_low) else False,
                     "superior": bool(d.ci_low > 0) if np.isfinite(d.ci_low) else False})
    return pd.DataFrame(rows, columns=["question", "arm", "reference", "auroc_diff", "ci_low", "ci_high", "p_value", "test",
                                       "n_seeds", "min_delong_p_per_label", "noninferior", "superior"])


# ------------------------------------------------------------------------------------------------
# Fidelity
# ------------------------------------------------------------------------------------------------
def real_reference(cfg: StudyConfig, sets: common.RealSets, n: int) -> CXRDataset:
    """A held-out real "synthetic set": the first ``n`` validation images (never seen by a generator,
    the oracle or the test set). Its fidelity row is the best a generator can hope for at this n."""
    return common.subset(sets.val, min(n, len(sets.val)), name="real (validation)")


def fidelity(cfg: StudyConfig, sets: common.RealSets, syn: Mapping[str, CXRDataset], *, n_boot: int | None = None,
             ms_ssim_pairs: int = 500, reference: bool = True, progress: bool = True) -> pd.DataFrame:
    """:func:`cxrlib.fidelity.fidelity_report` of each synthetic set against the real test set in the
    ``study`` feature space (the oracle's penultimate layer), with label consistency (the oracle's
    scores): the tidy report rows plus a ``generator`` column. ``reference`` adds a held-out real
    set (:func:`real_reference`) of the same size as the synthetic sets as the row ``real (validation)``."""
    import warnings

    from ..classify import predict
    from ..fidelity import SmallSampleWarning, extract_features, fidelity_report, study_extractor
    from ..utils import tqdm

    oracle = common.oracle(cfg, sets, progress=progress)
    ext = study_extractor(oracle)
    x_real, y_real, m_real = sets.test.to_tensors()
    y_real = (y_real * m_real).numpy()  # an unannotated label counts as negative in the per-label subsets
    f_real = extract_features(ext, x_real, device=cfg.device)
    items = dict(syn)
    if reference and items:
        items["real (validation)"] = real_reference(cfg, sets, max(len(d) for d in syn.values()))
    parts = []
    small: set[str] = set()
    for name, ds in tqdm(list(items.items()), desc="fidelity", unit="set", **({} if progress else {"disable": True})):
        x, y, m = ds.to_tensors()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SmallSampleWarning)
            rep = fidelity_report(x_real, y_real, x, (y * m).numpy(), ext, label_names=cfg.labels, real_features=f_real,
                                  oracle_scores=predict(oracle, ds, device=cfg.device), syn_label_mask=m.numpy(),
                                  n_boot=cfg.n_boot if n_boot is None else n_boot, ms_ssim_pairs=ms_ssim_pairs,
                                  device=cfg.device, seed=cfg.seed)
        for w in caught:
            if issubclass(w.category, SmallSampleWarning):
                small.add(name)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        parts.append(rep.assign(generator=name))
    if small:  # one line for the whole table, not one per set
        warnings.warn(f"fidelity: estimates of {len(small)} set(s) rest on fewer samples than cxrlib.fidelity.MIN_N "
                      "recommends (see n_real / n_syn per row)", SmallSampleWarning, stacklevel=2)
    out = pd.concat(parts, ignore_index=True)
    return out[["generator", *[c for c in out.columns if c != "generator"]]]


# ------------------------------------------------------------------------------------------------
# Summary, figures
# ------------------------------------------------------------------------------------------------
def summary(cfg: Config, gens: pd.DataFrame, results: pd.DataFrame, fid: pd.DataFrame) -> pd.DataFrame:
    """One row per generator: its recipe, the synthetic-only macro AUROC (pooled over seeds) with CI
    and p-value against the reference arm, and the overall fidelity metrics; plus the real arms."""
    head = common.headline(results).set_index("arm")
    fid_all = fid[fid.label == "all"].pivot_table(index="generator", columns="metric", values="value", aggfunc="first")
    rows = []
    for g, row in gens.iterrows():
        h = head.loc[syn_arm(g)]
        r = {"generator": g, "kind": row.kind, "fraction": row.fraction, "labeled_images": row.labeled_images,
             "unlabeled_steps": row.unlabeled_steps, "labeled_steps": row.labeled_steps,
             "auroc": h.estimate, "ci_low": h.ci_low, "ci_high": h.ci_high, "p_vs_reference": h.p_value}
        r.update({m: fid_all.loc[g, m] if g in fid_all.index and m in fid_all.columns else np.nan for m in SUMMARY_FIDELITY})
        rows.append(r)
    for arm in head.index:
        if arm.startswith("real ") and "+" not in arm:
            h = head.loc[arm]
            f = float(arm.split()[1].rstrip("%")) / 100
            rows.append({"generator": arm, "kind": "real only", "fraction": f, "auroc": h.estimate, "ci_low": h.ci_low,
                         "ci_high": h.ci_high, "p_vs_reference": h.p_value})
    if "real (validation)" in fid_all.index:
        rows.append({"generator": "real (validation)", "kind": "real reference",
                     **{m: fid_all.loc["real (validation)", m] for m in SUMMARY_FIDELITY if m in fid_all.columns}})
    return pd.DataFrame(rows)


KIND_STYLE = {"pretrained+FT": ("tab:blue", "o"), "scratch": ("tab:orange", "s"), "real only": ("0.35", "^")}


def plot_utility(summ: pd.DataFrame):
    """Synthetic-only test macro AUROC (95 % CI) against the labeled fraction, per generator kind,
    with the real-only classifiers as the yardstick."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for k, (kind, (color, marker)) in enumerate(KIND_STYLE.items()):
        d = summ[summ.kind == kind].sort_values("fraction")
        if d.empty:
            continue
        x = d.fraction * 1.04 ** (k - 1)  # dodge the kinds apart at a shared fraction (log axis)
        label = {"pretrained+FT": "synthetic only: pretrained + fine-tuned", "scratch": "synthetic only: from scratch",
                 "real only": "real labeled images only"}[kind]
        ax.errorbar(x, d.auroc, yerr=[d.auroc - d.ci_low, d.ci_high - d.auroc], color=color, marker=marker,
                    capsize=3, lw=1.6, ls="--" if kind == "real only" else "-", label=label)
    fr = sorted(summ.fraction.dropna().unique())
    ax.set_xscale("log")
    ax.set_xticks(fr)
    ax.set_xticklabels([pct(f) for f in fr])
    ax.set_xlim(min(fr) / 1.6, max(fr) * 1.6)
    ax.minorticks_off()
    ax.axhline(0.5, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("labeled fraction of the pool (R_f)")
    ax.set_ylabel("test macro AUROC")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_fidelity(summ: pd.DataFrame, metrics: Sequence[str] = SUMMARY_FIDELITY):
    """One panel per fidelity metric: a bar per generator (and the held-out real reference)."""
    import matplotlib.pyplot as plt

    d = summ[summ.kind.isin(["pretrained+FT", "scratch", "real reference"])]
    colors = [KIND_STYLE.get(k, ("0.6", ""))[0] for k in d.kind]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.1 * len(metrics), 0.35 * len(d) + 1.6), sharey=True)
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.barh(np.arange(len(d)), d[m].to_numpy(float), color=colors)
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel({"fd": "lower = better", "kid": "lower = better", "ms_ssim_syn": "closer to real = better"}.get(
            m, "higher = better"), fontsize=7)
    np.atleast_1d(axes)[0].set_yticks(np.arange(len(d)))
    np.atleast_1d(axes)[0].set_yticklabels(d.generator, fontsize=8)
    np.atleast_1d(axes)[0].invert_yaxis()
    fig.tight_layout()
    return fig


def sample_grid(syn: Mapping[str, CXRDataset], n: int = 8):
    """The first ``n`` images of each synthetic set: same conditions and noise down each column, so
    a column shows what each generator makes of one condition. Column titles: the condition's findings."""
    from ..plots import image_grid

    names = list(syn)
    first = syn[names[0]]
    n = min(n, len(first))
    imgs = np.stack([syn[g].to_tensors()[0][:n, 0].numpy() for g in names])
    y, m = first.targets()
    abbrev = {lab: "".join(w[0] for w in lab.split()) if len(lab.split()) > 1 else lab[:4] for lab in first.label_names}
    cols = [", ".join(abbrev[l] for j, l in enumerate(first.label_names) if m[i, j] and y[i, j] == 1) or "none" for i in range(n)]
    return image_grid(imgs, row_labels=names, col_labels=cols)
