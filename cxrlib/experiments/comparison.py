"""Experiment 7 — Generator comparison (Schaudt et al. 2023, Bioengineering 10:1421).

Schaudt et al. trained five generators on 1 082 pneumonia radiographs (per-class DDPMs, Stable
Diffusion fine-tuned fully, with LoRA and with DreamBooth, and a GAN), added 100-1 000 synthetic
images per class to the training set of five classifiers (EfficientNet-B0/B1, ResNet-50,
ConvNeXt-T/S; 5 repeats) and found that (1) the GAN had the best image quality, yet (2) quality did
not translate into downstream gain (a negative correlation), and (3) only the DreamBooth model raised
overall accuracy (+0.52 points).

Here, on the study's labeled real set R, four generators of different families:

=========== ===============================================================================================
``gan``     the label-conditional GAN of :mod:`cxrlib.generators.gan`, trained on R
``ddpm``    the study's conditional pixel DDPM (:func:`synthetic.main_generator`, shared with chapters 2-6)
``ldm``     the latent diffusion model of :mod:`cxrlib.generators.latent` (autoencoder + latent UNet), trained
            on R (shared with chapter 8)
``fewshot`` the DreamBooth analogue: the study's *unconditional* DDPM pretrained on the unlabeled pool
            (:func:`synthetic.pretrained_generator`, shared with chapter 4) fine-tuned conditionally on only
            ``fewshot_k`` labeled images per label (and ``fewshot_k`` images with no study finding)
=========== ===============================================================================================

Each generator makes a balanced synthetic set (image *k* positive for label ``k mod L``, the other
labels and demographics from a real R row with that finding); the first ``a · L`` images are the
"``a`` per label" set, for each amount ``a`` of ``amounts``. Quality: FD / KID / precision / recall /
density / coverage in the study feature space against held-out real test images, and the oracle's
label consistency (:mod:`cxrlib.fidelity`). Utility: classifiers trained on R + each set vs on R
alone, for several architectures and seeds; AUROC differences with DeLong / bootstrap p-values per
seed and paired-seed t-tests over seeds (:mod:`cxrlib.stats`).

The generators are trained and sampled by :mod:`.generator_families`; the latent-diffusion recipe lives in
:class:`~.generator_families.LatentRecipe` (fields ``ldm_*``), which chapter 8's
config also extends, so both chapters train the same model and share it through the cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..data.base import ArrayDataset, CXRDataset
from ..utils import derive_seed
from . import common, synthetic
from .common import RealSets, merge_profiles, subset
from .generator_families import (LDM_PROFILES, LatentRecipe, fewshot_generator, gan_generator,
                                 generated_set, latent_generator)

GENERATORS = ("gan", "ddpm", "ldm", "fewshot")
GENERATOR_TITLES = {"gan": "GAN", "ddpm": "pixel DDPM", "ldm": "latent diffusion", "fewshot": "few-shot fine-tuned DDPM"}

@dataclasses.dataclass(frozen=True)
class Config(LatentRecipe):
    NAME: ClassVar[str] = "comparison"
    generators: tuple[str, ...] = GENERATORS  # compared generators (gan | ddpm | ldm | fewshot)
    amounts: tuple[int, ...] = (30, 90)  # synthetic images per label added to R (Schaudt: 100-1000 per class)
    clf_archs: tuple[str, ...] = ("small_cnn", "resnet18")  # downstream classifiers
    arch_epochs: tuple[int, ...] | None = (5, 2)  # epochs per architecture (None: clf_epochs for all); only when clf_steps is None
    arch_seeds: tuple[int, ...] | None = (2, 1)  # training seeds per architecture (None: n_seeds for all)
    arch_amounts: tuple[int, ...] | None = (2, 1)  # how many of the largest amounts each architecture uses (None: all)
    test_sets: tuple[str, ...] = ("internal",)  # internal and/or external sites (nih, padchest)
    # GAN (cxrlib.generators.gan)
    gan_g_channels: tuple[int, ...] = (128, 64, 32, 16)  # generator widths at 4x4 ... image_size
    gan_d_channels: tuple[int, ...] = (32, 64, 128)  # discriminator widths at image_size/2 ... 4x4
    gan_steps: int = 600
    gan_batch_size: int = 32
    gan_lr_g: float = 2e-4
    gan_lr_d: float = 4e-4
    gan_ema_decay: float = 0.99
    # few-shot fine-tuning (DreamBooth analogue)
    fewshot_k: int = 5  # labeled images per label (plus k with no finding)
    fewshot_steps: int = 150  # fine-tuning steps
    fewshot_batch_size: int = 16
    fewshot_lr: float = 2e-4  # lower than from scratch: adapt, don't forget the pretrained prior
    # fidelity and figures
    n_fidelity_real: int = 1000  # held-out real test images as the FD/KID/PRDC reference
    n_grid: int = 6  # samples per row of the sample grid

    PROFILES: ClassVar = merge_profiles({
        # one classifier at smoke (the multi-architecture path is unit-tested; ResNet-18 alone would take most of the budget)
        "smoke": dict(LDM_PROFILES["smoke"], amounts=(4, 8), clf_archs=("small_cnn",), arch_epochs=(1,), arch_seeds=(1,),
                      arch_amounts=(2,), gan_g_channels=(32, 16, 16, 8), gan_d_channels=(8, 16, 32), gan_steps=20,
                      gan_batch_size=16, fewshot_k=3, fewshot_steps=6, fewshot_batch_size=8, n_fidelity_real=100, n_grid=3),
        # cpu (the hour book): GAN, DDPM and LDM at Schaudt's smallest amount (100 per class), small_cnn, 3 seeds;
        # cpu-full: the few-shot model (needs the pool pretraining), 100 and 300 per class, the second classifier
        "cpu": dict(LDM_PROFILES["cpu"], sampler_steps=10, amounts=(100,), generators=("gan", "ddpm", "ldm"),
                    clf_archs=("small_cnn",), arch_epochs=(5,), arch_seeds=(3,), arch_amounts=(1,)),
        "cpu-full": dict(amounts=(100, 300), generators=GENERATORS, clf_archs=("small_cnn", "resnet18"), arch_epochs=(5, 2), arch_seeds=(5, 3),
                         arch_amounts=(2, 1)),
        "paper": dict(LDM_PROFILES["paper"], amounts=(100, 250, 500, 1000),
                      clf_archs=("efficientnet_b0", "resnet50", "convnext_tiny"), arch_epochs=None, arch_seeds=None,
                      arch_amounts=None, n_seeds=5, gan_g_channels=(512, 512, 256, 256, 128, 64, 32),
                      gan_d_channels=(32, 64, 128, 256, 512, 512), gan_steps=100_000, gan_batch_size=64, gan_lr_g=1e-4,
                      gan_ema_decay=0.9999, fewshot_k=20, fewshot_steps=2000, fewshot_batch_size=8, fewshot_lr=5e-5,
                      n_fidelity_real=5000),
    })

    def validate(self) -> None:
        super().validate()
        bad = [g for g in self.generators if g not in GENERATORS]
        if bad or not self.generators:
            raise ConfigError(f"parameter 'generators': {bad or 'empty'}; expected a non-empty subset of {list(GENERATORS)}")
        if not self.amounts or any(a < 1 for a in self.amounts):
            raise ConfigError(f"parameter 'amounts': expected positive numbers of images per label, got {self.amounts}")
        from ..models.classifiers import CLASSIFIER_ARCHS

        bad = [a for a in self.clf_archs if a not in CLASSIFIER_ARCHS]
        if bad or not self.clf_archs:
            raise ConfigError(f"parameter 'clf_archs': {bad or 'empty'}; expected names from {list(CLASSIFIER_ARCHS)}")
        for name in ("arch_epochs", "arch_seeds", "arch_amounts"):
            v = getattr(self, name)
            if v is not None and (len(v) != len(self.clf_archs) or any(x < 1 for x in v)):
                raise ConfigError(f"parameter {name!r}: expected one positive number per architecture {self.clf_archs}, got {v}")
        if self.arch_amounts is not None and max(self.arch_amounts) > len(self.amounts):
            raise ConfigError(f"parameter 'arch_amounts': at most len(amounts)={len(self.amounts)}, got {self.arch_amounts}")
        sites = list(common.external_sites(self))
        bad = [t for t in self.test_sets if t != "internal" and t not in sites]
        if bad:
            raise ConfigError(f"parameter 'test_sets': {bad} are neither 'internal' nor among the external sites {sites}")
        if self.fewshot_k < 1:
            raise ConfigError(f"parameter 'fewshot_k': must be >= 1, got {self.fewshot_k}")
        if "gan" in self.generators:
            levels = np.log2(self.image_size / 4)
            if levels != int(levels) or levels < 1 or len(self.gan_g_channels) != levels + 1 or len(self.gan_d_channels) != levels:
                raise ConfigError(f"parameters 'image_size'/'gan_g_channels'/'gan_d_channels': the GAN needs a power-of-two "
                                  f"image_size >= 8 with log2(image_size/4)+1 generator and log2(image_size/4) discriminator "
                                  f"widths; got image_size={self.image_size}, {self.gan_g_channels}, {self.gan_d_channels}")

    def arch_plan(self) -> pd.DataFrame:
        """One row per classifier architecture: ``arch, epochs, seeds, amounts`` (the amounts it trains with)."""
        amounts = sorted(self.amounts)
        rows = []
        for i, arch in enumerate(self.clf_archs):
            k = self.arch_amounts[i] if self.arch_amounts is not None else len(amounts)
            rows.append({"arch": arch, "epochs": self.arch_epochs[i] if self.arch_epochs is not None else self.clf_epochs,
                         "seeds": self.arch_seeds[i] if self.arch_seeds is not None else self.n_seeds,
                         "amounts": tuple(amounts[-k:])})
        return pd.DataFrame(rows)


def train_generators(cfg: Config, sets: RealSets, progress: bool = True) -> dict[str, Path]:
    """``{generator: finished model folder}`` for ``cfg.generators`` (each trained or fetched from the cache)."""
    build = {"gan": gan_generator, "ldm": latent_generator, "fewshot": fewshot_generator,
             "ddpm": synthetic.main_generator}
    return {g: Path(build[g](cfg, sets, progress=progress)) for g in cfg.generators}


def training_curves(generators: Mapping[str, Path]) -> pd.DataFrame:
    """The training logs of the generators (``generator, step, series, value``) from their cache entries."""
    parts = []
    for g, model_dir in generators.items():
        for log in sorted(Path(model_dir).parent.glob("*log.csv")):
            df = pd.read_csv(log)
            value_cols = [c for c in df.columns if c not in ("step", "lr", "images_per_s")]
            long = df.melt(id_vars="step", value_vars=value_cols, var_name="series", value_name="value")
            prefix = "autoencoder " if log.name.startswith("autoencoder") else ""
            parts.append(long.assign(generator=g, series=prefix + long["series"]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["generator", "step", "series", "value"])


def synthetic_sets(cfg: Config, generators: Mapping[str, Path], sets: RealSets, progress: bool = True) -> dict[str, ArrayDataset]:
    """One balanced set of ``max(amounts) · L`` images per generator, all with the same conditions
    (:func:`cxrlib.generators.conditions.balanced_conditions` over R): ``{generator: dataset}``. The first ``a · L``
    images hold exactly ``a`` images per label."""
    from ..generators.conditions import balanced_conditions
    n = max(cfg.amounts) * len(cfg.labels)
    cond = balanced_conditions(sets.train, n, label_names=cfg.labels, seed=derive_seed(cfg.seed, "comparison-conditions") % 2**31)
    return {g: generated_set(cfg, d, cond, name=f"comparison-{g}", progress=progress) for g, d in generators.items()}


def sample_grid(cfg: Config, generators: Mapping[str, Path], n_per: int = 4, progress: bool = False):
    """Images ``[L + 1, G · n_per]`` (uint8; rows: each label alone, then no finding; a block of
    ``n_per`` columns per generator), row names and column names, sampled with the same per-image
    seeds for every generator."""
    import torch

    from ..generators.conditions import explicit_conditions
    L = len(cfg.labels)
    y = np.concatenate([np.repeat(np.eye(L), n_per, axis=0), np.zeros((n_per, L))])
    cond = explicit_conditions(y, label_names=cfg.labels)
    blocks, cols = [], []
    for g, d in generators.items():
        ds = generated_set(cfg, d, cond, name=f"comparison-grid-{g}", seed=derive_seed(cfg.seed, "grid") % 2**31, progress=progress)
        x = ds.to_tensors()[0][:, 0]
        blocks.append(x.reshape(L + 1, n_per, *x.shape[1:]))
        cols += [GENERATOR_TITLES.get(g, g) if k == 0 else "" for k in range(n_per)]
    return torch.cat(blocks, dim=1).numpy(), [*cfg.labels, "no finding"], cols


# ------------------------------------------------------------------------------------------------
# Quality
# ------------------------------------------------------------------------------------------------
def quality(cfg: Config, syn: Mapping[str, CXRDataset], sets: RealSets, progress: bool = True) -> pd.DataFrame:
    """The fidelity report of each generator's full set against ``n_fidelity_real`` held-out test
    images, in the study feature space (the shared oracle's penultimate layer), with the oracle's label
    consistency (per label) and the overall distribution metrics (the per-label PRDC/KID/MS-SSIM rows are
    skipped: a few hundred images per label are too few for them): :func:`cxrlib.fidelity.fidelity_report`
    rows plus a ``generator`` column."""
    import warnings

    from ..classify import predict
    from ..fidelity import SmallSampleWarning, extract_features, fidelity_report, study_extractor

    oracle = common.oracle(cfg, sets, progress=progress)
    extractor = study_extractor(oracle)
    real = subset(sets.test, min(cfg.n_fidelity_real, len(sets.test)))
    x_real, y_real, _ = real.to_tensors()
    cols = [list(real.label_names).index(l) for l in cfg.labels]
    y_real = y_real[:, cols].numpy()
    x_train = sets.train.to_tensors()[0]
    f_real = extract_features(extractor, x_real, device=cfg.device)
    f_train = extract_features(extractor, x_train, device=cfg.device)
    parts = []
    for g, ds in syn.items():
        x_syn, y_syn, m_syn = ds.to_tensors()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallSampleWarning)  # the n of every row is in the table
            rep = fidelity_report(x_real, y_real, x_syn, y_syn.numpy(), extractor, label_names=cfg.labels, train_images=x_train,
                                  oracle_scores=predict(oracle, x_syn, device=cfg.device), syn_label_mask=m_syn.numpy(),
                                  real_features=f_real, train_features=f_train, per_label=False,
                                  n_boot=min(cfg.n_boot, 200), ms_ssim_pairs=300, device=cfg.device, seed=cfg.seed)
        parts.append(rep.assign(generator=g))
    return pd.concat(parts, ignore_index=True)


def quality_table(q: pd.DataFrame) -> pd.DataFrame:
    """One row per generator: the overall quality metrics (FD with CI, KID, precision, recall, density,
    coverage, label AUROC, memorized fraction in feature space) and the quality rank by FD (1 = best)."""
    a = q[q.label == "all"]
    wide = a.pivot_table(index="generator", columns="metric", values="value", aggfunc="first", sort=False)
    keep = [m for m in ("fd", "kid", "precision", "recall", "density", "coverage", "label_auroc", "memorized_fraction_feature")
            if m in wide.columns]
    out = wide[keep].copy()
    fd = a[a.metric == "fd"].set_index("generator")
    out.insert(1, "fd_ci_low", fd["ci_low"])
    out.insert(2, "fd_ci_high", fd["ci_high"])
    out["quality_rank"] = out["fd"].rank(method="min").astype(int)
    return out.reset_index()


# ------------------------------------------------------------------------------------------------
# Utility
# ------------------------------------------------------------------------------------------------
def arm_name(generator: str, amount: int) -> str:
    return f"{generator} +{amount}/label"


def downstream(cfg: Config, syn: Mapping[str, CXRDataset], sets: RealSets, progress: bool = True) -> pd.DataFrame:
    """Train every architecture of :meth:`Config.arch_plan` on R (arm ``real``) and on R + the first
    ``a · L`` images of each generator's set (arm ``<generator> +<a>/label``), for its seeds; evaluate on
    ``test_sets``. The standard results table (:func:`common.evaluate_arms`) with ``arch``, ``generator``
    (``real`` for the reference) and ``amount`` (0 for the reference) columns."""
    L = len(cfg.labels)
    tests = {"internal": sets.test, **{s: sets.external[s] for s in cfg.test_sets if s != "internal"}}
    parts = []
    for plan in cfg.arch_plan().itertuples():
        arms: dict[str, list] = {"real": [sets.train]}
        meta = {"real": ("real", 0)}
        for g, ds in syn.items():
            for a in plan.amounts:
                arms[arm_name(g, a)] = [sets.train, subset(ds, a * L, name=f"{ds.name}[:{a}/label]")]
                meta[arm_name(g, a)] = (g, a)
        acfg = cfg.replace(clf_arch=plan.arch, clf_epochs=int(plan.epochs), n_seeds=int(plan.seeds))
        res = common.evaluate_arms(acfg, arms, sets, reference="real", test_sets=tests, progress=progress)
        res["arch"] = plan.arch
        res["generator"] = res["arm"].map(lambda a: meta[a][0])
        res["amount"] = res["arm"].map(lambda a: meta[a][1])
        parts.append(res)
    return pd.concat(parts, ignore_index=True)


def gains(results: pd.DataFrame, metric: str = "auroc", label: str = "macro", test_set: str = "internal") -> pd.DataFrame:
    """The downstream gain of each (arch, generator, amount) over the real-only arm:
    ``arch, generator, amount, n_seeds, real, arm, gain, gain_sd, gain_ci_low, gain_ci_high, p_value, test,
    seeds_significant, p_adj``.

    ``gain`` is the mean over seeds of (arm − real) on the same test images. For AUROC the per-seed
    difference is the ``auroc_diff`` row (its p-value: DeLong for one label, the paired bootstrap for
    ``macro``); with ≥ 2 seeds the interval is the t-interval over seeds and the p-value a one-sample
    t-test of the per-seed differences (the paired-seed test). Other metrics: per-seed differences of
    the estimates, and the p-value of the arm's row (McNemar or bootstrap; one seed) or the paired-seed
    t-test (several). ``seeds_significant`` counts the seeds whose own test (DeLong / bootstrap /
    McNemar) shows a positive difference at p < 0.05; ``p_adj`` is ``p_value`` Holm-adjusted over the rows."""
    from ..stats import paired_seed_test, seed_summary

    r = results[(results.label == label) & (results.test_set == test_set) & (results.seed.astype(str) != "pooled")]
    rows = []
    for (arch, arm), g in r.groupby(["arch", "arm"], sort=False):
        if arm == "real":
            continue
        ref = r[(r.arch == arch) & (r.arm == "real") & (r.metric == metric)].set_index("seed")["estimate"]
        est = g[g.metric == metric].set_index("seed")
        if metric == "auroc":
            diffs = g[g.metric == "auroc_diff"].set_index("seed")
            d = diffs["estimate"].reindex(est.index).to_numpy(float)
            p_single, test_single = diffs["p_value"], diffs["test"]
        else:
            d = (est["estimate"] - ref.reindex(est.index)).to_numpy(float)
            p_single, test_single = est["p_value"], est["test"]
        s = seed_summary(d)
        per_seed_p = p_single.reindex(est.index).to_numpy(float)
        n_sig = int(((d > 0) & (per_seed_p < 0.05)).sum())
        if len(d) >= 2:
            p, test = paired_seed_test(d, np.zeros_like(d))["p_value"], "paired-seed t"
            lo, hi = s["ci_low"], s["ci_high"]
        else:
            p, test = float(p_single.iloc[0]), str(test_single.iloc[0])
            lo = hi = np.nan
            if metric == "auroc":
                lo, hi = g[g.metric == "auroc_diff"][["ci_low", "ci_high"]].iloc[0]
        rows.append({"arch": arch, "generator": g["generator"].iloc[0], "amount": int(g["amount"].iloc[0]), "n_seeds": len(d),
                     "real": float(ref.mean()), "arm": float(est["estimate"].mean()), "gain": s["mean"],
                     "gain_sd": s["sd"], "gain_ci_low": lo, "gain_ci_high": hi, "p_value": p, "test": test,
                     "seeds_significant": n_sig})
    out = pd.DataFrame(rows)
    if len(out):
        from ..stats import adjust_pvalues

        ok = out["p_value"].notna()
        out["p_adj"] = np.nan
        out.loc[ok, "p_adj"] = adjust_pvalues(out.loc[ok, "p_value"].to_numpy(), "holm")
    return out


def reproduction(qtab: pd.DataFrame, gain_table: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Schaudt's three findings, judged on the computed numbers.

    * ``best_quality``: the generator with the lowest FD; ``best_gain``: the one with the largest mean
      gain over all architectures and amounts; finding 1 holds if they differ.
    * ``spearman_quality_gain``: Spearman ρ between quality (−FD) and mean gain over the generators
      (Schaudt: negative); with 4 generators it is a direction, not a test.
    * ``improving``: generators with at least one (arch, amount) whose gain is positive with Holm-adjusted
      p < ``alpha``; finding 3 ("only the few-shot model improves accuracy") holds if that is exactly ``fewshot``.
    """
    from scipy.stats import spearmanr

    mean_gain = gain_table.groupby("generator")["gain"].mean()
    q = qtab.set_index("generator")
    gens = [g for g in q.index if g in mean_gain.index]
    best_quality = q.loc[gens, "fd"].idxmin()
    best_gain = mean_gain.loc[gens].idxmax()
    rho = spearmanr(-q.loc[gens, "fd"], mean_gain.loc[gens]).statistic if len(gens) >= 3 else np.nan
    sig = gain_table[(gain_table.gain > 0) & (gain_table.p_adj < alpha)]
    improving = sorted(sig["generator"].unique())
    return {"best_quality": best_quality, "best_gain": best_gain, "finding1": best_quality != best_gain,
            "spearman_quality_gain": float(rho), "finding2": bool(rho < 0) if np.isfinite(rho) else None,
            "mean_gain": mean_gain.loc[gens].to_dict(), "improving": improving, "finding3": improving == ["fewshot"],
            "fewshot_in_comparison": "fewshot" in gens}


def label_changes(results: pd.DataFrame, metrics=("sensitivity", "f1"), test_set: str = "internal") -> pd.DataFrame:
    """Per-label change of class-specific metrics (Schaudt: rebalancing lifts recall/F1 of rare classes):
    mean over seeds of (arm − real), one row per arch, generator, amount, label, metric."""
    r = results[(results.test_set == test_set) & (results.seed.astype(str) != "pooled") & results.metric.isin(metrics)
                & ~results.label.isin(["macro", "micro"])]
    ref = r[r.arm == "real"].set_index(["arch", "seed", "label", "metric"])["estimate"]
    x = r[r.arm != "real"].copy()
    x["change"] = x["estimate"].to_numpy() - ref.reindex(pd.MultiIndex.from_frame(x[["arch", "seed", "label", "metric"]])).to_numpy()
    return x.groupby(["arch", "generator", "amount", "label", "metric"], sort=False)["change"].mean().reset_index()


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def plot_training_curves(curves: pd.DataFrame):
    import matplotlib.pyplot as plt

    series = curves.groupby(["generator", "series"], sort=False).size().index.tolist()
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3), squeeze=False)
    for ax, (g, s) in zip(axes[0], series):
        d = curves[(curves.generator == g) & (curves.series == s)]
        ax.plot(d["step"], d["value"], lw=1)
        ax.set_title(f"{g}: {s}", fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def plot_quality_vs_gain(qtab: pd.DataFrame, gain_table: pd.DataFrame):
    """FD (quality; lower = better) against downstream gain per generator, one panel per architecture."""
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(gain_table["arch"]))
    fig, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 4), squeeze=False)
    fd = qtab.set_index("generator")["fd"]
    colors = dict(zip(GENERATORS, plt.cm.tab10.colors))
    for ax, arch in zip(axes[0], archs):
        d = gain_table[gain_table.arch == arch]
        for g, gg in d.groupby("generator", sort=False):
            for r in gg.itertuples():
                yerr = None if np.isnan(r.gain_ci_low) else [[r.gain - r.gain_ci_low], [r.gain_ci_high - r.gain]]
                ax.errorbar(fd[g], r.gain, yerr=yerr, fmt="o", ms=4 + 6 * r.amount / d["amount"].max(), color=colors[g],
                            capsize=3, alpha=0.85, label=f"{g} +{r.amount}/label")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel("FD to real test images (study features; lower = higher quality)")
        ax.set_ylabel("macro-AUROC gain over real only")
        ax.set_title(arch)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_gain_by_amount(gain_table: pd.DataFrame):
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(gain_table["arch"]))
    fig, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 3.8), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        d = gain_table[gain_table.arch == arch]
        for g, gg in d.groupby("generator", sort=False):
            gg = gg.sort_values("amount")
            yerr = None if gg["gain_ci_low"].isna().all() else [gg["gain"] - gg["gain_ci_low"], gg["gain_ci_high"] - gg["gain"]]
            ax.errorbar(gg["amount"], gg["gain"], yerr=yerr, marker="o", capsize=3, label=GENERATOR_TITLES.get(g, g))
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel("synthetic images per label added to R")
        ax.set_ylabel("macro-AUROC gain over real only")
        ax.set_title(arch)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# The cost plan (cxr run --plan, cxrlib.plan)
# ------------------------------------------------------------------------------------------------
def plan_jobs(cfg: Config, data) -> list:
    """The jobs of a run of this chapter (``cxr run --plan``, :mod:`cxrlib.plan`), as the notebook makes them:
    the generators of :func:`train_generators` (the pixel DDPM is the main generator, the few-shot model
    fine-tunes the pool-pretrained generator on :func:`few_shot_subset` of R's real labels, the latent model is
    shared with chapter 8), each one's :func:`sample_grid` and :func:`synthetic_sets` samples (a GAN image is
    one forward pass), every architecture x arm x seed of :func:`downstream` and the oracle of :func:`quality`."""
    from ..plan import Job, classifier_jobs, oracle_job
    from .generator_families import family_flops, few_shot_subset, latent_jobs, network_evaluations, sampling_flops

    sizes, n, size, L = data.sizes, data.sizes["train"], cfg.image_size, len(cfg.labels)
    jobs = []
    for g in cfg.generators:
        if g == "gan":
            jobs.append(Job("generator", "gan: label-conditional GAN on R", cfg.gan_steps, cfg.gan_batch_size, size,
                            "generator", n, step_flops=family_flops(cfg, "gan")[0]))
        elif g == "ddpm":
            jobs.append(Job("generator", "ddpm: conditional DDPM on R (the main generator)", cfg.gen_steps,
                            cfg.gen_batch_size, size, "generator", n, shared="main generator"))
        elif g == "ldm":
            jobs += latent_jobs(cfg, n)
        else:
            few = len(few_shot_subset(data.real(), cfg.labels, cfg.fewshot_k, cfg.seed))
            jobs.append(Job("generator", "unconditional DDPM pretrained on the pool", cfg.gen_steps, cfg.gen_batch_size,
                            size, "generator", sizes["pool"], shared="pool-pretrained generator"))
            jobs.append(Job("generator", f"fewshot: the pretrained DDPM fine-tuned on {few} images of R", cfg.fewshot_steps,
                            cfg.fewshot_batch_size, size, "generator", few))
    kind = {"gan": "gan", "ldm": "latent-diffusion"}
    for g in cfg.generators:
        nfe = network_evaluations(cfg, kind.get(g, "ddpm"))
        flops = sampling_flops(cfg, kind.get(g, "ddpm"), nfe)
        for what, m in (("sample grid", (L + 1) * cfg.n_grid), ("synthetic set", max(cfg.amounts) * L)):
            jobs.append(Job("sampling", f"{g}: {what}", nfe, m, size, "generator", m, step_flops=flops))
    tests = sizes["test"] + sum(sizes[f"external {s}"] for s in cfg.test_sets if s != "internal")
    for row in cfg.arch_plan().itertuples():
        acfg = cfg.replace(clf_arch=row.arch, clf_epochs=int(row.epochs), n_seeds=int(row.seeds))
        arms = {"real": n, **{arm_name(g, a): n + a * L for g in cfg.generators for a in row.amounts}}
        jobs += [dataclasses.replace(j, name=f"{row.arch}: {j.name}") for j in classifier_jobs(acfg, arms, sizes, tests, real="real")]
    return jobs + [oracle_job(cfg, sizes)]
