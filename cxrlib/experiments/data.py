"""Experiment 1 — Data: the datasets, label prevalence and co-occurrence, demographics, sample grids,
splits, and how hard the classification task is (a learning curve over labeled fractions).

For the phantom, every statistic is put next to the real table it was sampled from (CheXpert for
the internal site, NIH ChestX-ray14 and PadChest for the external sites), so a reader can check
that the simulation carries the real imbalance and co-occurrence.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pandas as pd

from ..config import ConfigError, ExperimentConfig
from ..data.labels import CHEXPERT_LABELS


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    NAME: ClassVar[str] = "data"
    dataset: str = "phantom"  # phantom (embedded simulation) | chexpert | nih | mimic (need root for images)
    root: str | None = None  # folder of a real dataset's images; None: the phantom, or label CSVs only
    image_size: int = 64  # pixels (square) of the sample grids and of the difficulty classifier
    labels: tuple[str, ...] = CHEXPERT_LABELS  # labels shown and learned
    n_stats: int = 20000  # phantom: images per site used for prevalence / co-occurrence / demographics
    external_sites: tuple[str, ...] = ("nih", "padchest")  # phantom external test sites shown
    n_grid: int = 6  # examples per finding in the sample grid
    difficulty_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)  # labeled fractions of train (nested manifest subsets)
    difficulty_arch: str = "small_cnn"  # classifier of the learning curve
    difficulty_epochs: int = 8  # epochs per learning-curve point
    difficulty_n_max: int | None = None  # cap on train images at 100 % (None: the whole train split)
    n_test: int | None = None  # cap on test images (None: the whole test split)
    n_boot: int = 500  # bootstrap resamples for the AUROC CIs

    PROFILES: ClassVar = {
        "smoke": dict(image_size=32, n_stats=1500, n_grid=3, difficulty_fractions=(0.25, 1.0), difficulty_epochs=1,
                      difficulty_n_max=600, n_test=300, n_boot=50),
        # cpu (the hour book): a small illustrative learning curve; cpu-full the longer one
        "cpu": dict(image_size=64, n_stats=20000, difficulty_epochs=3, difficulty_n_max=1000, n_test=1500, n_boot=150),
        "cpu-full": dict(difficulty_epochs=6, difficulty_n_max=6000, n_test=3000, n_boot=300),
        "paper": dict(dataset="chexpert", image_size=224, difficulty_arch="densenet121", difficulty_epochs=20,
                      n_boot=1000),
    }

    def validate(self) -> None:
        super().validate()
        from ..data import check_data_params

        check_data_params(self.dataset, self.labels)
        if not all(0 < f <= 1 for f in self.difficulty_fractions):
            raise ConfigError(f"parameter 'difficulty_fractions': each must be in (0, 1], got {self.difficulty_fractions}")
        if self.image_size < 16:
            raise ConfigError(f"parameter 'image_size': must be >= 16, got {self.image_size}")


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def split_summary(cfg: Config) -> pd.DataFrame:
    """Images, patients and positives per label for each split of the dataset's manifest."""
    from ..data import load_meta
    from ..data.cli import summary_table

    meta, _ = load_meta(cfg.dataset, root=cfg.root)
    return summary_table(meta, cfg.labels)


def _real_source(site: str) -> tuple[str, pd.DataFrame]:
    from ..data.phantom import SITES
    from ..data.phantom_sources import SOURCE_TABLES

    src = SITES[site].source
    return {"chexpert": "CheXpert", "nih": "NIH ChestX-ray14", "padchest": "PadChest"}[src], SOURCE_TABLES[src]()


def _prevalence(meta: pd.DataFrame, labels) -> pd.DataFrame:
    rows = []
    for lab in labels:
        raw = pd.to_numeric(meta[lab], errors="coerce")
        annotated = raw.notna().any()
        rows.append({"label": lab, "positive": (raw == 1).mean() if annotated else np.nan,
                     "uncertain": (raw == -1).mean() if annotated else np.nan})
    return pd.DataFrame(rows)


def site_metas(cfg: Config) -> dict[str, pd.DataFrame]:
    """The phantom meta of each site (first ``n_stats`` images; no pixels rendered)."""
    from ..data.phantom import PHANTOM_DATA_SEED, phantom_meta

    return {site: phantom_meta(site, cfg.n_stats, PHANTOM_DATA_SEED) for site in ("internal", *cfg.external_sites)}


def prevalence_comparison(cfg: Config, metas: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Tidy table: ``site, source ('phantom' or the real dataset), label, positive, uncertain``."""
    if cfg.dataset != "phantom":
        from ..data import load_meta

        meta, _ = load_meta(cfg.dataset, root=cfg.root)
        return _prevalence(meta, cfg.labels).assign(site=cfg.dataset, source=cfg.dataset)
    metas = metas or site_metas(cfg)
    parts = []
    for site, meta in metas.items():
        name, real = _real_source(site)
        parts.append(_prevalence(meta, cfg.labels).assign(site=site, source="phantom"))
        parts.append(_prevalence(real, cfg.labels).assign(site=site, source=f"real {name}"))
    return pd.concat(parts, ignore_index=True)[["site", "source", "label", "positive", "uncertain"]]


def cooccurrence(meta: pd.DataFrame, labels) -> pd.DataFrame:
    """``P(column positive | row positive)`` over images (raw value 1 = positive)."""
    pos = np.stack([(pd.to_numeric(meta[l], errors="coerce") == 1).to_numpy() for l in labels], 1).astype(float)
    n = pos.sum(0)
    joint = pos.T @ pos
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = joint / n[:, None]
    return pd.DataFrame(cond, index=list(labels), columns=list(labels))


def cooccurrence_comparison(cfg: Config, metas: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """Co-occurrence of the phantom internal site and of the real table it was sampled from, and
    their largest absolute difference (reported in the text)."""
    metas = metas or site_metas(cfg)
    name, real = _real_source("internal")
    ph = cooccurrence(metas["internal"], cfg.labels)
    re_ = cooccurrence(real, cfg.labels)
    return {"phantom": ph, f"real {name}": re_, "abs_diff": (ph - re_).abs()}


def demographics(cfg: Config, metas: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per image and site: ``site, sex, age, view, studies_of_patient``."""
    metas = metas or site_metas(cfg)
    parts = []
    for site, m in metas.items():
        n_st = m.groupby("patient_id")["image_id"].transform("size")
        parts.append(pd.DataFrame({"site": site, "sex": m["sex"].fillna("unknown"), "age": m["age"],
                                   "view": m["view"], "studies_of_patient": n_st}))
    return pd.concat(parts, ignore_index=True)


def demographics_table(demo: pd.DataFrame) -> pd.DataFrame:
    g = demo.groupby("site", sort=False)
    return pd.DataFrame({
        "images": g.size(),
        "female %": g["sex"].apply(lambda s: 100 * (s == "F").mean()).round(1),
        "age median": g["age"].median().round(0),
        "age IQR": g["age"].apply(lambda a: f"{a.quantile(0.25):.0f}-{a.quantile(0.75):.0f}"),
        "AP view %": g["view"].apply(lambda v: 100 * (v == "AP").mean()).round(1),
        "patients with follow-ups %": g["studies_of_patient"].apply(lambda s: 100 * (s > 1).mean()).round(1),
    })


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------
def finding_examples(cfg: Config, severity_min: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """``n_grid`` internal-site images per rendered finding (latent severity >= severity_min, taken
    in index order) plus a No Finding row: ``(images uint8 [F, n_grid, S, S], row labels)``."""
    from ..data.phantom import PHANTOM_DATA_SEED, RENDERED, PhantomDataset, phantom_meta

    meta = phantom_meta("internal", max(cfg.n_stats, 2000), PHANTOM_DATA_SEED)
    rows, names = [], []
    for lab in [l for l in cfg.labels if l in RENDERED]:
        idx = np.flatnonzero(meta[f"sev:{lab}"].to_numpy() >= severity_min)[: cfg.n_grid]
        if len(idx) == cfg.n_grid:
            rows.append(idx)
            names.append(lab)
    nf = np.flatnonzero((meta["No Finding"] == 1).to_numpy() & (meta[[f"sev:{l}" for l in RENDERED]].to_numpy().sum(1) == 0))
    rows.append(nf[: cfg.n_grid])
    names.append("No Finding")
    flat = np.concatenate(rows)
    ds = PhantomDataset("internal", cfg.image_size, PHANTOM_DATA_SEED, indices=flat, progress=False)
    return ds.images.reshape(len(rows), cfg.n_grid, cfg.image_size, cfg.image_size), names


def site_examples(cfg: Config) -> tuple[np.ndarray, list[str]]:
    """The first ``n_grid`` images of each phantom site: ``(images [sites, n_grid, S, S], site names)``."""
    from ..data.phantom import PHANTOM_DATA_SEED, PhantomDataset

    sites = ["internal", *cfg.external_sites]
    imgs = [PhantomDataset(s, cfg.image_size, PHANTOM_DATA_SEED, n=cfg.n_grid, progress=False).images for s in sites]
    return np.stack(imgs), sites


# ------------------------------------------------------------------------------------------------
# Difficulty: learning curve of a classifier over nested labeled fractions of the train split
# ------------------------------------------------------------------------------------------------
def learning_curve(cfg: Config, progress: bool = True) -> pd.DataFrame:
    """Train ``difficulty_arch`` on each nested labeled fraction of the train split and evaluate on
    the internal test split: the standard results table (``cxrlib.stats``) with one arm per
    fraction (``arm = 'frac=0.25'``), p-values against the 100 % arm. The classifiers are cached."""
    from ..classify import evaluate_classifiers
    from ..data import load_dataset

    test = load_dataset(cfg.dataset, root=cfg.root, split="test", size=cfg.image_size, labels=cfg.labels,
                        n_max=cfg.n_test, progress=progress)
    val = load_dataset(cfg.dataset, root=cfg.root, split="val", size=cfg.image_size, labels=cfg.labels,
                       n_max=cfg.n_test, progress=progress)
    models = {}
    for frac in sorted(cfg.difficulty_fractions, reverse=True):
        # the first n images of the labeled subset, read (rendered) alone: the same images as reading the whole
        # subset and keeping its first n, at a fraction of the cost
        n = None if cfg.difficulty_n_max is None else max(1, int(round(cfg.difficulty_n_max * frac)))
        train = load_dataset(cfg.dataset, root=cfg.root, split="train", size=cfg.image_size, labels=cfg.labels,
                             labeled_fraction=frac, n_max=n, progress=progress)
        models[f"frac={frac:g}"] = _cached_classifier(cfg, train, val, frac, progress)
    return evaluate_classifiers(models, test, reference_arm=f"frac={max(cfg.difficulty_fractions):g}", val=val,
                                threshold_policy="youden", n_boot=cfg.n_boot, seed=cfg.seed, bootstrap_seed=cfg.seed,
                                progress=progress)


def plan_jobs(cfg: Config, data=None) -> list:
    """The jobs of a run of this chapter (``cxr run --plan``): one learning-curve classifier per labeled
    fraction (its images counted from the split's metadata exactly as :func:`learning_curve` reads them),
    ``difficulty_epochs`` passes validated after each on the val split and predicting the test split."""
    import math

    from ..data import load_meta
    from ..plan import Job

    def count(split, **kw):
        return len(load_meta(cfg.dataset, root=cfg.root, split=split, **kw)[0])

    val, test, jobs = count("val", n_max=cfg.n_test), count("test", n_max=cfg.n_test), []
    for frac in sorted(cfg.difficulty_fractions, reverse=True):
        n_max = None if cfg.difficulty_n_max is None else max(1, int(round(cfg.difficulty_n_max * frac)))
        n = count("train", labeled_fraction=frac, n_max=n_max)
        jobs.append(Job("classifier", f"learning curve frac={frac:g}", cfg.difficulty_epochs * math.ceil(n / 64), 64,
                        cfg.image_size, cfg.difficulty_arch, n, eval_images=cfg.difficulty_epochs * val + test))
    return jobs


def _cached_classifier(cfg: Config, train, val, frac: float, progress: bool):
    from ..cache import get_or_create, key
    from ..classify import load_classifier, save_classifier, train_classifier

    spec = {"arch": cfg.difficulty_arch, "epochs": cfg.difficulty_epochs, "frac": frac, "n_max": cfg.difficulty_n_max,
            "dataset": cfg.dataset, "root": cfg.root, "size": cfg.image_size, "labels": list(cfg.labels), "seed": cfg.seed}
    k = key("classifier", spec, inputs=[train.meta["image_id"].tolist()])

    def produce(out):
        model, hist = train_classifier(train=train, val=val, labels=cfg.labels, arch=cfg.difficulty_arch,
                                       epochs=cfg.difficulty_epochs, seed=cfg.seed, device=cfg.device, progress=progress)
        save_classifier(model, out)
        hist.to_csv(out / "history.csv", index=False)

    entry = get_or_create(k, produce, kind="classifier")
    return load_classifier(entry, device=cfg.device)


def prevalence_gap(prev: pd.DataFrame) -> dict:
    """The largest |phantom - real| positive prevalence over sites and labels (for the text)."""
    from ..data.phantom import SITES

    wide = prev.pivot_table(index=["site", "label"], columns="source", values="positive")
    phantom = wide["phantom"]
    real = wide.drop(columns="phantom").max(axis=1)
    gap = (phantom - real).abs().dropna()
    site, label = gap.idxmax()
    return {"gap": float(gap.max()), "site": site, "label": label, "max_followups": SITES[site].max_studies}


def plot_learning_curve(curve: pd.DataFrame):
    """Test AUROC against the labeled fraction (log axis): per label (thin lines) and the macro
    average with its 95 % CI (black). Returns ``(figure, macro rows)``."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    auc = curve[curve.metric == "auroc"].copy()
    auc["fraction"] = auc["arm"].str.replace("frac=", "").astype(float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=auc[auc.label != "macro"], x="fraction", y="estimate", hue="label", marker="o", ax=ax, legend=False,
                 palette="tab20", alpha=0.45)
    m = auc[auc.label == "macro"].sort_values("fraction")
    ax.errorbar(m["fraction"], m["estimate"], yerr=[m["estimate"] - m["ci_low"], m["ci_high"] - m["estimate"]],
                color="black", marker="s", lw=2, capsize=3, label="macro AUROC (95 % CI)")
    ax.set_xscale("log")
    ax.set_xticks(m["fraction"])
    ax.set_xticklabels([f"{f:.0%}" for f in m["fraction"]])
    ax.set_xlabel("labeled fraction of the train split")
    ax.set_ylabel("test AUROC")
    ax.legend()
    return fig, m[["arm", "fraction", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "n"]].reset_index(drop=True)
