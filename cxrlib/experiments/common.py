"""What experiments 2-8 share: the study config (data, generator, sampler and classifier recipes),
the real data sets, cached classifiers, and the one arms x seeds training/evaluation loop
(:func:`evaluate_arms`) with the study's statistics. The generators and synthetic sets they share
are in :mod:`cxrlib.experiments.synthetic`.

Every expensive artifact goes through :mod:`cxrlib.cache`, keyed by the fields that produce it and
by the *content* of its inputs, so experiments that share a recipe share the artifact, and changing
a classifier parameter never retrains a generator.

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
import os
import time
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError, ExperimentConfig
from ..data.base import ArrayDataset, CXRDataset
from ..data.labels import COMPETITION_LABELS
from ..plots import plot_validation_curve  # noqa: F401  (the chapters call it as common.plot_validation_curve)
from ..seed_contrasts import seed_average  # noqa: F401  (the chapters' summaries import it from here)
from ..utils import derive_seed

SMOKE_LABELS = ("Cardiomegaly", "Edema", "Pleural Effusion")

# Presets shared by experiments 2-8 (each experiment adds its own on top).
STUDY_PROFILES: dict[str, dict] = {
    "smoke": dict(image_size=32, labels=SMOKE_LABELS, n_pool=400, labeled_fraction=0.5, n_val=120, n_test=200,
                  n_external=100, gen_channels=(16, 32), gen_steps=30, gen_checkpoints=(15,), gen_batch_size=16,
                  sampler_steps=4, clf_epochs=1, clf_steps=8, clf_eval_every=4, n_seeds=1, n_boot=30, oracle_epochs=1),
    # cpu is the hour book (make book: <= 60 min cold on 2 cores), cpu-full the longer recipes and complete grids.
    # Step budget (batch 64): the real arm's best validation macro-AUROC (R = 969 phantom images, seeds 0/1) is
    # 0.78/0.79 with 150 steps, 0.79/0.80 with 200 and 0.82/0.82 with 400 (each run's cosine schedule; measured
    # 2026-12-04), so cpu trains 0.02-0.03 below the 400-step plateau of cpu-full, every arm alike.
    # Generator batch 32 at cpu (64 at cpu-full): half the training compute for the same 1000 steps.
    # ≥ 5 classifier seeds per arm: the primary p-values come from the variation across training seeds
    # executor "local": the arms x seeds classifiers on one worker process per core (0.95-1.09x on 2 cores, more with more; make bench)
    "cpu": dict(clf_steps=150, clf_eval_every=50, n_seeds=5, n_boot=200, gen_batch_size=32, executor="local"),
    "cpu-full": dict(clf_steps=400, clf_eval_every=25, n_boot=300, gen_batch_size=64),
    "paper": dict(dataset="chexpert", image_size=256, labels=tuple(l for l in COMPETITION_LABELS), n_pool=None,
                  labeled_fraction=1.0, n_val=None, n_test=None, n_external=None, external_sites=(),
                  gen_channels=(128, 128, 256, 256, 512, 512), gen_layers=2, gen_label_channels=False, gen_steps=200_000, gen_checkpoints=(50_000, 100_000, 150_000),
                  gen_batch_size=32, gen_lr=1e-4, gen_ema_decay=0.9999, gen_prediction="v_prediction",
                  gen_schedule="squaredcos_cap_v2", gen_cond_hidden=512, gen_dropout=0.1, gen_mixed_precision="bf16",
                  sampler="ddim", sampler_steps=200, clf_arch="densenet121", clf_epochs=20, clf_steps=40_000,
                  clf_eval_every=2_000, clf_data_workers=4, n_seeds=5, n_boot=1000,
                  oracle_arch="densenet121", oracle_epochs=20),
}

# The classifier recipe's fields (part of every classifier's cache key).
CLF_FIELDS = ("clf_arch", "clf_epochs", "clf_steps", "clf_eval_every", "clf_batch_size", "clf_lr", "clf_augment")


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
    # external test sets: on the phantom its sites (nih, padchest); on real data "NAME=ROOT" entries, each the
    # test split of a real dataset read from ROOT (e.g. "nih=/data/NIH"), a label it lacks left out of its metrics
    external_sites: tuple[str, ...] = ("nih", "padchest")
    n_external: int | None = 1000  # images per external site
    # generator (the conditional pixel DDPM of chapter 2) ------------------------------------------
    gen_channels: tuple[int, ...] = (32, 64, 64)  # UNet widths per resolution
    gen_layers: int = 1  # ResNet blocks per resolution level
    gen_adagn: bool = True  # condition + time embedding as GroupNorm scale/shift (ADM's AdaGN), not added
    gen_label_channels: bool = True  # label states also as constant input channels (fast conditioning on a CPU budget)
    gen_steps: int = 1000  # optimizer steps (labels carried from ~600 steps in the chapter-2 A/B; 1.7 s/step on 2 AVX2 cores, make bench)
    gen_checkpoints: tuple[int, ...] = (200, 500)  # earlier EMA snapshots kept (fidelity vs utility)
    gen_batch_size: int = 64
    gen_lr: float = 1e-3  # AdamW, constant after warm-up
    gen_ema_decay: float = 0.995  # short CPU runs need a fast EMA
    gen_prediction: str = "epsilon"  # epsilon | v_prediction
    gen_schedule: str = "linear"  # linear | squaredcos_cap_v2
    gen_cond_drop: float = 0.1  # P(condition dropped) in training: enables classifier-free guidance
    gen_cond_hidden: int = 128  # width of the condition encoder (labels, sex, age -> embedding)
    gen_dropout: float = 0.0  # dropout in the UNet's ResNet blocks
    gen_mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate autocast; bf16 on a recent GPU)
    # sampling ------------------------------------------------------------------------------------
    sampler: str = "ddim"  # ddpm | ddim | dpm++ (DDIM-15 carried the labels best in the chapter-2 A/B)
    sampler_steps: int = 15
    guidance: float = 2.0  # classifier-free guidance weight w (0 = plain conditional model)
    # classifiers ---------------------------------------------------------------------------------
    clf_arch: str = "small_cnn"  # small_cnn | resnet18 | resnet50 | densenet121 | efficientnet_b0 | convnext_tiny | inception_v3
    clf_epochs: int = 8  # passes over each arm's own set; used only when clf_steps is None
    # The fair protocol: every arm of a comparison gets the same optimizer-step budget, whatever its set
    # size, and the weights of its best validation macro-AUROC (validated every clf_eval_every steps).
    # None: clf_epochs passes over each arm's own set (a larger set also trains longer).
    clf_steps: int | None = None
    clf_eval_every: int | None = None  # None: clf_steps // 10
    clf_batch_size: int = 64
    clf_lr: float = 1e-3
    clf_augment: bool = True
    clf_data_workers: int | None = 0  # images streamed per batch with N decoding workers (same weights); None: all in memory
    n_seeds: int = 3  # classifier training seeds per arm (seed, seed+1, ...)
    n_boot: int = 300  # bootstrap resamples for CIs
    threshold_policy: str = "youden"  # fixed | youden | prevalence | sensitivity (chosen on val)
    # the oracle: the evaluation instrument of the fidelity audits (label consistency, the study feature
    # space), a classifier trained on the labeled pool; its other settings are the clf_* ones
    oracle_arch: str = "small_cnn"
    oracle_epochs: int = 8
    # where the arms x seeds classifiers train (cxrlib.executor): "serial" (this process), "local" / "local:N"
    # (N worker processes, cores/N threads each), or a Dask scheduler address "tcp://host:8786"
    executor: str = "serial"

    PROFILES: ClassVar = STUDY_PROFILES

    def hash(self, exclude: tuple[str, ...] = ("device", "executor")) -> str:
        return super().hash(exclude)  # where a classifier trains does not change what the run computes

    def validate(self) -> None:
        super().validate()
        from ..data import check_data_params

        check_data_params(self.dataset, self.labels)
        from ..generators.sampling import SAMPLERS
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"parameter 'sampler': {self.sampler!r} is not one of {list(SAMPLERS)}")
        if self.threshold_policy not in ("fixed", "youden", "prevalence", "sensitivity"):
            raise ConfigError(f"parameter 'threshold_policy': {self.threshold_policy!r} is not one of fixed, youden, prevalence, sensitivity")
        if not 0 < self.labeled_fraction <= 1:
            raise ConfigError(f"parameter 'labeled_fraction': must be in (0, 1], got {self.labeled_fraction}")
        if any(c >= self.gen_steps for c in self.gen_checkpoints):
            raise ConfigError(f"parameter 'gen_checkpoints': each must be < gen_steps={self.gen_steps}, got {self.gen_checkpoints}")
        if self.gen_mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"parameter 'gen_mixed_precision': {self.gen_mixed_precision!r} is not one of no, fp16, bf16")
        if self.n_seeds < 1:
            raise ConfigError(f"parameter 'n_seeds': must be >= 1, got {self.n_seeds}")
        external_sites(self)  # ConfigError for a site that cannot be read on this dataset
        from ..executor import parse_executor
        try:
            parse_executor(self.executor)
        except ValueError as e:
            raise ConfigError(f"parameter 'executor': {e}") from None
        if self.clf_data_workers is not None and self.clf_data_workers < 0:
            raise ConfigError(f"parameter 'clf_data_workers': must be >= 0 or None, got {self.clf_data_workers}")
        for name in ("clf_steps", "clf_eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"parameter {name!r}: must be >= 1 or None, got {getattr(self, name)}")

    def clf_seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.n_seeds)]


def merge_profiles(extra: Mapping[str, Mapping]) -> dict[str, dict]:
    """The study presets updated with an experiment's own (per profile; ``cpu-full`` holds only what it
    changes on top of ``cpu``, :data:`cxrlib.config.PROFILE_BASES`)."""
    from ..config import PROFILE_NAMES

    unknown = set(extra) - set(PROFILE_NAMES)
    if unknown:
        raise ValueError(f"merge_profiles: unknown profile(s) {sorted(unknown)}; profiles are {list(PROFILE_NAMES)}")
    return {p: {**STUDY_PROFILES.get(p, {}), **dict(extra.get(p, {}))} for p in PROFILE_NAMES}


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
    for site, root in external_sites(cfg).items():
        # external sites do not annotate every label: "not annotated" is masked, not negative
        if root is None:
            external[site] = load_dataset("phantom", site=site, split="test", n_max=cfg.n_external or 1000,
                                          policy=LabelPolicy(missing="ignore"), **kw)
        else:
            external[site] = load_dataset(site, split="test", n_max=cfg.n_external,
                                          policy=LabelPolicy(missing="ignore"), **{**kw, "root": root})
    return RealSets(pool, train, val, test, external)


def external_sites(cfg: StudyConfig) -> dict[str, str | None]:
    """``{site: root}`` of ``cfg.external_sites``: on the phantom its own sites (root None), on real data
    ``NAME=ROOT`` entries (NAME a dataset of :data:`cxrlib.data.DATASETS`). Anything else is a
    :class:`ConfigError` naming the entry: a site is never dropped silently."""
    from ..data import DATASETS
    from ..data.phantom import SITES

    out: dict[str, str | None] = {}
    for entry in cfg.external_sites:
        name, eq, root = str(entry).partition("=")
        if name in out:
            raise ConfigError(f"parameter 'external_sites': {name!r} is given twice")
        if cfg.dataset == "phantom":
            if eq or name not in SITES or name == "internal":
                raise ConfigError(f"parameter 'external_sites': {entry!r} is not a phantom site; the phantom's external "
                                  f"sites are {[s for s in SITES if s != 'internal']}")
            out[name] = None
        elif not eq or not root or name not in DATASETS or name == "phantom":
            raise ConfigError(f"parameter 'external_sites': on dataset {cfg.dataset!r} an external test set is "
                              f"'NAME=ROOT' with NAME one of {[d for d in DATASETS if d != 'phantom']} (e.g. "
                              f"'nih=/data/NIH'), got {entry!r}; use [] for none")
        else:
            out[name] = root
    return out


def fingerprint(ds: CXRDataset) -> str:
    """Content hash of a dataset (images, targets, masks, demographics): keys the cache.

    Computed once per dataset object (memoized on it). A dataset over image files
    (:class:`cxrlib.data.real.FileDataset`, real data) is keyed by its files' identity (path, size,
    modification time) and its preprocessing (image size, decoding limits), not by decoding every
    image; an in-memory dataset (the phantom, synthetic sets, subsets) by its pixels."""
    from ..data.real import FileDataset
    from ..io import sha256_bytes

    memo = ds.__dict__.get("_cxr_fingerprint")
    if memo is not None:
        return memo
    sex, age = ds.demographics()
    if isinstance(ds, FileDataset):
        y, m = ds.targets()
        files = []
        for p in ds.meta["path"]:
            st = os.stat(p)
            files.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
        pixels = ("\n".join(files) + f"|size={ds.size}|max_pixels={ds.max_pixels}|min_side={ds.min_side}").encode()
        y, m = np.asarray(y, np.float32), np.asarray(m, bool)
    else:
        x, y, m = ds.to_tensors()
        pixels, y, m = x.numpy().tobytes(), y.numpy(), m.numpy()
    parts = [pixels, y.tobytes(), m.tobytes(), sex.tobytes(), np.nan_to_num(age, nan=-1).tobytes(),
             "|".join(ds.label_names).encode()]
    key = sha256_bytes(b"".join(parts))[:20]
    ds.__dict__["_cxr_fingerprint"] = key
    return key


def subset(ds: CXRDataset, n: int, name: str | None = None) -> ArrayDataset:
    """The first ``n`` images of ``ds`` (in memory)."""
    if n > len(ds):
        raise ValueError(f"asked for {n} images of {ds.name}, which has {len(ds)}")
    out = ds.subset(np.arange(n))
    out.name = name or f"{ds.name}[:{n}]"
    return out


# ------------------------------------------------------------------------------------------------
# Classifiers and evaluation
# ------------------------------------------------------------------------------------------------
def train_cached_classifier(cfg: StudyConfig, train_sets: Sequence[CXRDataset], val: CXRDataset, *, seed: int,
                            balanced_sampling: bool = False, progress: bool = True, **overrides):
    """Train (or fetch) one classifier on the concatenation of ``train_sets``. The model carries
    ``training_record = {"optimizer_steps": steps run, "selected_step": step of the kept weights}``."""
    from .. import cache as C
    from ..classify import load_classifier, save_classifier, train_classifier

    spec = {f: getattr(cfg, f) for f in CLF_FIELDS}
    spec.update(seed=seed, labels=list(cfg.labels), balanced_sampling=balanced_sampling, **overrides)
    if spec["clf_steps"] is not None:  # under a step budget the epoch count never reaches the training: not in the key
        del spec["clf_epochs"]
    k = C.key("classifier", spec, inputs=[fingerprint(d) for d in train_sets] + [fingerprint(val)])

    def produce(d):
        model, hist = train_classifier(train=list(train_sets), val=val, labels=cfg.labels, arch=cfg.clf_arch,
                                       epochs=overrides.get("clf_epochs", cfg.clf_epochs), steps=cfg.clf_steps,
                                       eval_every=cfg.clf_eval_every, batch_size=cfg.clf_batch_size,
                                       lr=cfg.clf_lr, augment=cfg.clf_augment, balanced_sampling=balanced_sampling,
                                       seed=seed, device=cfg.device, data_workers=cfg.clf_data_workers, progress=progress)
        save_classifier(model, d)
        hist.to_csv(d / "history.csv", index=False)

    entry = C.get_or_create(k, produce, expected_bytes=2e8, description="classifier")
    model = load_classifier(entry, device=cfg.device)
    model.training_history = pd.read_csv(entry / "history.csv")
    model.training_record = training_record(model.training_history)
    return model


def training_record(history: pd.DataFrame) -> dict:
    """``optimizer_steps`` (steps run) and ``selected_step`` (the step of the kept weights: the last
    validation marked best, else the last step) of a classifier's training history."""
    steps = int(history["step"].iloc[-1])
    best = history.loc[history["best"].astype(bool), "step"]
    return {"optimizer_steps": steps, "selected_step": int(best.iloc[-1]) if len(best) else steps}


def oracle(cfg: StudyConfig, sets: RealSets, progress: bool = True):
    """The evaluation instrument of the fidelity audits: a classifier trained on the whole labeled
    pool (not only R, and never on synthetic images), used as the label-consistency oracle and,
    through its penultimate layer, as the ``study`` feature space of FD/KID/precision/recall. Its
    architecture and epochs are ``oracle_arch`` / ``oracle_epochs`` (the same in every chapter, so the
    cache trains it once); its other settings are the chapter's ``clf_*``."""
    return train_cached_classifier(cfg.replace(clf_arch=cfg.oracle_arch, clf_epochs=cfg.oracle_epochs, clf_steps=None,
                                               clf_eval_every=None), [sets.pool],
                                   sets.val, seed=derive_seed(cfg.seed, "oracle") % 10_000, progress=progress)


THRESHOLD_FREE = ("auroc", "auprc", "brier", "ece")  # metrics that need no decision threshold


def all_test_sets(sets: RealSets, external: bool = True) -> dict[str, CXRDataset]:
    """``{"internal": test, <site>: external set, ...}`` (the external sites only with ``external``)."""
    return {"internal": sets.test, **(sets.external if external else {})}


def evaluate_arms(cfg: StudyConfig, arms: Mapping[str, Sequence[CXRDataset]], sets: RealSets, *, reference: str,
                  metrics: Sequence[str] | None = None, policies: Sequence[str] | None = None, balanced: Sequence[str] = (),
                  test_sets: Mapping[str, CXRDataset] | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every arm for every seed (cached) and compare the arms on every test set: the one arms x
    seeds loop of the experiments.

    1. Every arm x seed (``cfg.clf_seeds()``) is trained or fetched (:func:`train_cached_classifier`;
       the arms in ``balanced`` with balanced sampling) and predicts the validation set and every
       test set once.
    2. Per test set and seed, :func:`cxrlib.stats.compare_arms` gives estimates, patient-level
       bootstrap CIs and p-values against ``reference`` (Holm-adjusted), for ``metrics`` (default: all
       of :data:`cxrlib.metrics.METRICS`). Thresholds are chosen on validation by ``cfg.threshold_policy``;
       with ``policies`` (several threshold policies compared), the threshold-free metrics are evaluated
       once (``policy = ""``) and the threshold metrics once per policy, in a ``policy`` column.
    3. With several seeds, ``pooled`` rows per test set (and policy): :func:`cxrlib.stats.summarize_seeds`.

    Returns the results table with a ``test_set`` column (and ``policy``). Default ``test_sets``: the
    internal test set and every external site."""
    from ..metrics import METRICS
    from ..stats import compare_arms, summarize_seeds

    if reference not in arms:
        raise ValueError(f"reference arm {reference!r} is not among the arms {list(arms)}")
    test_sets = dict(test_sets if test_sets is not None else all_test_sets(sets))
    metrics = list(metrics if metrics is not None else METRICS)
    free = [m for m in metrics if m in THRESHOLD_FREE]
    thresh = [m for m in metrics if m not in THRESHOLD_FREE]
    if policies is None:  # one policy; none is needed when every metric is threshold-free
        runs = [(cfg.threshold_policy if thresh else "fixed", metrics)]
    else:
        if not policies and thresh:
            raise ValueError(f"threshold metrics {thresh} need at least one threshold policy")
        runs = ([("", free)] if free else []) + [(p, thresh) for p in policies if thresh]

    def targets(ds):
        y, m = ds.targets()
        cols = [list(ds.label_names).index(l) for l in cfg.labels]
        return y[:, cols], m[:, cols]

    # 1. train (or fetch) every arm x seed, and predict val and every test set once (cfg.executor: in
    #    this process or in parallel workers; the cells are independent and meet in the cache)
    from ..cache import record_events
    from ..executor import run_grid

    jobs = [(seed, arm) for seed in cfg.clf_seeds() for arm in arms]
    arm_sets = {arm: list(ds) for arm, ds in arms.items()}
    cells = [dict(cfg=cfg, train_sets=arm_sets[arm], val=sets.val, test_sets=test_sets, seed=seed, balanced=arm in balanced)
             for seed, arm in jobs]
    val_scores: dict[int, dict] = {}
    test_scores: dict[int, dict] = {}
    trained = []
    t0 = time.perf_counter()
    outs = run_grid(arm_cell, cells, executor=cfg.executor, desc="classifier arms", progress=progress)
    overlap = (time.perf_counter() - t0) / max(sum(o[-1] for o in outs), 1e-9)  # < 1 when workers ran side by side
    for (seed, arm), (record, val_s, test_s, pid, events, _) in zip(jobs, outs):
        trained.append({"seed": seed, "arm": arm, **record})
        val_scores.setdefault(seed, {})[arm] = val_s
        for t, scores in test_s.items():
            test_scores.setdefault(seed, {}).setdefault(t, {})[arm] = scores
        if pid != os.getpid():
            record_events(events, wall_share=min(overlap, 1.0))
    y_val, m_val = targets(sets.val)
    # 2. compare the arms per test set, seed (and policy)
    tables = []
    for t, ds in test_sets.items():
        y, m = targets(ds)
        pid = ds.meta["patient_id"].to_numpy()
        for policy, mets in runs:
            per_seed = [compare_arms(y, test_scores[seed][t], pid, label_names=cfg.labels, reference_arm=reference, mask=m,
                                     y_val=y_val, val_scores=val_scores[seed], mask_val=m_val,
                                     threshold_policy=policy or "fixed", metrics=mets, n_boot=cfg.n_boot, seed=seed,
                                     bootstrap_seed=cfg.seed)
                        for seed in cfg.clf_seeds()]
            res = pd.concat(per_seed, ignore_index=True)
            # 3. pooled over seeds
            if len(per_seed) > 1:
                res = pd.concat([res, summarize_seeds(res, reference_arm=reference)], ignore_index=True)
            res = res.assign(test_set=t)
            tables.append(res if policies is None else res.assign(policy=policy))
    return with_training_budget(pd.concat(tables, ignore_index=True), pd.DataFrame(trained), cfg)


def arm_cell(cfg: StudyConfig, train_sets: list, val: CXRDataset, test_sets: dict, seed: int, balanced: bool):
    """One arm x seed of :func:`evaluate_arms`: train (or fetch) its classifier, predict ``val`` and every
    test set. Returns ``(training_record, val_scores, {test set: scores}, pid, cache events, seconds)``;
    a top-level function, so a worker process of ``cfg.executor`` can run it."""
    from .. import cache
    from ..classify import predict

    start, t0 = len(cache.events()), time.perf_counter()
    model = train_cached_classifier(cfg, train_sets, val, seed=seed, balanced_sampling=balanced, progress=False)
    tests = {t: predict(model, ds, device=cfg.device, data_workers=cfg.clf_data_workers) for t, ds in test_sets.items()}
    val_scores = predict(model, val, device=cfg.device, data_workers=cfg.clf_data_workers)
    return model.training_record, val_scores, tests, os.getpid(), cache.events()[start:], time.perf_counter() - t0


def validation_curve(cfg: StudyConfig, train_sets: Sequence[CXRDataset], sets: RealSets, progress: bool = True) -> pd.DataFrame:
    """Validation macro-AUROC against optimizer steps of the classifier trained on ``train_sets`` (for
    every seed of ``cfg``; the same cached models as :func:`evaluate_arms`): ``seed, step, epoch,
    train_loss, val_macro_auroc, best``. Shown for the real arm, it tells whether the step budget
    sits on the plateau."""
    parts = [train_cached_classifier(cfg, train_sets, sets.val, seed=seed, progress=progress).training_history.assign(seed=seed)
             for seed in cfg.clf_seeds()]
    return pd.concat(parts, ignore_index=True)[["seed", "step", "epoch", "train_loss", "val_macro_auroc", "best"]]


def data_note(cfg: StudyConfig) -> str:
    """What data this run's numbers come from, for a chapter's summary: the phantom (a simulation:
    about the methods) or the real dataset and external test sets the run was given."""
    if cfg.dataset == "phantom":
        return (f"**Data of this run:** the phantom ({cfg.image_size} px, profile `{cfg.profile}`), a simulation: its "
                "findings are drawn shapes, so these numbers are about the methods, not about clinical performance. "
                "The `paper` profile runs the same design on a real dataset.")
    ext = ", ".join(f"{n} ({r})" for n, r in external_sites(cfg).items()) or "none"
    return (f"**Data of this run:** `{cfg.dataset}` read from `{cfg.root}` ({cfg.image_size} px, profile `{cfg.profile}`); "
            f"external test sets: {ext}.")


def budget_text(cfg: StudyConfig) -> str:
    """The classifier training budget of ``cfg`` in words (for the chapters' prose)."""
    if cfg.clf_steps is None:
        return (f"{cfg.clf_epochs} epochs over its own training set (a larger set also gets more optimizer steps), "
                f"batch {cfg.clf_batch_size}")
    every = cfg.clf_eval_every or max(1, cfg.clf_steps // 10)
    return (f"{cfg.clf_steps} optimizer steps of batch {cfg.clf_batch_size} whatever its set size, keeping the weights "
            f"of its best validation macro-AUROC (validated every {every} steps)")


def with_training_budget(results: pd.DataFrame, trained: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Add ``optimizer_steps`` and ``selected_step`` (of the row's arm and seed; pooled rows: the steps
    if every seed ran the same, and the median selected step). Under a step budget
    (``cfg.clf_steps``) every arm must have run exactly that many steps: a ValueError otherwise."""
    if cfg.clf_steps is not None and not (trained["optimizer_steps"] == cfg.clf_steps).all():
        bad = trained[trained["optimizer_steps"] != cfg.clf_steps]
        raise ValueError(f"unequal training budgets: clf_steps={cfg.clf_steps} but {bad.to_dict('records')}")
    per = trained.set_index(["seed", "arm"])
    pooled = trained.groupby("arm").agg(optimizer_steps=("optimizer_steps", lambda s: s.iloc[0] if s.nunique() == 1 else np.nan),
                                        selected_step=("selected_step", "median"))
    seeds = pd.to_numeric(results["seed"], errors="coerce")
    out = results.copy()
    for col in ("optimizer_steps", "selected_step"):
        from_seed = [per[col].get((int(s), a), np.nan) if pd.notna(s) else np.nan for s, a in zip(seeds, out["arm"])]
        from_pool = out["arm"].map(pooled[col])
        out[col] = np.where(seeds.notna(), from_seed, from_pool)
    return out





def headline(results: pd.DataFrame, metric: str = "auroc", label: str = "macro", test_set: str = "internal") -> pd.DataFrame:
    """One row per arm: the pooled (or single-seed) estimate, CI and adjusted p-value of a metric."""
    r = results[(results.metric == metric) & (results.label == label) & (results.test_set == test_set)]
    pooled = r[r.seed.astype(str) == "pooled"]
    r = pooled if len(pooled) else r
    return r[["arm", "estimate", "ci_low", "ci_high", "p_value", "p_adj", "n", "n_seeds", "test"]].reset_index(drop=True)
