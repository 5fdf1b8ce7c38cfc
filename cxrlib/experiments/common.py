"""What experiments 2-8 share: the study config (data, generator, sampler and classifier recipes),
the real data sets, and cached steps (generator training, synthetic sets, classifier arms,
evaluation with the study's statistics).

Every expensive artifact goes through :mod:`cxrlib.cache`, keyed by the fields that produce it and
by the *content* of its inputs, so experiments that share a recipe share the artifact: the
conditional DDPM trained for chapter 2 is the one chapters 3, 5 and 6 sample from, and changing a
classifier parameter never retrains a generator.

The real sets (phantom, ``cpu`` profile)::

    pool  = the first ``n_pool`` images of the manifest's train split (patient-grouped)
    R     = the images of ``pool`` in the manifest's nested labeled subset ``labeled_fraction``
            -> the labeled real training set of every classifier arm and of the conditional generator
    val   = the first ``n_val`` validation images (early stopping, threshold policies)
    test  = the first ``n_test`` internal test images
    external[site] = ``n_external`` images of each external site (test only)
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError, ExperimentConfig
from ..data.base import ArrayDataset, CXRDataset
from ..data.labels import COMPETITION_LABELS, check_label_names
from ..utils import derive_seed

SMOKE_LABELS = ("Cardiomegaly", "Edema", "Pleural Effusion")

# Presets shared by experiments 2-8 (each experiment adds its own on top).
STUDY_PROFILES: dict[str, dict] = {
    "smoke": dict(image_size=32, labels=SMOKE_LABELS, n_pool=400, labeled_fraction=0.5, n_val=120, n_test=200,
                  n_external=100, gen_channels=(16, 32), gen_steps=30, gen_checkpoints=(15,), gen_batch_size=16,
                  sampler_steps=4, clf_epochs=1, n_seeds=1, n_boot=30),
    "cpu": dict(),
    "paper": dict(dataset="chexpert", image_size=256, labels=tuple(l for l in COMPETITION_LABELS), n_pool=None,
                  labeled_fraction=1.0, n_val=None, n_test=None, n_external=None, external_sites=(),
                  gen_channels=(128, 128, 256, 256, 512, 512), gen_layers=2, gen_label_channels=False, gen_steps=200_000, gen_checkpoints=(50_000, 100_000, 150_000),
                  gen_batch_size=32, gen_lr=1e-4, gen_ema_decay=0.9999, gen_prediction="v_prediction",
                  gen_schedule="squaredcos_cap_v2", sampler="ddim", sampler_steps=200, clf_arch="densenet121",
                  clf_epochs=20, n_seeds=5, n_boot=1000),
}

# The fields that define the real training data and the generator (the generator's cache key).
DATA_FIELDS = ("dataset", "root", "image_size", "labels", "n_pool", "labeled_fraction")
GEN_FIELDS = DATA_FIELDS + ("seed", "gen_channels", "gen_layers", "gen_adagn", "gen_label_channels", "gen_steps",
                            "gen_batch_size", "gen_lr", "gen_ema_decay", "gen_prediction", "gen_schedule", "gen_cond_drop")
CLF_FIELDS = ("clf_arch", "clf_epochs", "clf_batch_size", "clf_lr", "clf_augment")


@dataclasses.dataclass(frozen=True)
class StudyConfig(ExperimentConfig):
    # data ---------------------------------------------------------------------------------------
    dataset: str = "phantom"  # phantom (embedded simulation) | chexpert | nih | mimic (needs root)
    root: str | None = None  # folder of a real dataset's images (paper profile)
    image_size: int = 32  # pixels (square) for generators and classifiers
    labels: tuple[str, ...] = COMPETITION_LABELS  # findings conditioned on and evaluated (CheXpert competition five)
    n_pool: int | None = 4000  # first n train images: the pool (unlabeled pretraining; R is drawn from it); None = all
    labeled_fraction: float = 0.25  # R = pool images in the manifest's nested labeled subset of this fraction
    n_val: int | None = 1000  # validation images (early stopping, thresholds); None = all
    n_test: int | None = 2000  # internal test images; None = all
    external_sites: tuple[str, ...] = ("nih", "padchest")  # external test sites (phantom)
    n_external: int | None = 1000  # images per external site
    # generator (the conditional pixel DDPM of chapter 2) ------------------------------------------
    gen_channels: tuple[int, ...] = (32, 64, 64)  # UNet widths per resolution
    gen_layers: int = 1  # ResNet blocks per resolution level
    gen_adagn: bool = True  # condition + time embedding as GroupNorm scale/shift (ADM's AdaGN), not added
    gen_label_channels: bool = True  # label states also as constant input channels (fast conditioning on a CPU budget)
    gen_steps: int = 1000  # optimizer steps (labels carried from ~600 steps in the chapter-2 A/B; 0.55 s/step on 2 CPU cores)
    gen_checkpoints: tuple[int, ...] = (200, 500)  # earlier EMA snapshots kept (fidelity vs utility)
    gen_batch_size: int = 64
    gen_lr: float = 1e-3  # AdamW, constant after warm-up
    gen_ema_decay: float = 0.995  # short CPU runs need a fast EMA
    gen_prediction: str = "epsilon"  # epsilon | v_prediction
    gen_schedule: str = "linear"  # linear | squaredcos_cap_v2
    gen_cond_drop: float = 0.1  # P(condition dropped) in training: enables classifier-free guidance
    # sampling ------------------------------------------------------------------------------------
    sampler: str = "ddim"  # ddpm | ddim | dpm++ (DDIM-15 carried the labels best in the chapter-2 A/B)
    sampler_steps: int = 15
    guidance: float = 2.0  # classifier-free guidance weight w (0 = plain conditional model)
    # classifiers ---------------------------------------------------------------------------------
    clf_arch: str = "small_cnn"  # small_cnn | resnet18 | resnet50 | densenet121 | efficientnet_b0 | convnext_tiny | inception_v3
    clf_epochs: int = 8
    clf_batch_size: int = 64
    clf_lr: float = 1e-3
    clf_augment: bool = True
    n_seeds: int = 3  # classifier training seeds per arm (seed, seed+1, ...)
    n_boot: int = 300  # bootstrap resamples for CIs
    threshold_policy: str = "youden"  # fixed | youden | prevalence | sensitivity (chosen on val)

    PROFILES: ClassVar = STUDY_PROFILES

    def validate(self) -> None:
        super().validate()
        try:
            check_label_names(self.labels, where="parameter 'labels'")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        from ..sampling import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise ConfigError(f"parameter 'sampler': {self.sampler!r} is not one of {list(SAMPLERS)}")
        if self.threshold_policy not in ("fixed", "youden", "prevalence", "sensitivity"):
            raise ConfigError(f"parameter 'threshold_policy': {self.threshold_policy!r} is not one of fixed, youden, prevalence, sensitivity")
        if not 0 < self.labeled_fraction <= 1:
            raise ConfigError(f"parameter 'labeled_fraction': must be in (0, 1], got {self.labeled_fraction}")
        if any(c >= self.gen_steps for c in self.gen_checkpoints):
            raise ConfigError(f"parameter 'gen_checkpoints': each must be < gen_steps={self.gen_steps}, got {self.gen_checkpoints}")
        if self.n_seeds < 1:
            raise ConfigError(f"parameter 'n_seeds': must be >= 1, got {self.n_seeds}")

    def clf_seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.n_seeds)]


def merge_profiles(extra: Mapping[str, Mapping]) -> dict[str, dict]:
    """The study presets updated with an experiment's own (per profile)."""
    return {p: {**STUDY_PROFILES[p], **dict(extra.get(p, {}))} for p in STUDY_PROFILES}


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
@dataclass
class RealSets:
    pool: CXRDataset
    train: CXRDataset  # R: the labeled real training set
    val: CXRDataset
    test: CXRDataset
    external: dict[str, CXRDataset]

    def table(self) -> pd.DataFrame:
        sets = {"pool (unlabeled use)": self.pool, "R (labeled train)": self.train, "val": self.val, "test": self.test,
                **{f"external: {k}": v for k, v in self.external.items()}}
        rows = []
        for name, ds in sets.items():
            y, m = ds.targets()
            row = {"set": name, "images": len(ds), "patients": ds.meta["patient_id"].nunique()}
            for j, lab in enumerate(ds.label_names):
                row[lab] = f"{int((y[:, j] * m[:, j]).sum())} ({100 * (y[m[:, j], j].mean() if m[:, j].any() else np.nan):.1f}%)"
            rows.append(row)
        return pd.DataFrame(rows)


def real_sets(cfg: StudyConfig, progress: bool = True) -> RealSets:
    """Load the pool, R, val, test and external sets (see the module docstring)."""
    from ..data import load_dataset
    from ..data.labels import LabelPolicy

    kw = dict(root=cfg.root, size=cfg.image_size, labels=cfg.labels, progress=progress)
    pool = load_dataset(cfg.dataset, split="train", n_max=cfg.n_pool, **kw)
    lab_frac = pd.to_numeric(pool.meta.get("labeled_frac"), errors="coerce") if "labeled_frac" in pool.meta else None
    if cfg.labeled_fraction < 1:
        if lab_frac is None:
            raise ValueError(f"dataset {cfg.dataset!r} has no labeled subsets in its manifest; use labeled_fraction=1.0")
        keep = np.flatnonzero((lab_frac <= cfg.labeled_fraction + 1e-9).to_numpy())
        train = pool.subset(keep)
    else:
        train = pool
    val = load_dataset(cfg.dataset, split="val", n_max=cfg.n_val, **kw)
    test = load_dataset(cfg.dataset, split="test", n_max=cfg.n_test, **kw)
    external = {}
    for site in cfg.external_sites if cfg.dataset == "phantom" else ():
        # external sites do not annotate every label: "not annotated" is masked, not negative
        external[site] = load_dataset("phantom", site=site, split="test", n_max=cfg.n_external or 1000,
                                      policy=LabelPolicy(missing="ignore"), **kw)
    return RealSets(pool, train, val, test, external)


def fingerprint(ds: CXRDataset) -> str:
    """Content hash of a dataset (images, targets, masks, demographics): keys the cache."""
    from ..io import sha256_bytes

    x, y, m = ds.to_tensors()
    sex, age = ds.demographics()
    parts = [x.numpy().tobytes(), y.numpy().tobytes(), m.numpy().tobytes(), sex.tobytes(), np.nan_to_num(age, nan=-1).tobytes(),
             "|".join(ds.label_names).encode()]
    return sha256_bytes(b"".join(parts))[:20]


def subset(ds: CXRDataset, n: int, name: str | None = None) -> ArrayDataset:
    """The first ``n`` images of ``ds`` (in memory)."""
    if n > len(ds):
        raise ValueError(f"asked for {n} images of {ds.name}, which has {len(ds)}")
    out = ds.subset(np.arange(n))
    out.name = name or f"{ds.name}[:{n}]"
    return out


# ------------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------------
def generator_options(cfg: StudyConfig) -> dict:
    """Keyword arguments of :func:`cxrlib.diffusion.train_generator` for the study's recipe."""
    from ..diffusion import GENERATOR_PRESETS

    base = dict(GENERATOR_PRESETS["paper" if cfg.profile == "paper" else "cpu"])
    for k in ("total_steps", "checkpoint_every", "sample_every", "log_every"):
        base.pop(k, None)
    ch = tuple(cfg.gen_channels)
    groups = min(32, min(ch))
    while any(c % groups for c in ch):
        groups //= 2
    base.update(image_size=cfg.image_size, labels=tuple(cfg.labels), channels=ch, layers_per_block=cfg.gen_layers,
                time_scale_shift="scale_shift" if cfg.gen_adagn else "default", label_channels=cfg.gen_label_channels,
                attention=tuple([False] * (len(ch) - 1) + [True]), norm_groups=groups,
                batch_size=cfg.gen_batch_size, lr=cfg.gen_lr, ema_decay=cfg.gen_ema_decay,
                prediction_type=cfg.gen_prediction, beta_schedule=cfg.gen_schedule, cond_drop_prob=cfg.gen_cond_drop,
                warmup_steps=min(100, max(1, cfg.gen_steps // 10)), lr_schedule="constant", seed=cfg.seed)
    return base


def train_cached_generator(cfg: StudyConfig, train: CXRDataset, *, name: str, steps: int | None = None,
                           checkpoints: Sequence[int] = (), unconditional: bool = False, init_from: str | Path | None = None,
                           progress: bool = True, **overrides) -> dict[int, Path]:
    """Train (or fetch) a generator and its EMA snapshots at ``checkpoints``: ``{step: model folder}``.

    The run trains in a work folder under the cache (``work/<key>``), extending the same run from one
    checkpoint to the next (constant LR after warm-up, so an extended run equals an uninterrupted
    one), and an interrupted run resumes there. Each snapshot becomes its own cache entry
    ``generator/<key of recipe + step>``; the work folder is removed once the last one exists."""
    from .. import cache as C
    from ..diffusion import train_generator
    from ..utils import cache_root

    steps = int(steps if steps is not None else cfg.gen_steps)
    opts = generator_options(cfg)
    opts.update(overrides)
    opts.update(unconditional=unconditional)
    init_key = None
    if init_from is not None:
        from ..diffusion import load_generator

        init_key = load_generator(init_from).generator_id
    recipe = {"name": name, "options": {k: v for k, v in opts.items() if k not in ("device", "progress")},
              "init": init_key}
    inputs = [fingerprint(train)]
    snaps = sorted({int(c) for c in checkpoints if 0 < int(c) < steps} | {steps})
    keys = {s: C.key("generator", {**recipe, "steps": s}, inputs=inputs) for s in snaps}
    cache = C.default_cache()
    if all(cache.exists(k) for k in keys.values()):
        return {s: C.get(k) for s, k in keys.items()}
    work = cache_root() / "work" / C.key("generator-run", recipe, inputs=inputs).digest
    _discard_overshot_work(work, min(s for s, k in keys.items() if not cache.exists(k)))
    out: dict[int, Path] = {}
    for s in snaps:
        def produce(d, s=s):
            model_dir = train_generator(train_data=train, out_dir=work, total_steps=s, device=cfg.device, progress=progress,
                                        init_from=init_from, checkpoint_every=max(50, s // 8), sample_every=0,
                                        log_every=10, **opts)
            shutil.copytree(model_dir, d / "model")
            if (work / "train_log.csv").exists():
                shutil.copy(work / "train_log.csv", d / "train_log.csv")

        out[s] = C.get_or_create(keys[s], produce, expected_bytes=5e7, description=f"generator {name} @ {s} steps")
    shutil.rmtree(work, ignore_errors=True)
    return out


def _discard_overshot_work(work: Path, next_snapshot: int) -> None:
    """An interrupted run of the same recipe left ``work`` past the first snapshot still missing (e.g. it
    ran with other checkpoints): that snapshot cannot be taken from it, so the run restarts from step 0."""
    from ..io import safe_torch_load

    state = work / "resume" / "state.pt"
    if not state.exists():
        return
    try:
        step = int(safe_torch_load(state)["step"])
    except Exception as e:  # unreadable resume state: start over rather than fail later
        step, why = None, f"its resume state is unreadable ({e})"
    else:
        why = f"it is at step {step}, past the snapshot at step {next_snapshot} that is still missing"
    if step is None or step > next_snapshot:
        warnings.warn(f"generator work folder {work}: {why}; restarting this generator's training from step 0", stacklevel=3)
        shutil.rmtree(work)


def main_generator(cfg: StudyConfig, sets: RealSets, progress: bool = True) -> dict[int, Path]:
    """The study's conditional pixel DDPM trained from scratch on R, with its snapshots."""
    snaps = train_cached_generator(cfg, sets.train, name="ddpm-conditional", checkpoints=cfg.gen_checkpoints, progress=progress)
    return {s: p / "model" for s, p in snaps.items()}


def pretrained_generator(cfg: StudyConfig, sets: RealSets, progress: bool = True) -> Path:
    """The unconditional DDPM pretrained on the whole pool with every label hidden (Huijben 2024's
    first stage), same architecture and step count as the main generator. Chapters 4 (labeled
    fraction) and 7 (few-shot fine-tuning) fine-tune it; the cache shares it between them."""
    snaps = train_cached_generator(cfg, sets.pool, name="ddpm-unconditional-pretrain", unconditional=True, progress=progress)
    return snaps[cfg.gen_steps] / "model"


# ------------------------------------------------------------------------------------------------
# Synthetic sets
# ------------------------------------------------------------------------------------------------
def synthetic_set(cfg: StudyConfig, generator_dir: str | Path, conditions: pd.DataFrame, *, name: str, seed: int | None = None,
                  sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                  progress: bool = True) -> ArrayDataset:
    """Sample one image per condition row with per-image seeds (cached), as a labelled dataset whose
    labels are the conditions. Prefixes of a set equal smaller sets with the same seed."""
    from .. import cache as C
    from ..diffusion import load_generator
    from ..io import sha256_bytes
    from ..sampling import load_synthetic_set, write_synthetic_set

    sampler = sampler or cfg.sampler
    steps = int(steps if steps is not None else cfg.sampler_steps)
    guidance = float(cfg.guidance if guidance is None else guidance)
    seed = derive_seed(cfg.seed, "synthetic", name) % (2**31) if seed is None else seed
    gid = load_generator(generator_dir).generator_id
    cond_hash = sha256_bytes(conditions.to_csv(index=False).encode())[:16]
    k = C.key("synthetic", {"sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed, "n": len(conditions)},
              inputs=[f"generator:{gid}", f"conditions:{cond_hash}"])

    def produce(d):
        write_synthetic_set(generator_dir, conditions, d / "set", seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                            batch_size=64, device=cfg.device, progress=progress)

    entry = C.get_or_create(k, produce, expected_bytes=len(conditions) * (cfg.image_size**2 + 400) + 1e5,
                            description=f"synthetic {name}: {len(conditions)} images")
    ds = load_synthetic_set(entry / "set", verify=False)  # the cache verified every file already
    ds.name = f"synthetic:{name}"
    return ds


# ------------------------------------------------------------------------------------------------
# Classifiers and evaluation
# ------------------------------------------------------------------------------------------------
def train_cached_classifier(cfg: StudyConfig, train_sets: Sequence[CXRDataset], val: CXRDataset, *, seed: int,
                            balanced_sampling: bool = False, progress: bool = True, **overrides):
    """Train (or fetch) one classifier on the concatenation of ``train_sets``."""
    from .. import cache as C
    from ..classify import load_classifier, save_classifier, train_classifier

    spec = {f: getattr(cfg, f) for f in CLF_FIELDS}
    spec.update(seed=seed, labels=list(cfg.labels), balanced_sampling=balanced_sampling, **overrides)
    k = C.key("classifier", spec, inputs=[fingerprint(d) for d in train_sets] + [fingerprint(val)])

    def produce(d):
        model, hist = train_classifier(train=list(train_sets), val=val, labels=cfg.labels, arch=cfg.clf_arch,
                                       epochs=overrides.get("clf_epochs", cfg.clf_epochs), batch_size=cfg.clf_batch_size,
                                       lr=cfg.clf_lr, augment=cfg.clf_augment, balanced_sampling=balanced_sampling,
                                       seed=seed, device=cfg.device, progress=progress)
        save_classifier(model, d)
        hist.to_csv(d / "history.csv", index=False)

    return load_classifier(C.get_or_create(k, produce, expected_bytes=2e8, description="classifier"), device=cfg.device)


def oracle(cfg: StudyConfig, sets: RealSets, progress: bool = True):
    """The evaluation instrument of the fidelity audits: a classifier trained on the whole labeled
    pool (not only R, and never on synthetic images), used as the label-consistency oracle and,
    through its penultimate layer, as the ``study`` feature space of FD/KID/precision/recall."""
    return train_cached_classifier(cfg, [sets.pool], sets.val, seed=derive_seed(cfg.seed, "oracle") % 10_000,
                                   progress=progress)


def run_arms(cfg: StudyConfig, arms: Mapping[str, Sequence[CXRDataset]], sets: RealSets, *, reference: str,
             balanced: Sequence[str] = (), test_sets: Mapping[str, CXRDataset] | None = None,
             threshold_policy: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every arm for every seed and evaluate on each test set: the standard results table
    (``cxrlib.stats``) with an extra ``test_set`` column, plus ``pooled`` rows over seeds."""
    from ..classify import evaluate_classifiers
    from ..stats import summarize_seeds
    from ..utils import tqdm

    test_sets = dict(test_sets or {"internal": sets.test, **sets.external})
    tables = []
    jobs = [(seed, arm) for seed in cfg.clf_seeds() for arm in arms]
    bar = tqdm(jobs, desc="classifier arms", unit="model", **({} if progress else {"disable": True}))
    models_by_seed: dict[int, dict] = {}
    for seed, arm in bar:
        bar.set_postfix_str(f"{arm} seed {seed}")
        models_by_seed.setdefault(seed, {})[arm] = train_cached_classifier(
            cfg, arms[arm], sets.val, seed=seed, balanced_sampling=arm in balanced, progress=False)
    for tname, test in test_sets.items():
        per_seed = []
        for seed, models in models_by_seed.items():
            t = evaluate_classifiers(models, test, reference_arm=reference, val=sets.val,
                                     threshold_policy=threshold_policy or cfg.threshold_policy, n_boot=cfg.n_boot,
                                     seed=seed, bootstrap_seed=cfg.seed, device=cfg.device)
            per_seed.append(t)
        res = pd.concat(per_seed, ignore_index=True)
        if len(models_by_seed) > 1:
            res = pd.concat([res, summarize_seeds(res, reference_arm=reference)], ignore_index=True)
        tables.append(res.assign(test_set=tname))
    return pd.concat(tables, ignore_index=True)


def headline(results: pd.DataFrame, metric: str = "auroc", label: str = "macro", test_set: str = "internal") -> pd.DataFrame:
    """One row per arm: the pooled (or single-seed) estimate, CI and adjusted p-value of a metric."""
    r = results[(results.metric == metric) & (results.label == label) & (results.test_set == test_set)]
    pooled = r[r.seed.astype(str) == "pooled"]
    r = pooled if len(pooled) else r
    return r[["arm", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "n", "n_seeds", "test"]].reset_index(drop=True)
