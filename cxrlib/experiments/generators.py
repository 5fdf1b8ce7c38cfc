"""Experiment 2 — Generators: the study's conditional pixel DDPM (Huijben 2024, Khosravi 2024):
its training curve, samples per label, whether the samples carry their labels, the trade-off of
sampler, step count and guidance against fidelity and time, and a memorization audit.

The generator is :func:`cxrlib.experiments.synthetic.main_generator` — trained once on R and shared
through the cache with chapters 3, 5 and 6.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..config import ConfigError
from .common import RealSets, StudyConfig, merge_profiles


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    NAME: ClassVar[str] = "generators"
    n_per_label: int = 8  # samples per row of the per-label grid
    grid_guidance: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)  # guidance weights compared (at the study sampler)
    sampler_grid: tuple[str, ...] = ("ddpm-50", "ddim-10", "ddim-25", "dpm++-10", "dpm++-20")  # "<sampler>-<steps>"
    n_eval: int = 600  # synthetic images per variant for fidelity and label consistency (= n_syn of chapters 4 and 6: shared sets)
    n_timing: int = 16  # images timed (freshly, not from the cache) per sampler variant
    n_flip: int = 200  # counterfactual twin pairs per label (the label on / off, same seed) for the paired label effect

    PROFILES: ClassVar = merge_profiles({
        "smoke": dict(n_per_label=3, grid_guidance=(0.0, 2.0), sampler_grid=("ddim-4", "dpm++-4"), n_eval=48, n_timing=4, n_flip=12),
        # cpu (the hour book): the study sampler at w = 0 and 2 only; the sampler grid at cpu-full (FD against network
        # evaluations needs an ancestral reference such as DDPM-1000: the paper grid, or -p sampler_grid)
        "cpu": dict(sampler_grid=(), grid_guidance=(0.0, 2.0), n_flip=48),
        "cpu-full": dict(sampler_grid=("ddpm-50", "ddim-10", "ddim-25", "dpm++-10", "dpm++-20"), grid_guidance=(0.0, 1.0, 2.0, 3.0),
                         n_flip=200),
        "paper": dict(n_eval=5000, sampler_grid=("ddpm-1000", "ddim-50", "ddim-200", "dpm++-20"), n_flip=1000),
    })

    def validate(self) -> None:
        super().validate()
        for v in self.sampler_grid:
            parse_variant(v)
        if self.n_flip < 2:
            raise ConfigError(f"parameter 'n_flip': needs at least 2 twin pairs per label, got {self.n_flip}")
        if not 1 <= self.n_timing <= self.n_eval:  # the timed images are the first n_timing evaluation conditions
            raise ConfigError(f"parameter 'n_timing': must be between 1 and n_eval ({self.n_eval}), got {self.n_timing}")


def parse_variant(text: str) -> tuple[str, int]:
    """``"dpm++-20"`` -> ``("dpm++", 20)``; errors name the bad value."""
    from ..generators.sampling import SAMPLERS
    name, _, steps = text.rpartition("-")
    if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise ConfigError(f"parameter 'sampler_grid': {text!r} is not '<sampler>-<steps>' with sampler in {list(SAMPLERS)}")
    return name, int(steps)


# ------------------------------------------------------------------------------------------------
def training_log(snapshots: dict[int, Path]) -> pd.DataFrame:
    """The loss curve of the final run (``train_log.csv`` stored with the generator entry)."""
    final = snapshots[max(snapshots)]
    log = final.parent / "train_log.csv"
    if not log.exists():
        raise FileNotFoundError(f"{log} is missing: the generator entry has no training log")
    return pd.read_csv(log)


def label_conditions(cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    """One row per label with only that finding present, then a row with every label absent;
    ``n_per_label`` images per row (demographics unknown)."""
    from ..generators.conditions import explicit_conditions
    L = len(cfg.labels)
    rows = [np.eye(L)[j] for j in range(L)] + [np.zeros(L)]
    names = list(cfg.labels) + ["none of the labels"]
    y = np.repeat(np.stack(rows), cfg.n_per_label, axis=0)
    return explicit_conditions(y, label_names=cfg.labels), names


def label_grids(cfg: Config, gen_dir: Path) -> dict[float, np.ndarray]:
    """Per guidance weight: images ``[rows, n_per_label, S, S]`` for :func:`label_conditions`
    (the same per-image seeds in every grid, so columns are comparable across guidance)."""
    from ..generators.sampling import image_seeds, sample_images
    from ..generators.ddpm import load_generator
    from ..models.unet import Condition

    cond_table, names = label_conditions(cfg)
    model = load_generator(gen_dir, device=cfg.device)
    cond = Condition.from_table(cond_table, model.label_names)
    seeds = image_seeds(cfg.seed, len(cond_table))
    out = {}
    for w in cfg.grid_guidance:
        x = sample_images(model, cond, seeds, sampler=cfg.sampler, steps=cfg.sampler_steps, guidance=w, device=cfg.device,
                          progress=False)
        out[w] = (x[:, 0].numpy() * 255).round().astype(np.uint8).reshape(len(names), cfg.n_per_label, cfg.image_size, cfg.image_size)
    return out


def eval_conditions(cfg: Config, sets: RealSets) -> pd.DataFrame:
    """Conditions at the training prevalence (labels and demographics drawn jointly from R)."""
    from ..generators.conditions import prevalence_conditions
    return prevalence_conditions(sets.train, cfg.n_eval, label_names=cfg.labels, seed=cfg.seed)


def variant_metrics(cfg: Config, sets: RealSets, gen_dir: Path, oracle_model, *, sampler: str, steps: int,
                    guidance: float, real_features: np.ndarray, progress: bool = False) -> dict:
    """Fidelity (FD, KID, precision/recall/density/coverage in the oracle's feature space against
    the real test set), label consistency (oracle AUROC per label, macro) and fresh sampling time."""
    from ..classify import predict
    from ..generators.ddpm import load_generator
    from ..fidelity import (extract_features, frechet_distance, kernel_distance, label_consistency,
                            precision_recall_density_coverage, study_extractor)
    from ..models.unet import Condition
    from ..generators.sampling import image_seeds, sample_images
    from .synthetic import synthetic_set

    cond = eval_conditions(cfg, sets)
    syn = synthetic_set(cfg, gen_dir, cond, name="eval-prevalence", sampler=sampler, steps=steps, guidance=guidance,
                        progress=progress)
    x, y, m = syn.to_tensors()
    feats = extract_features(study_extractor(oracle_model), x, device=cfg.device)
    scores = predict(oracle_model, x, device=cfg.device)
    lc = label_consistency(scores, y.numpy(), list(cfg.labels), mask=m.numpy(), warn=False)
    prdc = precision_recall_density_coverage(real_features, feats, warn=False)
    # timing: sampled afresh (the set above may come from the cache)
    model = load_generator(gen_dir, device=cfg.device)
    tc = Condition.from_table(cond.iloc[: cfg.n_timing], model.label_names)
    t0 = time.perf_counter()
    sample_images(model, tc, image_seeds(cfg.seed + 1, cfg.n_timing), sampler=sampler, steps=steps, guidance=guidance,
                  batch_size=cfg.n_timing, device=cfg.device, progress=False)
    sec = (time.perf_counter() - t0) / cfg.n_timing
    return {
        "sampler": sampler, "steps": steps, "guidance": guidance, "n_syn": len(syn), "n_real": len(real_features),
        "fd": frechet_distance(real_features, feats, warn=False)["value"],
        "kid": kernel_distance(real_features, feats, warn=False)["value"],
        "precision": prdc["precision"], "recall": prdc["recall"], "density": prdc["density"], "coverage": prdc["coverage"],
        "label_auroc_macro": float(np.nanmean(lc["auroc"])),
        **{f"label_auroc:{r.label}": r.auroc for r in lc.itertuples()},
        "seconds_per_image": sec,
    }


def comparison_variants(cfg: Config) -> list[tuple[str, int, float, str]]:
    """The variants of :func:`sampler_comparison`, ``(sampler, steps, guidance, comparison)``: each of
    ``sampler_grid`` at the study guidance, then each ``grid_guidance`` weight at the study sampler."""
    variants = [(*parse_variant(v), cfg.guidance, "sampler") for v in cfg.sampler_grid]
    return variants + [(cfg.sampler, cfg.sampler_steps, w, "guidance") for w in cfg.grid_guidance]


def sampler_comparison(cfg: Config, sets: RealSets, gen_dir: Path, oracle_model, progress: bool = True) -> pd.DataFrame:
    """One row per sampler variant (at guidance ``cfg.guidance``) and per guidance weight (at the
    default sampler): fidelity, label consistency and seconds per image."""
    from ..fidelity import extract_features, study_extractor
    from ..utils import tqdm

    real_x = sets.test.to_tensors()[0]
    real_f = extract_features(study_extractor(oracle_model), real_x, device=cfg.device)
    variants = comparison_variants(cfg)
    rows = []
    for sampler, steps, w, kind in tqdm(variants, desc="generator variants", **({} if progress else {"disable": True})):
        rows.append({"comparison": kind, **variant_metrics(cfg, sets, gen_dir, oracle_model, sampler=sampler, steps=steps,
                                                           guidance=w, real_features=real_f, progress=False)})
    return pd.DataFrame(rows)


def nfe_tradeoff(comp: pd.DataFrame, max_nfe: int = 25, max_ratio: float = 1.10) -> pd.DataFrame:
    """FD against network evaluations per image (NFE) for the sampler rows of :func:`sampler_comparison`
    (same conditions and per-image seeds for every row), relative to the ancestral reference: the ``ddpm``
    row with the most steps (e.g. DDPM-1000). Columns ``sampler, steps, guidance, nfe, fd, fd_ratio,
    reference, meets_target`` (at most ``max_nfe`` evaluations at FD <= ``max_ratio`` x the reference's: issue 15's
    target), sorted by NFE. Empty when the grid has no ancestral row: the ratio would have no reference."""
    from ..plan import evaluations

    cols = ["sampler", "steps", "guidance", "nfe", "fd", "fd_ratio", "reference", "meets_target"]
    rows = comp[comp.comparison == "sampler"] if "comparison" in comp else comp
    ref = rows[rows.sampler == "ddpm"]
    if ref.empty:
        return pd.DataFrame(columns=cols)
    ref_i = ref.steps.idxmax()
    ref = ref.loc[ref_i]
    out = rows[["sampler", "steps", "guidance", "fd"]].copy()
    out["reference"] = out.index == ref_i
    out["nfe"] = [evaluations(s, w) for s, w in zip(out.steps, out.guidance)]
    out["fd_ratio"] = out.fd / ref.fd
    out["meets_target"] = (out.nfe <= max_nfe) & (out.fd_ratio <= max_ratio) & ~out.reference
    return out[cols].sort_values("nfe").reset_index(drop=True)


def nfe_tradeoff_text(trade: pd.DataFrame, max_nfe: int = 25, max_ratio: float = 1.10) -> str:
    """One sentence on :func:`nfe_tradeoff`: the cheapest sampler that meets the target, or the best trade-off."""
    if trade.empty:
        return ("No ancestral reference in this run's sampler grid, so FD is not compared against network evaluations. "
                "Add one, e.g. `-p sampler_grid \"[ddpm-1000, ddim-10, ddim-25, dpm++-10, dpm++-20]\"` (the `paper` grid "
                "holds DDPM-1000).")
    ref = trade[trade.reference].iloc[0]
    ok = trade[trade.meets_target]
    head = f"Against {ref.sampler}-{int(ref.steps)} ({int(ref.nfe)} evaluations per image, FD {ref.fd:.3g}): "
    if len(ok):
        r = ok.iloc[0]
        return head + (f"**{r.sampler}-{int(r.steps)} meets the target** with {int(r.nfe)} evaluations at "
                       f"{r.fd_ratio:.2f}x the reference's FD (target: <= {max_nfe} evaluations at <= {max_ratio:.2f}x).")
    fast = trade[(trade.nfe <= max_nfe) & ~trade.reference]
    if fast.empty:
        return head + f"no sampler of the grid uses {max_nfe} evaluations or fewer."
    r = fast.loc[fast.fd_ratio.idxmin()]
    return head + (f"**no sampler meets the target**; the best within {max_nfe} evaluations is {r.sampler}-{int(r.steps)} "
                   f"at {r.fd_ratio:.2f}x the reference's FD (target <= {max_ratio:.2f}x).")


def flip_conditions(cfg: Config, source, label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n_flip`` counterfactual twin conditions ``(on, off)`` of ``label``, drawn from ``source`` (R)."""
    from ..generators.conditions import flipped_conditions
    from ..utils import derive_seed

    return flipped_conditions(source, label, cfg.n_flip, label_names=cfg.labels, seed=derive_seed(cfg.seed, "flip", label) % 2**31)


def label_flip_effects(cfg: Config, sets: RealSets, gen_dir: Path, oracle_model, progress: bool = True) -> pd.DataFrame:
    """The paired (counterfactual) label effect per label, at the study sampler and guidance: ``n_flip``
    conditions drawn from R's rows positive for the label, each sampled twice with the same seed, as drawn
    and with only that label switched off; the oracle scores both twins for that label
    (:func:`cxrlib.fidelity.paired_label_effect`). One row per label: ``auroc`` with its bootstrap CI,
    ``frac_higher``, ``mean_diff``, the Wilcoxon ``p_value``, its Holm adjustment across labels
    (``p_adj``, statsmodels) and ``n``."""
    from ..classify import predict
    from ..fidelity import paired_label_effect
    from ..stats import adjust_pvalues
    from ..utils import derive_seed, tqdm
    from .synthetic import synthetic_set

    rows = []
    for j, label in enumerate(tqdm(list(cfg.labels), desc="label flips", **({} if progress else {"disable": True}))):
        on, off = flip_conditions(cfg, sets.train, label)
        seed = derive_seed(cfg.seed, "synthetic", "flip", label) % 2**31  # one seed for both twins
        s_on = predict(oracle_model, synthetic_set(cfg, gen_dir, on, name=f"flip-{label}-on", seed=seed, progress=False), device=cfg.device)
        s_off = predict(oracle_model, synthetic_set(cfg, gen_dir, off, name=f"flip-{label}-off", seed=seed, progress=False), device=cfg.device)
        rows.append({"label": label, "sampler": cfg.sampler, "steps": cfg.sampler_steps, "guidance": cfg.guidance,
                     **paired_label_effect(s_on[:, j], s_off[:, j], seed=derive_seed(cfg.seed, "flip-boot") % 2**31)})
    out = pd.DataFrame(rows)
    out["p_adj"] = adjust_pvalues(out["p_value"].to_numpy(), method="holm")
    return out


def unpaired_label_auroc(comparison: pd.DataFrame, cfg: Config) -> pd.Series | None:
    """The per-label label consistency of the prevalence set at the study's sampler, steps and guidance
    (a row of :func:`sampler_comparison`), or None when the grids do not contain that variant."""
    hit = comparison[(comparison.sampler == cfg.sampler) & (comparison.steps == cfg.sampler_steps)
                     & np.isclose(comparison.guidance, cfg.guidance)]
    if hit.empty:
        return None
    row = hit.iloc[0].filter(like="label_auroc:")
    row.index = [c.split(":", 1)[1] for c in row.index]
    return row.astype(float)


def real_reference(cfg: Config, sets: RealSets, oracle_model) -> dict:
    """The same metrics for real validation images against the real test set: the ceiling."""
    from ..classify import predict
    from ..fidelity import (extract_features, frechet_distance, kernel_distance, label_consistency,
                            precision_recall_density_coverage, study_extractor)

    ex = study_extractor(oracle_model)
    xt = sets.test.to_tensors()[0]
    xv, yv, mv = sets.val.to_tensors()
    ft, fv = extract_features(ex, xt, device=cfg.device), extract_features(ex, xv, device=cfg.device)
    lc = label_consistency(predict(oracle_model, xv, device=cfg.device), yv.numpy(), list(cfg.labels), mask=mv.numpy(), warn=False)
    prdc = precision_recall_density_coverage(ft, fv, warn=False)
    return {"sampler": "real (val)", "fd": frechet_distance(ft, fv, warn=False)["value"],
            "kid": kernel_distance(ft, fv, warn=False)["value"], **{k: prdc[k] for k in ("precision", "recall", "density", "coverage")},
            "label_auroc_macro": float(np.nanmean(lc["auroc"])), **{f"label_auroc:{r.label}": r.auroc for r in lc.itertuples()}}


def memorization(cfg: Config, sets: RealSets, gen_dir: Path, oracle_model):
    """Replica audit of the evaluation set: nearest R image, calibrated on held-out real (val)."""
    from ..fidelity import extract_features, memorization_audit, study_extractor
    from .synthetic import synthetic_set

    syn = synthetic_set(cfg, gen_dir, eval_conditions(cfg, sets), name="eval-prevalence", progress=False)
    ex = study_extractor(oracle_model)
    xs, xr, xh = syn.to_tensors()[0], sets.train.to_tensors()[0], sets.val.to_tensors()[0]
    audits = memorization_audit(xs, xr, xh, syn_features=extract_features(ex, xs, device=cfg.device),
                                train_features=extract_features(ex, xr, device=cfg.device),
                                heldout_features=extract_features(ex, xh, device=cfg.device))
    return audits, xs.numpy(), xr.numpy()


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def plot_training(log: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(log["step"], log["loss"], color="0.75", lw=0.8, label="loss (logged steps)")
    smooth = log["loss"].rolling(max(1, len(log) // 20), min_periods=1).mean()
    ax.plot(log["step"], smooth, color="C0", lw=2, label="running mean")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising loss (MSE)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_tradeoff(comp: pd.DataFrame, reference: dict):
    import matplotlib.pyplot as plt

    s = comp[comp.comparison == "sampler"]
    g = comp[comp.comparison == "guidance"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for _, r in s.iterrows():
        axes[0].scatter(r.seconds_per_image * 1000, r.fd, s=40)
        axes[0].annotate(f"{r.sampler}-{r.steps}", (r.seconds_per_image * 1000, r.fd), fontsize=7, xytext=(3, 3),
                         textcoords="offset points")
    axes[0].axhline(reference["fd"], ls="--", color="k", lw=1, label="real vs real")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per image (this machine)")
    axes[0].set_ylabel("FD (oracle features, vs real test)")
    axes[0].legend(fontsize=7)
    axes[1].plot(g.guidance, g.label_auroc_macro, "o-", label="synthetic")
    axes[1].axhline(reference["label_auroc_macro"], ls="--", color="k", lw=1, label="real val images")
    axes[1].set_xlabel("guidance weight w")
    axes[1].set_ylabel("label consistency (oracle macro AUROC)")
    axes[1].legend(fontsize=7)
    axes[2].plot(g.guidance, g.fd, "o-", color="C1", label="FD")
    axes[2].set_xlabel("guidance weight w")
    axes[2].set_ylabel("FD")
    ax2 = axes[2].twinx()
    ax2.plot(g.guidance, g.recall, "s--", color="C2", label="recall")
    ax2.set_ylabel("recall (diversity)")
    fig.tight_layout()
    return fig


def plot_flip_effects(flips: pd.DataFrame, unpaired: pd.Series | None = None):
    """Paired label effect per label (AUROC of the label-on twins against the label-off twins, with its
    CI); ``unpaired``: the label-consistency AUROC of the same labels on the prevalence set, for comparison."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.55 * len(flips)))
    yy = np.arange(len(flips))[::-1]
    ax.errorbar(flips["auroc"], yy, xerr=[flips["auroc"] - flips["ci_low"], flips["ci_high"] - flips["auroc"]],
                fmt="o", color="C0", capsize=3, label="paired twins (label on vs off)")
    if unpaired is not None:
        ax.scatter([unpaired.get(lbl, np.nan) for lbl in flips["label"]], yy, marker="x", color="C3",
                   label="unpaired (prevalence set)")
    ax.axvline(0.5, ls="--", color="k", lw=1)
    ax.set_yticks(yy, flips["label"])
    ax.set_xlabel("oracle AUROC for the label")
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, frameon=False)  # above: never over a point
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# Cost plan
# ------------------------------------------------------------------------------------------------
def plan_jobs(cfg: Config, data) -> list:
    """The jobs of a run of this chapter (``cxr run --plan``, :mod:`cxrlib.plan`): the main generator (its
    EMA snapshots at ``gen_checkpoints`` are stops of the same run; this chapter samples only the final
    one), the per-label grids (sampled directly, not cached), one ``n_eval`` prevalence set per distinct
    cache key among :func:`comparison_variants` and the memorization audit's study variant, the
    ``n_timing`` images each variant samples afresh, the twins of :func:`flip_conditions` drawn from R's
    labels, and the oracle. Feature extraction and the oracle's predictions are not jobs."""
    from types import SimpleNamespace

    from ..plan import Job, evaluations, oracle_job, set_mark

    size = cfg.image_size

    def sampling(name: str, steps: int, guidance: float, n: int) -> Job:  # classifier-free guidance: two passes per step
        return Job("sampling", name, evaluations(steps, guidance), n, size, "generator", n)

    snaps = f"; EMA snapshots at {', '.join(map(str, sorted(cfg.gen_checkpoints)))}" if cfg.gen_checkpoints else ""
    jobs = [Job("generator", f"conditional DDPM on R (the main generator{snaps})", cfg.gen_steps, cfg.gen_batch_size, size,
                "generator", data.sizes["train"], shared="main generator")]
    rows = len(label_conditions(cfg)[0])
    jobs += [sampling(f"label grid {cfg.sampler}-{cfg.sampler_steps} w={w:g}", cfg.sampler_steps, w, rows) for w in cfg.grid_guidance]
    r = SimpleNamespace(train=data.real())  # what eval_conditions and the flips read of the real sets: R's labels
    n_eval, variants = len(eval_conditions(cfg, r)), comparison_variants(cfg)
    keys = dict.fromkeys([(s, int(k), float(w)) for s, k, w, _ in variants]  # synthetic_set's cache key: one set each
                         + [(cfg.sampler, int(cfg.sampler_steps), float(cfg.guidance))])  # memorization()'s set
    jobs += [dataclasses.replace(sampling(f"eval-prevalence set {s}-{k} w={w:g}", k, w, n_eval),
                                 shared=set_mark("main generator", s, k, w)) for s, k, w in keys]
    jobs += [sampling(f"timing {s}-{k} w={w:g} (sampled afresh)", k, w, cfg.n_timing) for s, k, w, _ in variants]
    for label in cfg.labels:
        on, off = flip_conditions(cfg, r.train, label)
        jobs += [sampling(f"label flip {label}: {t} twins", cfg.sampler_steps, cfg.guidance, len(c)) for t, c in (("on", on), ("off", off))]
    return jobs + [oracle_job(cfg, data.sizes)]
