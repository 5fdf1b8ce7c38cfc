"""Experiment 8 — Image-to-image minority synthesis (Rajaraman et al. 2024, IEEE BIBM).

Rajaraman et al. fine-tuned text-guided image-to-image latent diffusion models (one per disease) to
turn *normal* pediatric radiographs into pneumonia / bronchopneumonia ones, added them to the
class-imbalanced training (and validation) sets of an Inception-V3, and reported balanced accuracy,
sensitivity, specificity, F-score, MCC, κ and Youden's index against the baseline: the augmentation
significantly improved Youden's index (p < 0.05).

Here the study's conditional latent diffusion model (:func:`generator_families.latent_generator`, trained on
R and shared with chapter 7) translates images of R with **no study finding** into images of the
**minority label** (``minority_label``; the condition is the source's with that label set to 1 and
every other label 0, sex and age kept) by SDEdit (:func:`cxrlib.generators.latent_sampling.sample_latent`):

1. a strength sweep: grids source -> translation, how far the translation moves from its source
   (mean absolute pixel change) and whether it carries the label: the shared oracle's probability of
   the minority label, and the AUROC of that probability between each translation and its *control*
   (the same source, strength and noise translated under the normal condition);
2. R + the translations at each strength of ``arm_strengths`` vs R alone, and vs R + the *control*
   translations (the control arm: as many images through the same encoder and sampler, without the
   finding), on Rajaraman's binary task (``task = "binary"``: normal vs the minority label, one
   output, R/val/test reduced to normal or minority-positive images) or on every study label
   (``"multilabel"``): the minority label's balanced accuracy, sensitivity, specificity, F1, MCC, κ and
   Youden's J (thresholds by ``threshold_policy`` on the validation set) with patient-level bootstrap
   CIs and p-values (McNemar for sensitivity/specificity, paired bootstrap otherwise;
   :mod:`cxrlib.stats`), plus AUROC with DeLong, for each seed; the verdicts pair the seeds.

Unlike Rajaraman (one model per class, a text prompt, pretrained Stable Diffusion), the condition is
the study's label vector and the model is trained from scratch on R; the translated images join the
training set only (validation stays real, so thresholds are chosen on real images).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..data.base import ArrayDataset, CXRDataset
from ..utils import derive_seed
from . import common
from .common import RealSets, merge_profiles
from .generator_families import LDM_PROFILES, LatentRecipe, generated_set

# The minority metrics Rajaraman reports (cxrlib.metrics names), then AUROC.
REPORTED_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "f1", "mcc", "kappa", "youden", "auroc")


@dataclasses.dataclass(frozen=True)
class Config(LatentRecipe):
    NAME: ClassVar[str] = "img2img"
    minority_label: str = "Consolidation"  # the finding synthesized (the rarest of the competition labels in R)
    strengths: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)  # SDEdit strengths swept (grids, label consistency)
    arm_strengths: tuple[float, ...] = (0.5, 0.7)  # strengths whose translations are added to R to train classifiers
    n_translate: int = 300  # normal images of R translated (each once per strength)
    n_grid: int = 6  # sources shown in the grids
    # the downstream task: "binary" = Rajaraman's design, normal (every study label negative) vs the minority
    # label, one output; "multilabel" = every study label (the minority label's metrics are reported)
    task: str = "binary"

    PROFILES: ClassVar = merge_profiles({
        "smoke": dict(LDM_PROFILES["smoke"], minority_label="Cardiomegaly", strengths=(0.5, 0.9), arm_strengths=(0.9,),
                      n_translate=24, n_grid=3),
        # chapter 7's small_cnn recipe: with task multilabel (the same labels and R) the real-only arms are its cached ones
        "cpu": dict(LDM_PROFILES["cpu"], sampler_steps=10, clf_epochs=5, arm_strengths=(0.7,)),
        "cpu-full": dict(arm_strengths=(0.5, 0.7)),
        "paper": dict(LDM_PROFILES["paper"], minority_label="Consolidation", clf_arch="inception_v3", n_translate=2000),
    })

    def validate(self) -> None:
        super().validate()
        if self.minority_label not in self.labels:
            raise ConfigError(f"parameter 'minority_label': {self.minority_label!r} is not among labels {list(self.labels)}")
        bad = [s for s in (*self.strengths, *self.arm_strengths) if not 0.0 < s <= 1.0]
        if bad or not self.strengths:
            raise ConfigError(f"parameters 'strengths'/'arm_strengths': expected values in (0, 1], got {bad or 'none'}")
        missing = [s for s in self.arm_strengths if float(s) not in {float(t) for t in self.strengths}]
        if missing:  # downstream() trains on the translations at each arm strength: they must be made
            raise ConfigError(f"parameter 'arm_strengths': {missing} are not among strengths {list(self.strengths)}")
        if self.task not in ("binary", "multilabel"):
            raise ConfigError(f"parameter 'task': {self.task!r} is not one of binary, multilabel")
        if self.n_translate < 1 or self.n_grid < 1:
            raise ConfigError(f"parameters 'n_translate' and 'n_grid' must be >= 1, got {self.n_translate}, {self.n_grid}")


# ------------------------------------------------------------------------------------------------
# Sources and conditions
# ------------------------------------------------------------------------------------------------
def normal_sources(cfg: Config, sets: RealSets) -> ArrayDataset:
    """Up to ``n_translate`` images of R with every study label known and negative (a seeded draw)."""
    import torch

    from ..utils import torch_generator

    normal = np.flatnonzero(normal_mask(cfg, sets.train))
    if len(normal) == 0:
        raise ValueError(f"R ({sets.train.name}) has no image negative for every label of {list(cfg.labels)}")
    order = torch.randperm(len(normal), generator=torch_generator(derive_seed(cfg.seed, "img2img-sources"))).numpy()
    out = sets.train.subset(np.sort(normal[order[: cfg.n_translate]]))
    out.name = f"{sets.train.name}[normal]"
    return out


def normal_mask(cfg: Config, ds: CXRDataset) -> np.ndarray:
    """Images of ``ds`` with every study label known and negative (Rajaraman's *normal* class)."""
    y, m = ds.targets()
    cols = [list(ds.label_names).index(l) for l in cfg.labels]
    return ((y[:, cols] == 0) & m[:, cols]).all(axis=1)


def translation_conditions(cfg: Config, sources: CXRDataset, to_minority: bool = True) -> pd.DataFrame:
    """One row per source: the minority label 1 (``to_minority=False``: 0, the *control* translation
    that keeps the source normal), every other label 0, the source's sex and age, and ``source_row``
    (its index in ``sources``)."""
    from ..generators.conditions import explicit_conditions
    y = np.zeros((len(sources), len(cfg.labels)))
    y[:, list(cfg.labels).index(cfg.minority_label)] = 1.0 if to_minority else 0.0
    sex = [s if s in ("F", "M") else None for s in sources.meta["sex"]]
    cond = explicit_conditions(y, label_names=cfg.labels, sex=sex, age=sources.meta["age"].to_numpy(float))
    cond["source_row"] = np.arange(len(sources))
    return cond


def translations(cfg: Config, ldm_dir, sources: CXRDataset, strengths=None, control: bool = False,
                 progress: bool = True) -> dict[float, ArrayDataset]:
    """``{strength: translated set}`` (cached). Every strength, and the control, use the same per-image
    seeds, so image *i* starts from the same noise whatever the strength and condition.
    ``control=True``: the same translation under the normal condition (the source's own labels), which
    separates what the label does from what encoding, noising and denoising do to any image."""
    cond = translation_conditions(cfg, sources, to_minority=not control)
    seed = derive_seed(cfg.seed, "img2img", cfg.minority_label) % 2**31
    tag = "control" if control else cfg.minority_label
    out = {}
    for s in strengths if strengths is not None else cfg.strengths:
        out[float(s)] = generated_set(cfg, ldm_dir, cond, name=f"img2img-{tag}-s{s:g}", seed=seed,
                                      source=sources, strength=float(s), progress=progress)
    return out


def grid(cfg: Config, sources: CXRDataset, trans: dict[float, ArrayDataset], control: dict[float, ArrayDataset] | None = None):
    """Images ``[rows, n_grid]`` (uint8) and row names: the sources, their translation at each strength,
    and (if given) the control translation at the largest strength."""
    n = min(cfg.n_grid, len(sources))
    rows = [sources.to_tensors()[0][:n, 0].numpy()]
    names = ["source (no finding)"]
    for s, ds in trans.items():
        rows.append(ds.to_tensors()[0][:n, 0].numpy())
        names.append(f"{cfg.minority_label}, s={s:g}")
    if control:
        s = max(control)
        rows.append(control[s].to_tensors()[0][:n, 0].numpy())
        names.append(f"control (normal), s={s:g}")
    return np.stack(rows), names


# ------------------------------------------------------------------------------------------------
# Label consistency and distance to the source vs strength
# ------------------------------------------------------------------------------------------------
def consistency(cfg: Config, sets: RealSets, sources: CXRDataset, trans: dict[float, ArrayDataset],
                control: dict[float, ArrayDataset], progress: bool = True) -> pd.DataFrame:
    """Per strength (and ``0`` = the sources themselves): ``mean_abs_change`` (mean |translation − source|
    in [0, 1] units), the oracle's mean probability of the minority label and the mean of its highest
    other-label probability, the fraction of images the oracle calls minority-positive (thresholds by
    ``threshold_policy`` on val), the same for the ``control`` translations (``*_control``), and
    ``label_auroc``: the AUROC of the oracle's minority probability between each translation and its
    control (same source, strength and noise; only the condition differs) — 0.5 = the label is not carried.
    ``label_auroc_vs_source`` compares with the untouched sources instead (it also sees the blur and
    artefacts of encoding and denoising, so it overstates label carrying)."""
    from ..classify import predict
    from ..metrics import auroc, choose_thresholds

    oracle = common.oracle(cfg, sets, progress=progress)
    j = list(oracle.label_names).index(cfg.minority_label)
    others = [i for i, l in enumerate(oracle.label_names) if l in cfg.labels and l != cfg.minority_label]
    _, y_val, m_val = sets.val.to_tensors()
    vcols = [list(sets.val.label_names).index(l) for l in oracle.label_names]
    thr = choose_thresholds(y_val[:, vcols].numpy(), predict(oracle, sets.val, device=cfg.device), cfg.threshold_policy,
                            m_val[:, vcols].numpy())
    thr = np.asarray(thr, dtype=float).reshape(-1)
    x_src = sources.to_tensors()[0]
    p_src = predict(oracle, x_src, device=cfg.device)

    def auc(a, b):  # P(oracle score of a > of b): a labelled positive, b negative
        return auroc(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])

    rows = [{"strength": 0.0, "n": len(x_src), "mean_abs_change": 0.0, "p_minority": p_src[:, j].mean(),
             "p_other_max": p_src[:, others].max(axis=1).mean() if others else np.nan,
             "called_minority": (p_src[:, j] >= thr[j]).mean()}]
    for s, ds in trans.items():
        x, xc = ds.to_tensors()[0], control[s].to_tensors()[0]
        p, pc = predict(oracle, x, device=cfg.device), predict(oracle, xc, device=cfg.device)
        rows.append({"strength": s, "n": len(x), "mean_abs_change": (x.float() - x_src.float()).abs().mean().item() / 255,
                     "p_minority": p[:, j].mean(), "p_other_max": p[:, others].max(axis=1).mean() if others else np.nan,
                     "called_minority": (p[:, j] >= thr[j]).mean(), "p_minority_control": pc[:, j].mean(),
                     "called_minority_control": (pc[:, j] >= thr[j]).mean(), "label_auroc": auc(p[:, j], pc[:, j]),
                     "label_auroc_vs_source": auc(p[:, j], p_src[:, j])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Downstream: real vs real + translations vs real + control translations
# ------------------------------------------------------------------------------------------------
def arm_name(strength: float, control: bool = False) -> str:
    return f"real + {'control' if control else 'img2img'} s={strength:g}"


def binary_subset(cfg: Config, ds: CXRDataset) -> CXRDataset:
    """The images of ``ds`` in Rajaraman's binary task: *normal* (every study label known and negative)
    or positive for the minority label (whatever the other labels)."""
    y, m = ds.targets()
    j = list(ds.label_names).index(cfg.minority_label)
    keep = np.flatnonzero(normal_mask(cfg, ds) | ((y[:, j] == 1) & m[:, j]))
    out = ds.subset(keep)
    out.name = f"{ds.name}[normal|{cfg.minority_label}]"
    return out


def task_sets(cfg: Config, sets: RealSets) -> tuple[Config, RealSets]:
    """The config and sets of the downstream task: for ``task = "binary"``, the labels reduced to the
    minority label and R, val and test reduced to normal or minority-positive images
    (:func:`binary_subset`); for ``"multilabel"``, unchanged."""
    if cfg.task == "multilabel":
        return cfg, sets
    sub = {k: binary_subset(cfg, getattr(sets, k)) for k in ("train", "val", "test")}
    return cfg.replace(labels=(cfg.minority_label,)), RealSets(pool=sets.pool, external={}, **sub)


def downstream(cfg: Config, sets: RealSets, trans: dict[float, ArrayDataset], control: dict[float, ArrayDataset] | None = None,
               progress: bool = True) -> pd.DataFrame:
    """The standard results table (:func:`common.evaluate_arms`, internal test set) of ``real``,
    ``real + img2img s=<strength>`` and (with ``control``) ``real + control s=<strength>`` — R plus the
    same sources translated at the same strength and noise under the *normal* condition: as many
    images through the same encoder and sampler, without the finding — for each of ``arm_strengths``,
    on the task of :func:`task_sets`. The translations join the training set as minority-positive
    (img2img) or normal (control) images."""
    tcfg, tsets = task_sets(cfg, sets)
    arms = {"real": [tsets.train]}
    for s in cfg.arm_strengths:
        for is_control, sets_s in ((False, trans), (True, control)):
            if sets_s is None:
                continue
            if float(s) not in sets_s:
                raise ValueError(f"arm strength {s} has no translated set; translate at it first (strengths={list(sets_s)})")
            arms[arm_name(s, is_control)] = [tsets.train, sets_s[float(s)]]
    return common.evaluate_arms(tcfg, arms, tsets, reference="real", test_sets={"internal": tsets.test}, progress=progress)


def minority_table(cfg: Config, results: pd.DataFrame) -> pd.DataFrame:
    """The minority label's Rajaraman metrics per arm: estimate, CI, p-value (and its test) and Holm-adjusted
    p-value, from the pooled rows when there are several seeds."""
    r = results[(results.label == cfg.minority_label) & results.metric.isin(REPORTED_METRICS)]
    pooled = r[r.seed.astype(str) == "pooled"]
    r = pooled if len(pooled) else r
    cols = ["arm", "metric", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "test", "n", "n_pos", "n_seeds", "threshold"]
    out = r[cols].copy()
    out["metric"] = pd.Categorical(out["metric"], REPORTED_METRICS, ordered=True)
    return out.sort_values(["metric", "arm"]).reset_index(drop=True)


def per_seed_youden(cfg: Config, results: pd.DataFrame) -> pd.DataFrame:
    """Youden's J of the minority label per seed and arm, with the per-seed bootstrap p-value against real."""
    r = results[(results.label == cfg.minority_label) & (results.metric == "youden") & (results.seed.astype(str) != "pooled")]
    return r[["arm", "seed", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "test"]].reset_index(drop=True)


def plot_consistency(table: pd.DataFrame, minority: str):
    import matplotlib.pyplot as plt

    t = table[table.strength > 0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(t["strength"], t["mean_abs_change"], marker="o")
    axes[0].set_ylabel("mean |translation − source|")
    axes[1].plot(table["strength"], table["p_minority"], marker="o", label=f"P({minority})")
    axes[1].plot(table["strength"], table["called_minority"], marker="s", label=f"called {minority}")
    axes[1].plot(t["strength"], t["called_minority_control"], marker="s", ls="--", label=f"called {minority} (control)")
    axes[1].plot(table["strength"], table["p_other_max"], marker="^", label="max P(other label)")
    axes[1].set_ylabel("oracle on the translations")
    axes[1].legend(fontsize=8)
    axes[2].plot(t["strength"], t["label_auroc"], marker="o", label="vs control translation")
    axes[2].plot(t["strength"], t["label_auroc_vs_source"], marker="s", ls="--", label="vs source")
    axes[2].axhline(0.5, color="gray", lw=0.8)
    axes[2].set_ylabel(f"AUROC of the oracle's P({minority})")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("SDEdit strength")
    fig.tight_layout()
    return fig


def plot_metrics(table: pd.DataFrame, minority: str):
    """Point estimates with CIs of the minority metrics per arm."""
    import matplotlib.pyplot as plt

    metrics = [m for m in REPORTED_METRICS if m in set(table["metric"].astype(str))]
    arms = list(dict.fromkeys(table["arm"]))
    fig, ax = plt.subplots(figsize=(1.3 * len(metrics) + 3, 4))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        d = table[table.arm == arm].set_index(table[table.arm == arm]["metric"].astype(str)).reindex(metrics)
        x = np.arange(len(metrics)) + (i - (len(arms) - 1) / 2) * width
        yerr = [d["estimate"] - d["ci_low"], d["ci_high"] - d["estimate"]]
        ax.errorbar(x, d["estimate"], yerr=np.nan_to_num(np.asarray(yerr, float)), fmt="o", capsize=3, label=arm)
    ax.set_xticks(np.arange(len(metrics)))
    ax.set_xticklabels(metrics, rotation=20)
    ax.set_ylabel(f"{minority} (internal test)")
    ax.axhline(0, color="gray", lw=0.6)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# The cost plan (cxr run --plan, cxrlib.plan)
# ------------------------------------------------------------------------------------------------
def plan_sets(cfg: Config, data) -> RealSets:
    """Image-less stand-ins of the chapter's real sets with their real metadata (``data.real()`` for R; val
    and test read from the dataset's metadata when the binary task reduces them), for :func:`normal_sources`
    and :func:`task_sets`."""
    from ..data import load_meta
    from ..data.labels import CHEXPERT_LABELS
    from ..plan import stand_in

    def split(name, n_max):
        if cfg.task == "multilabel":
            return stand_in(data.sizes[name])
        meta = load_meta(cfg.dataset, root=cfg.root, split=name, n_max=n_max)[0].reset_index(drop=True)
        return stand_in(len(meta), meta, [l for l in CHEXPERT_LABELS if l in meta])

    return RealSets(pool=stand_in(0), train=data.real(), val=split("val", cfg.n_val), test=split("test", cfg.n_test),
                    external={})


def plan_jobs(cfg: Config, data) -> list:
    """The jobs of a run of this chapter (``cxr run --plan``, :mod:`cxrlib.plan`), as the notebook makes them:
    the latent generator (shared with chapter 7), the translations of :func:`normal_sources` (drawn from R's
    real labels) at every strength and their controls (``⌊s · sampler_steps⌋`` denoiser steps each), every
    arm x seed of :func:`downstream` on the task of :func:`task_sets`, and the oracle of :func:`consistency`."""
    from ..plan import Job, classifier_jobs, oracle_job
    from .generator_families import latent_jobs, network_evaluations, sampling_flops

    sets = plan_sets(cfg, data)
    n_src = len(normal_sources(cfg, sets))
    jobs = latent_jobs(cfg, data.sizes["train"])
    for control in (False, True):
        for s in cfg.strengths:
            what = "control translations (normal condition)" if control else f"translations to {cfg.minority_label}"
            nfe = network_evaluations(cfg, "latent-diffusion", s)
            jobs.append(Job("sampling", f"{what}, s={s:g}", nfe, n_src, cfg.image_size, "generator", n_src,
                            step_flops=sampling_flops(cfg, "latent-diffusion", nfe)))
    tcfg, tsets = task_sets(cfg, sets)
    n = len(tsets.train)
    arms = {"real": n, **{arm_name(s, c): n + n_src for s in cfg.arm_strengths for c in (False, True)}}
    # the real arm is the other chapters' only on their task (multilabel: the same labels and R)
    jobs += classifier_jobs(tcfg, arms, {**data.sizes, "val": len(tsets.val)}, len(tsets.test),
                            real="real" if cfg.task == "multilabel" else None)
    return jobs + [oracle_job(cfg, data.sizes)]
