"""Experiment 5 — Supplementation (Khosravi et al. 2024): does adding synthetic images to the real
training set R raise AUROC, internally and on external sites, and how does it compare with training
on synthetic images only and with simply showing the real images more often?

Khosravi et al. add DDPM images sampled at the training distribution (labels *and* demographics) to
the real set at 100 % ... 1000 % of its size, and report AUROC gains of up to +0.02 (p < 0.01) on
internal and external test sets; classifiers trained on synthetic images only match the real one
when the synthetic set is 200-300 % of the real one. Arms (``n`` = ``|R|``):

======================================== ==========================================================
``real``                                 R alone (the reference of every p-value; "0 %")
``real+synthetic p% [source]``           R + the first ``p·n/100`` natural-prevalence synthetic images
                                         of a generator source
``synthetic p% [source]``                those synthetic images alone (sizes matched to the arms above)
``real+duplicates p%``                   R + ``p·n/100`` copies of R's images (R repeated, then a
                                         prefix): as many training images as ``real+synthetic p%``,
                                         with no new content: ``real+synthetic p%`` − ``real+duplicates
                                         p%`` is the test of what the generator adds
======================================== ==========================================================

**Generator sources** (:func:`generators`): ``R-only 1 .. n_generators``, the study's conditional
DDPM trained on R with generator seeds ``seed, seed + 1, ...`` (the first is the main generator of
chapter 2) — independently trained replicates, so the primary contrasts average, per classifier
seed, over generators; and ``pool-pretrained``, the unconditional DDPM pretrained on the whole
unlabeled pool and fine-tuned on R for ``ft_steps`` (Huijben's recipe; chapter 4's generator of the
same labeled set), which carries information beyond R.

**Mixing sources** (:func:`mixing_arms`): the real training images of the external site
``mixing_site`` (|R| images outside its test patients, :func:`site_train_set`)
alone, + ``mixing_percent`` % synthetic images of ``R-only 1`` (conditioned on R: the other
source's statistics), and + as many duplicates of its own images; tested on the internal set.

Every classifier trains for the same optimizer-step budget ``clf_steps`` whatever its set size, and
keeps the weights of its best validation macro-AUROC (the fair protocol of
:func:`cxrlib.experiments.common.evaluate_arms`; results carry ``optimizer_steps`` and
``selected_step``), for ``n_seeds`` seeds. With ``clf_steps = None`` it trains ``clf_epochs`` passes
over its own set instead (Khosravi's setting: a larger set is also a longer run).

**The synthetic stream.** Synthetic images come in chunks of ``ceil(|R| / 4)`` images
(:data:`CHUNKS_PER_R`: 25 % of R); chunk ``k`` draws its conditions from R (:func:`cxrlib.generators.conditions.prevalence_conditions`, rows of R with replacement, so
label prevalence, co-occurrence and demographics are R's) with the seed
``derive_seed(seed, "natural", k)`` and is one cached synthetic set (:func:`cxrlib.experiments.synthetic.natural_synthetic`); every source uses the same conditions and seeds.
The first ``m`` images of the stream are therefore the same whatever the largest percentage asked
for: a 200 % arm uses a prefix of the 1000 % images, a larger grid only samples the new chunks, and
chapter 3's natural-prevalence synthetic set is the start of the same stream (same cache entries).

**Statistics** (:mod:`cxrlib.stats`): per seed and test set, AUROC per label with a paired DeLong test
against ``real``, macro AUROC with a patient-level paired bootstrap, Holm-adjusted across arms and
labels (descriptive, per seed); the inference of the verdicts and of :func:`contrasts` is across
training seeds: the paired t-test over seeds of the per-seed differences (:mod:`cxrlib.verdicts`).
AUROC needs no threshold: the study field ``threshold_policy`` is not used here.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..data.base import CXRDataset
from .common import RealSets, StudyConfig, all_test_sets, evaluate_arms, external_sites, merge_profiles, seed_average
from .supplementation_figures import (KIND_ORDER, KIND_STYLE, MEAN_R_ONLY, _kind_key, plot_auroc_vs_percent,  # noqa: F401
                                      plot_contrasts, plot_delta_heatmap, plot_mixing)
from .synthetic import duplicates, n_images

FULL_GRID = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
R_ONLY, POOL = "R-only", "pool-pretrained"  # the two kinds of generator source


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    NAME: ClassVar[str] = "supplementation"
    supplement_percents: tuple[int, ...] = FULL_GRID  # synthetic images added to R, in % of |R| (0 = the real arm)
    synthetic_only_percents: tuple[int, ...] = FULL_GRID[1:]  # synthetic-only arms, sizes in % of |R|
    duplicate_percents: tuple[int, ...] = FULL_GRID[1:]  # count-matched control: copies of R added, in % of |R|
    evaluate_external: bool = True  # also test on the external sites (external_sites)
    # generator sources: n_generators independently trained R-only DDPMs (generator seeds seed, seed+1, ...;
    # the first is the shared main generator), and the pool-pretrained DDPM fine-tuned on R (Huijben's recipe)
    n_generators: int = 2
    pool_pretrained: bool = True
    ft_steps: int = 600  # conditional fine-tuning steps of the pool-pretrained source (labels carried from ~600)
    ft_lr: float | None = None  # its learning rate; None = gen_lr
    # mixing sources (Khosravi): real images of this external site (an entry of external_sites; no
    # such arms: ""), alone, + synthetic images of the first R-only generator, + duplicates, tested everywhere
    mixing_site: str = "nih"
    mixing_percent: int = 100  # synthetic (or duplicated) images added to the site's real set, in % of it
    # the regime map (cxrlib.experiments.regime): gain of pool-pretrained synthetic over duplicates by labeled
    # fraction of the pool x supplementation ratio; () = not run
    regime_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    regime_percents: tuple[int, ...] = (100, 300, 1000)

    PROFILES: ClassVar = merge_profiles({
        # smoke: every path once, small; the regime map's one cell (R_50% = R) reuses the main grid's arms
        "smoke": dict(supplement_percents=(0, 100), synthetic_only_percents=(100,), duplicate_percents=(100,),
                      n_generators=1, ft_steps=10, regime_fractions=(0.5,), regime_percents=(100,)),
        # cpu (the hour book): the primary contrast — R + synthetic at 100 % of two independently trained R-only
        # generators against real and against its duplicates control; five seeds
        "cpu": dict(supplement_percents=(0, 100), synthetic_only_percents=(), duplicate_percents=(100,), n_seeds=5,
                    regime_fractions=(), pool_pretrained=False, mixing_site=""),
        # cpu-full: the ratio axis 100 / 300 / 1000 % (duplicates and synthetic-only at every size; 1000 % is the paper's
        # headline), the pool-pretrained source, the mixing-sources arms and the regime map
        "cpu-full": dict(pool_pretrained=True, mixing_site="nih",
                         supplement_percents=(0, 100, 300, 1000), synthetic_only_percents=(100, 300, 1000),
                         duplicate_percents=(100, 300, 1000), regime_fractions=(0.1, 0.25, 0.5, 1.0),
                         regime_percents=(100, 300)),
        "paper": dict(ft_steps=50_000, mixing_site=""),
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
        if self.n_generators < 0:
            raise ConfigError(f"parameter 'n_generators': must be >= 0, got {self.n_generators}")
        if self.n_generators == 0 and not self.pool_pretrained:
            raise ConfigError("parameters 'n_generators' = 0 and 'pool_pretrained' = False leave no synthetic source")
        if self.ft_steps < 1:
            raise ConfigError(f"parameter 'ft_steps': must be >= 1, got {self.ft_steps}")
        if self.mixing_site:
            sites = list(external_sites(self))
            if self.mixing_site not in sites:
                raise ConfigError(f"parameter 'mixing_site': {self.mixing_site!r} is not one of the external sites "
                                  f"{sites} (parameter 'external_sites'); use '' for no mixing-sources arms")
            if self.n_generators < 1:
                raise ConfigError("parameter 'mixing_site': the mixing arms use the first R-only generator; "
                                  "set n_generators >= 1 or mixing_site ''")
        if self.regime_fractions:
            if not self.pool_pretrained:
                raise ConfigError("parameter 'regime_fractions': the regime map uses the pool-pretrained source; set "
                                  "pool_pretrained True or regime_fractions []")
            if any(not 0 < f <= 1 for f in self.regime_fractions) or len(set(self.regime_fractions)) != len(self.regime_fractions):
                raise ConfigError(f"parameter 'regime_fractions': distinct fractions in (0, 1], got {self.regime_fractions}")
            if not self.regime_percents or any(p < 1 for p in self.regime_percents) or \
                    len(set(self.regime_percents)) != len(self.regime_percents):
                raise ConfigError(f"parameter 'regime_percents': distinct percentages >= 1, got {self.regime_percents}")
        if self.mixing_percent < 1:
            raise ConfigError(f"parameter 'mixing_percent': must be >= 1, got {self.mixing_percent}")


# ------------------------------------------------------------------------------------------------
# Generator sources
# ------------------------------------------------------------------------------------------------
def source_names(cfg: Config) -> list[str]:
    """``R-only 1``, ..., ``R-only n_generators``, then ``pool-pretrained`` (if ``pool_pretrained``)."""
    return [f"{R_ONLY} {k + 1}" for k in range(cfg.n_generators)] + ([POOL] if cfg.pool_pretrained else [])


def source_kind(source: str) -> str:
    return POOL if source == POOL else R_ONLY


def generators(cfg: Config, sets: RealSets, progress: bool = True) -> pd.DataFrame:
    """Train (or fetch) every generator source: one row per source (index) with ``kind``, the labeled
    images it saw, its unlabeled and labeled optimizer steps, its generator seed and ``path``. The
    R-only sources are the study's conditional DDPM recipe with generator seeds ``seed``, ``seed + 1``,
    ... (:func:`cxrlib.experiments.synthetic.r_only_generator`; the first is the main generator); the
    pool-pretrained source is :func:`cxrlib.experiments.synthetic.pool_finetuned_generator`."""
    from . import synthetic as S

    rows = []
    for k in range(cfg.n_generators):
        rows.append(dict(source=f"{R_ONLY} {k + 1}", kind=R_ONLY, labeled_images=len(sets.train), unlabeled_images=0,
                         unlabeled_steps=0, labeled_steps=cfg.gen_steps, generator_seed=cfg.seed + k,
                         path=str(S.r_only_generator(cfg, sets, k, progress=progress))))
    if cfg.pool_pretrained:
        rows.append(dict(source=POOL, kind=POOL, labeled_images=len(sets.train), unlabeled_images=len(sets.pool),
                         unlabeled_steps=cfg.gen_steps, labeled_steps=cfg.ft_steps, generator_seed=cfg.seed,
                         path=str(S.pool_finetuned_generator(cfg, sets, ft_steps=cfg.ft_steps, ft_lr=cfg.ft_lr,
                                                             progress=progress))))
    return pd.DataFrame(rows).set_index("source")


def synthetic_streams(cfg: Config, gens: pd.DataFrame, sets: RealSets, progress: bool = True) -> dict[str, CXRDataset]:
    """``{source: the first synthetic_needed images of its natural-prevalence stream}`` (conditions
    drawn from R, the same per-image seeds for every source: :func:`cxrlib.experiments.synthetic.natural_synthetic`)."""
    from . import synthetic as S

    out = {}
    for source, path in gens["path"].items():
        n = synthetic_needed(cfg, len(sets.train), source=source)
        out[source] = S.natural_synthetic(cfg, path, sets.train, n, progress=progress)
    return out


# ------------------------------------------------------------------------------------------------
# Arms
# ------------------------------------------------------------------------------------------------
def arm_name(kind: str, percent: int, source: str = "") -> str:
    tag = f" [{source}]" if source else ""
    return {"real": "real", "real+synthetic": f"real+synthetic {percent}%{tag}", "synthetic": f"synthetic {percent}%{tag}",
            "real+duplicates": f"real+duplicates {percent}%"}[kind]


def build_arms(cfg: Config, real: CXRDataset, synthetic: Mapping[str, CXRDataset]
               ) -> tuple[dict[str, list[CXRDataset]], pd.DataFrame]:
    """The training sets of every arm (module docstring) and a table ``arm, kind, source, source_kind,
    percent, n_real, n_synthetic, n_duplicates, n_train``. ``synthetic``: ``{source: stream}``, each
    holding at least the largest percentage's images (:func:`synthetic_needed`)."""
    n = len(real)
    need = synthetic_needed(cfg, n)
    for source, stream in synthetic.items():
        if len(stream) < need:
            raise ValueError(f"build_arms: source {source!r} has {len(stream)} synthetic images, but the grid needs {need}")
    arms: dict[str, list[CXRDataset]] = {"real": [real]}
    rows = [dict(arm="real", kind="real", source="", source_kind="", percent=0, n_real=n, n_synthetic=0, n_duplicates=0)]

    def syn(stream, p):
        return stream.subset(np.arange(n_images(p, n))) if n_images(p, n) < len(stream) else stream

    for source, stream in synthetic.items():
        for p in sorted(set(cfg.supplement_percents) - {0}):
            a = arm_name("real+synthetic", p, source)
            arms[a] = [real, syn(stream, p)]
            rows.append(dict(arm=a, kind="real+synthetic", source=source, source_kind=source_kind(source), percent=p,
                             n_real=n, n_synthetic=n_images(p, n), n_duplicates=0))
        for p in sorted(cfg.synthetic_only_percents):
            a = arm_name("synthetic", p, source)
            arms[a] = [syn(stream, p)]
            rows.append(dict(arm=a, kind="synthetic", source=source, source_kind=source_kind(source), percent=p, n_real=0,
                             n_synthetic=n_images(p, n), n_duplicates=0))
    for p in sorted(cfg.duplicate_percents):
        arms[arm_name("real+duplicates", p)] = [real, duplicates(real, n_images(p, n))]
        rows.append(dict(arm=arm_name("real+duplicates", p), kind="real+duplicates", source="", source_kind="", percent=p,
                         n_real=n, n_synthetic=0, n_duplicates=n_images(p, n)))
    table = pd.DataFrame(rows)
    table["n_train"] = table[["n_real", "n_synthetic", "n_duplicates"]].sum(axis=1)
    return arms, table


def synthetic_needed(cfg: Config, n_real: int, source: str | None = None, n_site: int = 0) -> int:
    """Synthetic images the largest supplemented or synthetic-only arm uses (for ``source``: the first
    R-only source also feeds the mixing arm, ``mixing_percent`` % of ``n_site`` site images)."""
    grid = max([n_images(p, n_real) for p in (*cfg.supplement_percents, *cfg.synthetic_only_percents)] + [0])
    if source == f"{R_ONLY} 1" and cfg.mixing_site:
        grid = max(grid, n_images(cfg.mixing_percent, n_site or n_real))
    return grid


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
# Mixing sources (Khosravi 2024): real images of one source + synthetic images of another
# ------------------------------------------------------------------------------------------------
MIXING_KINDS = ("site real", "site real+synthetic", "site real+duplicates")


def site_train_set(cfg: StudyConfig, sets: RealSets, site: str, n: int | None = None, progress: bool = True) -> CXRDataset:
    """Real *training* images of the external site ``site`` (chapter 5's mixing-sources arms): ``n``
    images (default ``|R|``) that are not in the site's test set and share no patient with it. On the
    phantom: the site's images after its ``n_external`` test images; on real data: the first ``n``
    images of the train split of the ``NAME=ROOT`` dataset. Labels the site does not annotate are masked."""
    from ..data import load_dataset
    from ..data.labels import LabelPolicy

    roots = external_sites(cfg)
    if site not in roots:
        raise ConfigError(f"site {site!r} is not one of the external sites {list(roots)} (parameter 'external_sites')")
    n = len(sets.train) if n is None else int(n)
    kw = dict(size=cfg.image_size, labels=cfg.labels, progress=progress, policy=LabelPolicy(missing="ignore"))
    if roots[site] is not None:
        ds = load_dataset(site, split="train", n_max=n, root=roots[site], **kw)
        if len(ds) < n:
            raise ValueError(f"external site {site!r} ({roots[site]}) has {len(ds)} training images, {n} are needed")
        return ds
    test = sets.external.get(site)
    n_test = len(test) if test is not None else (cfg.n_external or 1000)
    test_patients = set(test.meta["patient_id"]) if test is not None else set()
    full = load_dataset("phantom", site=site, split="test", n_max=n_test + n + max(50, n // 5), **kw)
    ok = np.flatnonzero((np.arange(len(full)) >= n_test) & ~full.meta["patient_id"].isin(test_patients).to_numpy())
    if len(ok) < n:
        raise ValueError(f"phantom site {site!r}: only {len(ok)} training images outside its test patients, {n} needed")
    out = full.subset(ok[:n])
    out.meta = out.meta.assign(split="train")
    out.name = f"{site} train"
    return out


def mixing_arms(cfg: Config, site_real: CXRDataset, synthetic: CXRDataset) -> tuple[dict[str, list[CXRDataset]], pd.DataFrame]:
    """The mixing-sources arms: the external site's real training images alone (the single-source
    reference), plus ``mixing_percent`` % synthetic images of the internal R-only generator (conditioned
    on R: the other source's statistics), and plus as many duplicates of its own images (the
    count-matched control). ``synthetic``: the internal stream (its first images are used)."""
    site, n = cfg.mixing_site, len(site_real)
    m = n_images(cfg.mixing_percent, n)
    if len(synthetic) < m:
        raise ValueError(f"mixing_arms: {len(synthetic)} synthetic images, the mixing arm needs {m}")
    names = {k: f"{site} real" + {"site real": "", "site real+synthetic": f" + internal synthetic {cfg.mixing_percent}%",
                                  "site real+duplicates": f" + duplicates {cfg.mixing_percent}%"}[k] for k in MIXING_KINDS}
    arms = {names["site real"]: [site_real],
            names["site real+synthetic"]: [site_real, synthetic.subset(np.arange(m))],
            names["site real+duplicates"]: [site_real, duplicates(site_real, m)]}
    table = pd.DataFrame([dict(arm=names[k], kind=k, site=site, percent=0 if k == "site real" else cfg.mixing_percent,
                               n_real=n, n_synthetic=m if k == "site real+synthetic" else 0,
                               n_duplicates=m if k == "site real+duplicates" else 0) for k in MIXING_KINDS])
    table["n_train"] = table[["n_real", "n_synthetic", "n_duplicates"]].sum(axis=1)
    return arms, table


def run_mixing(cfg: Config, arms: dict[str, Sequence[CXRDataset]], sets: RealSets, progress: bool = True) -> pd.DataFrame:
    """Train and evaluate the mixing arms (reference: the site's real images alone) on the internal test
    set and every external site (the site's own test set included)."""
    reference = next(a for a in arms if a == f"{cfg.mixing_site} real")
    return evaluate_arms(cfg, arms, sets, reference=reference, policies=(), metrics=("auroc",),
                         test_sets=all_test_sets(sets, external=True), progress=progress)


# ------------------------------------------------------------------------------------------------
# Summaries and figures
# ------------------------------------------------------------------------------------------------
def auroc_curve(results: pd.DataFrame, arm_table: pd.DataFrame, label: str = "macro") -> pd.DataFrame:
    """AUROC of ``label`` per arm and test set, joined with the arm table: ``test_set, arm, kind,
    source, percent, n_train, estimate, ci_low, ci_high, seed_sd, n_seeds, p_adj_seeds, test``,
    summarized over seeds by :func:`cxrlib.experiments.common.seed_average` (mean over seeds; the
    envelope of the per-seed patient-level bootstrap CIs; the largest per-seed Holm-adjusted p-value).
    The ``real`` arm is repeated at 0 % for every (kind, source) curve so every curve starts from it."""
    r = results[(results.metric == "auroc") & (results.label == label)]
    cols = ["arm", "kind", "source", "percent", "n_train"]
    out = seed_average(r, by=("test_set", "arm")).merge(arm_table[cols], on="arm", how="left")
    out["source"] = out["source"].fillna("")
    real = out[out.kind == "real"]
    curves = out[out.kind != "real"][["kind", "source"]].drop_duplicates()
    anchors = [real.assign(kind=k, source=src) for k, src in curves.itertuples(index=False)]
    out = pd.concat([out, *anchors], ignore_index=True)
    return out.sort_values(["test_set", "kind", "source", "percent"], key=_kind_key).reset_index(drop=True)


def delta_table(results: pd.DataFrame, arm_table: pd.DataFrame) -> pd.DataFrame:
    """AUROC difference to ``real`` per arm, label (and macro) and test set, summarized over seeds
    (:func:`cxrlib.experiments.common.seed_average`): the mean difference, the envelope of the
    per-seed bootstrap CIs, and ``p_adj_seeds``, the largest per-seed Holm-adjusted p-value (DeLong per label,
    paired bootstrap for macro)."""
    r = results[results.metric == "auroc_diff"]
    out = seed_average(r, by=("test_set", "arm", "label")).merge(arm_table[["arm", "kind", "source", "percent"]], on="arm")
    out["source"] = out["source"].fillna("")
    return out.sort_values(["test_set", "kind", "source", "percent", "label"], key=_kind_key).reset_index(drop=True)


def format_delta(delta: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``arm x (test_set, label)`` strings ``+0.012*`` (``*``: ``p_adj_seeds < alpha``)."""
    d = delta.assign(text=[f"{e:+.3f}{'*' if p < alpha else ''}" for e, p in zip(delta.estimate, delta.p_adj_seeds)])
    wide = d.pivot_table(index=["kind", "source", "percent", "arm"], columns=["test_set", "label"], values="text",
                         aggfunc="first")
    return wide.droplevel(["kind", "source", "percent"])


# ------------------------------------------------------------------------------------------------
# Paired contrasts over training seeds (what the verdicts read)
# ------------------------------------------------------------------------------------------------


def source_arms(arm_table: pd.DataFrame, kind: str, percent: int, source_kind: str | None = R_ONLY,
                source: str | None = None) -> list[str]:
    """Arm names of ``kind`` at ``percent`` for the sources of ``source_kind`` (or one ``source``)."""
    t = arm_table[(arm_table.kind == kind) & (arm_table.percent == percent)]
    if source is not None:
        t = t[t.source == source]
    elif source_kind is not None:
        t = t[t.source_kind == source_kind]
    return list(t.arm)


def contrasts(results: pd.DataFrame, arm_table: pd.DataFrame, test_set: str = "internal") -> pd.DataFrame:
    """Macro AUROC contrasts paired by training seed (:func:`cxrlib.verdicts.paired_contrast`: mean
    difference, 95 % t-interval and paired t-test over seeds), for every percentage and source: ``vs``
    = ``duplicates`` (real+synthetic p % − real+duplicates p %, the test of what the generator adds) and
    ``vs`` = ``real`` (real+synthetic p % − real). Per source, and for ``mean over R-only generators``
    (per seed the mean over the independently trained R-only generators: the primary contrast).
    Columns ``test_set, source, percent, vs, estimate, ci_low, ci_high, p, n_seeds, n_generators``."""
    from ..seed_contrasts import paired_contrast, with_mean_arm

    rows = []
    sup = arm_table[arm_table.kind == "real+synthetic"]
    dup = set(arm_table.loc[arm_table.kind == "real+duplicates", "percent"])
    groups = [(src, [src]) for src in dict.fromkeys(sup.source)]
    r_only = [s for s in dict.fromkeys(sup.source) if source_kind(s) == R_ONLY]
    if len(r_only) > 1:
        groups.append((MEAN_R_ONLY, r_only))
    for p in sorted(set(sup.percent)):
        for label, srcs in groups:
            arms = [a for src in srcs for a in source_arms(arm_table, "real+synthetic", p, source=src)]
            res, arm = with_mean_arm(results, arms, label) if len(arms) > 1 else (results, arms[0])
            for vs, ref in (("duplicates", arm_name("real+duplicates", p) if p in dup else None), ("real", "real")):
                if ref is None:
                    continue
                ev = paired_contrast(res, arm, ref, "auroc", test_set=test_set)
                rows.append(dict(test_set=test_set, source=label, percent=p, vs=vs, estimate=ev.estimate, ci_low=ev.ci_low,
                                 ci_high=ev.ci_high, p=ev.p, n_seeds=ev.n, n_generators=len(srcs)))
    return pd.DataFrame(rows, columns=["test_set", "source", "percent", "vs", "estimate", "ci_low", "ci_high", "p",
                                       "n_seeds", "n_generators"])


def mixing_summary(results: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The mixing arms per test set: macro AUROC (mean over seeds) and the paired contrasts of the
    mixed arm against the site's real images alone and against its duplicates control (95 % t-interval
    and paired t-test over seeds)."""
    from ..seed_contrasts import paired_contrast

    names = table.set_index("kind")["arm"]
    rows = []
    for t in dict.fromkeys(results.test_set):
        for kind in MIXING_KINDS:
            vals = results[(results.test_set == t) & (results.arm == names[kind]) & (results.metric == "auroc") &
                           (results.label == "macro") & (results.seed.astype(str) != "pooled")]["estimate"]
            row = dict(test_set=t, arm=names[kind], auroc=float(vals.mean()) if len(vals) else np.nan)
            if kind == "site real+synthetic":
                for vs in ("site real", "site real+duplicates"):
                    ev = paired_contrast(results, names[kind], names[vs], "auroc", test_set=t)
                    tag = "real" if vs == "site real" else "duplicates"
                    ci = f"[{ev.ci_low:+.3f}, {ev.ci_high:+.3f}]" if np.isfinite(ev.ci_low) else "(one seed: no interval)"
                    row.update({f"vs_{tag}": ev.estimate, f"vs_{tag}_ci": ci, f"vs_{tag}_p": ev.p})
            rows.append(row)
    return pd.DataFrame(rows)


def plan_jobs(cfg: Config, data) -> list:
    """The jobs of a run of this chapter (``cxr run --plan``, :mod:`cxrlib.plan`): the generator sources,
    their synthetic streams and every arm x seed of the main grid, the mixing arms and the regime map,
    with the arms assembled by :func:`build_arms`, :func:`mixing_arms` and the regime map's rule on
    stand-in sets. Work the regime map shares with the main grid (R_f = R) is counted once."""
    from ..plan import Job, classifier_jobs, evaluations, stand_in
    from .regime import arm_name as regime_arm

    sizes, n, size, nfe = data.sizes, data.sizes["train"], cfg.image_size, evaluations(cfg.sampler_steps, cfg.guidance)
    jobs = [Job("generator", f"{R_ONLY} {k + 1}: conditional DDPM on R, seed {cfg.seed + k}", cfg.gen_steps,
                cfg.gen_batch_size, size, "generator", n, shared=f"main generator {k}" if k else "main generator")
            for k in range(cfg.n_generators)]
    if cfg.pool_pretrained:
        jobs.append(Job("generator", "unconditional DDPM pretrained on the pool", cfg.gen_steps, cfg.gen_batch_size, size,
                        "generator", sizes["pool"], shared="pool-pretrained generator"))
        jobs.append(Job("generator", f"{POOL}: fine-tuned on R", cfg.ft_steps, cfg.gen_batch_size, size, "generator", n))
    streams = {s: stand_in(synthetic_needed(cfg, n, source=s)) for s in source_names(cfg)}
    jobs += [Job("sampling", f"{s} stream", nfe, len(d), size, "generator", len(d)) for s, d in streams.items()]
    _, table = build_arms(cfg, stand_in(n), streams)
    tests = sizes["test"] + (sum(v for k, v in sizes.items() if k.startswith("external ")) if cfg.evaluate_external else 0)
    jobs += classifier_jobs(cfg, dict(zip(table.arm, table.n_train)), sizes, tests, real="real")
    if cfg.mixing_site:
        _, mix = mixing_arms(cfg, stand_in(n), streams[f"{R_ONLY} 1"])
        jobs += classifier_jobs(cfg, dict(zip(mix.arm, mix.n_train)), sizes, sizes["test"])
    for f in sorted(cfg.regime_fractions):
        shared = abs(f - cfg.labeled_fraction) < 1e-9  # R_f is R: the main grid's generator, stream and arms
        n_f, arms = data.labeled(f), {}
        if not shared:
            jobs.append(Job("generator", f"{POOL}: fine-tuned on R{f:.0%}", cfg.ft_steps, cfg.gen_batch_size, size, "generator", n_f))
            m = n_images(max(cfg.regime_percents), n_f)
            jobs.append(Job("sampling", f"{POOL} stream of R{f:.0%}", nfe, m, size, "generator", m))
            arms[regime_arm(f, "real")] = n_f
        for p in sorted(cfg.regime_percents):
            if not (shared and p in cfg.supplement_percents):
                arms[regime_arm(f, "synthetic", p)] = n_f + n_images(p, n_f)
            if not (shared and p in cfg.duplicate_percents):
                arms[regime_arm(f, "duplicates", p)] = n_f + n_images(p, n_f)
        jobs += classifier_jobs(cfg, arms, sizes, sizes["test"])
    return jobs
