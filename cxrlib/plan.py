"""The cost plan of a run, before it starts: ``cxr run NB --plan [--budget HOURS]``.

A chapter that can be planned has ``plan_jobs(cfg, data) -> list[Job]``: every generator training,
sampling and classifier training its run needs, derived from the config by the same functions that
build its arms (so the plan cannot drift from what runs). :func:`plan_data` counts the images of
each set from the dataset's metadata, reading no image (on CheXpert and NIH without ``root``, from
the label files torchxrayvision ships).

**The estimate** (:func:`estimate`): each job's optimizer steps (or network evaluations) times its
batch, divided by a rate measured by ``make bench`` on this machine (the latest run in
``$CXR_BENCH_DIR``, default ``bench/results/``; without one, a short benchmark runs first). A model or size the benchmark did not time is
scaled by its forward FLOPs per image (``torch.utils.flop_counter`` on the meta device: nothing is
computed) against the benchmarked one, e.g. densenet121 at 256 px from small_cnn at 32 px — an
extrapolation that assumes the same achieved FLOP/s, so it is a rough guide, not a promise. The
rates are those of the run's ``device``: for a GPU run, ``cxr bench --device cuda`` on that machine
first (without such results the plan says so rather than guess from the CPU). Every job is counted as if the cache were empty: what earlier
runs cached makes the run shorter, never longer.

**The memory bound**: a classifier that streams its images (``clf_data_workers``, every profile)
holds the batches in flight; the in-memory paths (generator training, sampled sets, ``clf_data_workers
= None``) hold a job's whole set as uint8 images (``x3`` for the copies made while concatenating),
plus the model's weights, gradients and Adam moments; the largest job sets the bound.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .errors import UserError

KINDS = ("generator", "sampling", "classifier")


@dataclasses.dataclass(frozen=True)
class Job:
    kind: str  # generator | sampling | classifier
    name: str  # what it is, e.g. "real+synthetic 1000% [R-only 1], seed 2"
    steps: int  # optimizer steps; sampling: network evaluations per image (sampler steps x 2 under guidance)
    batch: int  # images per step; sampling: images sampled
    image_size: int
    model: str  # classifier architecture, or "generator"
    held_images: int  # images the job holds in memory (its training set, or the images it samples)
    eval_images: int = 0  # images it predicts (validations and test sets), classifiers only
    shared: str = ""  # a model several chapters share through the cache (e.g. "main generator"): a book plan counts it once
    step_flops: float = 0.0  # generator / sampling jobs of another family (GAN, latent): FLOPs per image of a training
    # step or network evaluation (0: the pixel DDPM recipe's, 3 forwards per training step)


@dataclasses.dataclass
class PlanData:
    """What a chapter's plan may read of the data, none of it an image: ``sizes`` (images in the pool,
    R = ``train``, val, test and each ``external <site>``), :meth:`labeled` (images of R_f) and
    :meth:`real` (R as a stand-in set with its real metadata, for rules that read R's labels)."""

    sizes: dict[str, int]
    pool_meta: pd.DataFrame
    labeled_fraction: float

    def labeled(self, f: float) -> int:
        return len(self._rows(f))

    def _rows(self, f: float) -> pd.DataFrame:
        if f >= 1:
            return self.pool_meta
        if "labeled_frac" not in self.pool_meta:  # as the run (pretraining.labeled_subset): never the whole pool silently
            raise UserError(f"the dataset has no labeled subsets in its manifest: labeled fraction {f:g} cannot be planned "
                            "(use fractions of 1.0 only)")
        return self.pool_meta[pd.to_numeric(self.pool_meta["labeled_frac"], errors="coerce") <= f + 1e-9]

    def real(self):
        from .data.labels import CHEXPERT_LABELS

        meta = self._rows(self.labeled_fraction)
        return stand_in(len(meta), meta.reset_index(drop=True), [l for l in CHEXPERT_LABELS if l in meta])


def plan_data(cfg) -> PlanData:
    """The :class:`PlanData` of a study config, from the dataset's metadata (no image is read; the same
    data asked for again, e.g. by the next chapter of a book plan, is read once)."""
    from .experiments.common import external_sites

    sites = tuple(external_sites(cfg).items())
    data = _plan_data(cfg.dataset, cfg.root, cfg.n_pool, cfg.n_val, cfg.n_test, cfg.labeled_fraction, sites, cfg.n_external)
    return dataclasses.replace(data, sizes=dict(data.sizes))


@functools.lru_cache(maxsize=8)
def _plan_data(dataset, root, n_pool, n_val, n_test, labeled_fraction, sites, n_external) -> PlanData:
    from .data import load_meta

    def count(split, n_max):
        return len(load_meta(dataset, root=root, split=split, n_max=n_max)[0])

    pool, _ = load_meta(dataset, root=root, split="train", n_max=n_pool)
    data = PlanData({}, pool, labeled_fraction)
    data.sizes = {"pool": len(pool), "train": data.labeled(labeled_fraction), "val": count("val", n_val),
                  "test": count("test", n_test)}
    for site, site_root in sites:
        data.sizes[f"external {site}"] = (n_external or 1000) if site_root is None else \
            len(load_meta(site, root=site_root, split="test", n_max=n_external)[0])
    return data


@functools.lru_cache(maxsize=None)
def classifier_flops(arch: str, size: int, n_outputs: int = 5) -> float:
    """Forward FLOPs per image of a classifier (counted on the meta device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models.classifiers import build_classifier

    with torch.device("meta"):
        model = build_classifier(arch, n_outputs, in_channels=1, image_size=size)
        x = torch.zeros(1, 1, size, size)
    with FlopCounterMode(display=False) as fc:
        model(x)
    return float(fc.get_total_flops())


@functools.lru_cache(maxsize=None)
def _generator_flops(options_json: str) -> tuple[float, int]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models.unet import Condition, ConditionalUNet, generator_config_of

    o = json.loads(options_json)
    conf = generator_config_of(o)
    s, n = o["image_size"], len(o["labels"])
    with torch.device("meta"):
        model = ConditionalUNet(conf)
        x, t = torch.zeros(1, 1, s, s), torch.zeros(1, dtype=torch.long)
        cond = Condition(torch.zeros(1, n), torch.ones(1, n, dtype=torch.bool), torch.zeros(1, dtype=torch.long), torch.zeros(1))
    with FlopCounterMode(display=False) as fc:
        model(x, t, cond)
    return float(fc.get_total_flops()), sum(p.numel() for p in model.parameters())


def generator_flops(cfg) -> tuple[float, int]:
    """Forward FLOPs per image and parameters of the study's generator recipe of ``cfg`` (on the meta device)."""
    from .experiments.synthetic import generator_options

    return _generator_flops(json.dumps(generator_options(cfg), sort_keys=True, default=list))


def bench_rates(results_dir: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """The reference rates of the latest ``make bench`` run on ``device`` (``bench/results/bench-*.json``): classifier
    training images/s of small_cnn at 32 px, generator training images/s and DDIM image-steps/s of the
    benchmarked recipe (``recipe``: its profile). Without results, the short benchmark of an earlier plan
    (``short-*.json`` there), or one run now (about a minute on 2 cores) and kept for the next plan."""
    from . import bench
    from .io import atomic_write_json

    folder = Path(results_dir) if results_dir else bench.results_dir()
    kind = device.split(":")[0]

    def on_device(pattern):
        return [f for f in sorted(folder.glob(pattern))
                if json.loads(f.read_text()).get("machine", {}).get("device", "cpu").split(":")[0] == kind]

    files = on_device("bench-*.json") or on_device("short-*.json")
    if files:
        rows = json.loads(files[-1].read_text())["rows"]
        source = str(files[-1]) + (" (a plan's short benchmark; make bench measures longer)" if "short-" in files[-1].name else "")
    elif kind != "cpu":
        raise UserError(f"no benchmark results on {device!r} in {folder}: run `cxr bench --device {device}` on the machine "
                        "that will run the study, then plan again")
    else:  # a short benchmark now (about a minute on 2 cores); make bench measures longer and keeps its results
        rows = bench.bench_classifier(size=32, n=512) + bench.bench_generator(steps=10, n_sample=32, sampler_steps={"ddim": 10})
        kept = folder / f"short-{time.strftime('%Y%m%d-%H%M%S')}.json"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(kept, {"machine": bench.machine(device), "rows": rows})
        source = f"a short benchmark run now (no make bench results in {folder}; kept as {kept.name} for the next plan)"
    return rates_from_rows(rows, source)


def rates_from_rows(rows: Sequence[dict], source: str) -> dict[str, Any]:
    """The plan's reference rates from benchmark rows (:mod:`cxrlib.bench`'s, e.g. those the performance
    chapter measured): see :func:`bench_rates`."""
    df = pd.DataFrame(list(rows))

    def pick(benchmark, unit, contains):
        r = df[(df.benchmark == benchmark) & (df.unit == unit) & df.setting.str.contains(contains, regex=False)]
        if r.empty:
            raise UserError(f"{source} has no '{benchmark}' rate ({contains}); rerun `make bench`")
        return float(r["value"].iloc[0]), str(r["setting"].iloc[0])

    clf, _ = pick("classifier training", "images/s", "small_cnn 32px")
    gen, gen_setting = pick("generator training", "images/s", "recipe")
    nfe, _ = pick("sampling", "image-steps/s", "ddim")
    measured = {}  # every benchmarked (architecture, size): a job of one is timed by its own rate, not by FLOPs
    for r in df[(df.benchmark == "classifier training") & (df.unit == "images/s")].itertuples():
        arch, px = str(r.setting).split()[:2]
        measured[(arch, int(px.removesuffix("px")))] = float(r.value)
    return {"classifier": clf, "generator": gen, "nfe": nfe, "recipe": gen_setting.split()[0], "source": source,
            "classifiers": measured}


def estimate(jobs: Sequence[Job], cfg, rates: dict[str, Any]) -> pd.DataFrame:
    """One row per job with ``seconds`` (see the module docstring) and ``memory_gb``."""
    from .experiments.common import StudyConfig

    ref_clf = classifier_flops("small_cnn", 32)
    if any(j.kind != "classifier" for j in jobs):
        ref_gen, _ = generator_flops(StudyConfig.from_params(profile=rates["recipe"]))
        gen, gen_params = generator_flops(cfg)
    rows = []
    for j in jobs:
        if j.kind == "classifier":
            fwd = classifier_flops(j.model, j.image_size, len(cfg.labels))
            forwards = 3 * j.steps * j.batch + j.eval_images  # a training step is ~3 forwards (forward + backward)
            own = rates.get("classifiers", {}).get((j.model, j.image_size))
            sec = forwards / 3 / own if own else forwards / 3 * (fwd / ref_clf) / rates["classifier"]
            params = 4 * 4 * _classifier_params(j.model, j.image_size, len(cfg.labels))
        elif j.kind == "generator":  # the benchmarked rate is of the DDPM recipe's steps (3 forwards each)
            fwd, forwards = (j.step_flops, j.steps * j.batch) if j.step_flops else (gen, 3 * j.steps * j.batch)
            sec, params = fwd * forwards / (3 * ref_gen) / rates["generator"], 5 * 4 * gen_params  # + the EMA copy
        else:
            fwd, forwards = j.step_flops or gen, j.steps * j.batch
            sec, params = fwd * forwards / ref_gen / rates["nfe"], 4 * gen_params
        held = 3 * j.held_images  # the in-memory path: the set, x3 for the copies made while concatenating
        if j.kind == "classifier" and getattr(cfg, "clf_data_workers", None) is not None:
            held = j.batch * (2 * max(1, cfg.clf_data_workers) + 1)  # streamed: the batches in flight
        memory = held * j.image_size ** 2 + params
        rows.append({**dataclasses.asdict(j), "seconds": sec, "memory_gb": memory / 1e9, "tflop": fwd * forwards / 1e12})
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=None)
def _classifier_params(arch: str, size: int, n_outputs: int) -> int:
    import torch

    from .models.classifiers import build_classifier

    with torch.device("meta"):
        return sum(p.numel() for p in build_classifier(arch, n_outputs, in_channels=1, image_size=size).parameters())


# The parameters that drive each kind of job: what a budget-exceeding run should change.
DRIVERS = {"classifier": "n_seeds, clf_steps, clf_arch, image_size and the arms (e.g. supplement_percents)",
           "generator": "gen_steps, gen_channels, image_size and the generator count (e.g. n_generators, ft_steps)",
           "sampling": "sampler_steps, guidance and the largest synthetic percentage"}


def summarize(est: pd.DataFrame) -> pd.DataFrame:
    """Per kind: jobs, optimizer steps (network evaluations for sampling), images, hours, peak memory."""
    g = est.assign(images=est.steps * est.batch).groupby("kind", sort=False)
    out = g.agg(jobs=("name", "size"), steps=("steps", "sum"), images=("images", "sum"), hours=("seconds", "sum"),
                peak_memory_gb=("memory_gb", "max"))
    out["hours"] /= 3600
    return out.reindex([k for k in KINDS if k in out.index])


def check_budget(est: pd.DataFrame, budget_hours: float | None) -> None:
    """A :class:`UserError` when the estimate exceeds ``budget_hours``, naming the largest kind of job
    and the parameters that drive it."""
    if budget_hours is None:
        return
    total = est["seconds"].sum() / 3600
    if total > budget_hours:
        by = est.groupby("kind")["seconds"].sum().sort_values(ascending=False) / 3600
        worst = by.index[0]
        raise UserError(f"the plan needs about {total:,.1f} h, over the budget of {budget_hours:g} h; most of it is "
                        f"{worst} ({by.iloc[0]:,.1f} h): reduce {DRIVERS[worst]}")


def plan_text(notebook: str, cfg, sizes: dict[str, int], est: pd.DataFrame, rates: dict[str, Any]) -> str:
    """The printed plan: the sets, every job, the totals per kind, the memory bound and the rates used."""
    lines = [f"plan of {notebook} at profile {cfg.profile!r} (device {cfg.device}, dataset {cfg.dataset})",
             "sets: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()), ""]
    with pd.option_context("display.width", 160, "display.max_rows", None, "display.max_colwidth", 70):
        jobs = est[["kind", "name", "steps", "batch", "image_size", "model", "held_images"]].assign(
            minutes=(est.seconds / 60).round(1))
        lines += [jobs.to_string(index=False), "", summarize(est).round(2).to_string(), ""]
    total = est["seconds"].sum()
    when = f"{total / 3600:,.1f} h" if total >= 3600 else f"{total / 60:,.0f} min"
    lines.append(f"total: about {when} on this machine's measured rates, every job counted as uncached; "
                 f"peak memory about {est.memory_gb.max():,.1f} GB ({est.loc[est.memory_gb.idxmax(), 'name']})")
    lines.append(f"rates: {rates['source']} (classifier {rates['classifier']:,.0f} images/s small_cnn 32 px; generator "
                 f"{rates['generator']:,.1f} images/s and {rates['nfe']:,.0f} image-steps/s for the {rates['recipe']} "
                 "recipe); other models and sizes scaled by forward FLOPs")
    return "\n".join(lines)


def plan_for(cfg, notebook: str) -> tuple[dict[str, int], list[Job]]:
    """The sets and jobs of ``cfg``'s chapter (its module's ``plan_jobs``), or a UserError naming the
    chapters that can be planned."""
    import sys

    module = sys.modules[type(cfg).__module__]
    fn = getattr(module, "plan_jobs", None)
    if fn is None and importlib.util.find_spec(f"{module.__name__}_plan") is not None:
        fn = importlib.import_module(f"{module.__name__}_plan").plan_jobs  # a full chapter module keeps its plan beside it
    if fn is None:
        raise UserError(f"{notebook}: this chapter has no cost plan yet (plan_jobs in {module.__name__})")
    if not hasattr(cfg, "n_pool"):  # not a study chapter (chapter 1): its plan counts its own sets
        return {}, fn(cfg, None)
    data = plan_data(cfg)
    return data.sizes, fn(cfg, data)


def stand_in(n: int, meta: pd.DataFrame | None = None, label_names: Sequence[str] | None = None):
    """A dataset of ``n`` one-pixel images (with ``meta``, or all-negative rows): what a chapter's arm
    builders need to say which sets an arm concatenates and how large they are, without any image."""
    import numpy as np

    from .data.base import ArrayDataset
    from .data.labels import CHEXPERT_LABELS

    label_names = list(label_names or CHEXPERT_LABELS)
    if meta is None:
        meta = pd.DataFrame(0.0, index=range(n), columns=label_names).assign(patient_id="p", sex="F", age=60.0)
    return ArrayDataset(np.zeros((n, 1, 1), np.uint8), meta, label_names=label_names, name=f"stand-in {n}")


def classifier_jobs(cfg, arms: dict[str, int], sizes: dict[str, int], tests: int | None = None,
                    real: str | None = None) -> list[Job]:
    """One job per arm (``{arm: training images}``) x classifier seed under ``cfg``'s recipe, validated
    every ``clf_eval_every`` steps on val and predicting val and ``tests`` test images once. ``real``: the
    arm that is R alone, which other chapters train too (marked :func:`real_classifier_mark`)."""
    tests = sizes["test"] if tests is None else tests
    jobs = []
    for a, n in arms.items():
        if cfg.clf_steps is None:  # clf_epochs passes over the arm's own set, validated after each
            steps, evals = cfg.clf_epochs * math.ceil(n / cfg.clf_batch_size), cfg.clf_epochs
        else:  # the step budget, validated every clf_eval_every steps (default clf_steps // 10)
            steps = cfg.clf_steps
            evals = math.ceil(steps / (cfg.clf_eval_every or max(1, steps // 10)))
        jobs.append((a, n, steps, evals))
    return [Job("classifier", f"{a}, seed {s}", steps, cfg.clf_batch_size, cfg.image_size, cfg.clf_arch, n,
                eval_images=evals * sizes["val"] + tests, shared=real_classifier_mark(cfg, s) if a == real else "")
            for s in cfg.clf_seeds() for a, n, steps, evals in jobs]


def oracle_job(cfg, sizes: dict[str, int]) -> Job:
    """The evaluation oracle (:func:`cxrlib.experiments.common.oracle`): ``oracle_arch`` trained for
    ``oracle_epochs`` passes over the whole pool, validated once per epoch; shared by every chapter."""
    steps = cfg.oracle_epochs * math.ceil(sizes["pool"] / cfg.clf_batch_size)
    return Job("classifier", f"oracle ({cfg.oracle_arch} on the pool)", steps, cfg.clf_batch_size, cfg.image_size,
               cfg.oracle_arch, sizes["pool"], eval_images=cfg.oracle_epochs * sizes["val"], shared="oracle")


# --- the whole book ---------------------------------------------------------------------------------
def book_estimate(chapters: Sequence[tuple[str, Any, list[Job]]], rates: dict[str, Any]) -> pd.DataFrame:
    """The estimate of every ``(notebook, cfg, jobs)`` with a ``chapter`` column. A job marked ``shared``
    (the main generator, the pool pretraining, the oracle) is counted in the first chapter that needs
    it: a later chapter asking for the same model (same steps, size, model and set size) finds it in
    the cache. Jobs of different recipes never merge: their keys differ."""
    seen, frames = set(), []
    for name, cfg, jobs in chapters:
        keep = []
        for j in jobs:
            k = (j.shared, j.kind, j.steps, j.batch, j.image_size, j.model, j.held_images) if j.shared else None
            if k is None or k not in seen:
                keep.append(j)
                seen.add(k)
        if keep:
            frames.append(estimate(keep, cfg, rates).assign(chapter=name))
    return pd.concat(frames, ignore_index=True)


def with_assumed_rate(est: pd.DataFrame, tflops: float) -> pd.DataFrame:
    """``est`` with ``seconds`` from its counted FLOPs at an *assumed* sustained ``tflops`` (TFLOP/s):
    a device nobody has benchmarked, e.g. a GPU seen from a CPU machine. The assumption is the caller's."""
    if not tflops > 0:
        raise UserError(f"--tflops must be a positive rate in TFLOP/s, got {tflops}")
    return est.assign(seconds=est["tflop"] / tflops)


def book_text(profile: str, est: pd.DataFrame, unplanned: Sequence[str], rates_line: str) -> str:
    """The printed book plan: hours per chapter and kind, the totals, compute and peak memory."""
    hours = est.pivot_table(index="chapter", columns="kind", values="seconds", aggfunc="sum", fill_value=0.0,
                            sort=False) / 3600
    hours = hours.reindex(columns=[k for k in KINDS if k in hours.columns])
    table = hours.assign(total=hours.sum(axis=1), jobs=est.groupby("chapter", sort=False).size(),
                         pflop=est.groupby("chapter", sort=False)["tflop"].sum() / 1e3)
    table.loc["book"] = table.sum()
    lines = [f"plan of the book at profile {profile!r}: hours per chapter and kind of job (shared models counted once)", ""]
    with pd.option_context("display.width", 160):
        lines += [table.round(2).to_string(), ""]
    lines.append(f"total: about {table.loc['book', 'total']:,.1f} h, {table.loc['book', 'pflop']:,.1f} PFLOP counted; "
                 f"peak memory about {est.memory_gb.max():,.1f} GB ({est.loc[est.memory_gb.idxmax(), 'chapter']}: "
                 f"{est.loc[est.memory_gb.idxmax(), 'name']})")
    if unplanned:
        lines.append("not planned (no plan_jobs; not counted): " + ", ".join(unplanned))
    lines.append(rates_line)
    return "\n".join(lines)


def plan_book(notebooks: Sequence[str | Path] | None = None, *, profile: str | None = None, device: str | None = None,
              tflops: float | None = None, budget_hours: float | None = None,
              rates: dict[str, Any] | None = None) -> tuple[str, pd.DataFrame]:
    """The plan of ``notebooks`` (default: every chapter of ``notebooks/``) at ``profile``: the text and the
    estimate. ``tflops``: time from the counted FLOPs at that assumed rate instead of benchmarked rates;
    ``rates``: these (:func:`rates_from_rows`) instead of the latest ``make bench`` run's."""
    from .notebook_params import read_notebook, resolve_config
    from .utils import project_root

    paths = [Path(n) for n in notebooks] if notebooks else sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    chapters, unplanned = [], []
    for path in paths:
        spec = read_notebook(path)
        cfg, _ = resolve_config(spec, {"device": device} if device else {}, profile)
        try:
            _, jobs = plan_for(cfg, spec.path.name)
        except UserError as e:
            if "no cost plan yet" not in str(e):
                raise
            unplanned.append(spec.path.name)
            continue
        chapters.append((spec.path.stem, cfg, jobs))
    if not chapters:
        raise UserError("none of these notebooks has a cost plan: " + ", ".join(unplanned))
    if tflops is None:
        rates = rates or bench_rates(device=chapters[0][1].device)
        est = book_estimate(chapters, rates)
        rates_line = (f"rates: {rates['source']} on {chapters[0][1].device}; other models and sizes scaled by forward FLOPs")
    else:
        zero = {"classifier": 1.0, "generator": 1.0, "nfe": 1.0, "recipe": "cpu", "source": "assumed"}
        est = with_assumed_rate(book_estimate(chapters, zero), tflops)
        rates_line = (f"rates: an ASSUMED sustained {tflops:g} TFLOP/s on every job (--tflops), applied to the FLOPs counted "
                      "on the meta device (training step = 3 forwards); no benchmark on the target device backs it")
    check_budget(est, budget_hours)
    return book_text(cfg.profile, est, unplanned, rates_line), est


def _cmd_plan(args) -> int:
    text, _ = plan_book(args.notebooks, profile=args.profile, device=args.device, tflops=args.tflops,
                        budget_hours=args.budget)
    print(text)
    return 0


def register_cli(subparsers) -> None:
    """``cxr plan``."""
    from .config import PROFILE_NAMES

    p = subparsers.add_parser("plan", help="the cost plan of the book (or of NOTEBOOKs) at a profile, before running it",
                              description="Sum the jobs of every chapter's plan (cxr run NB --plan gives one chapter's "
                                          "job list), counting the models chapters share once.")
    p.add_argument("notebooks", nargs="*", help="notebooks/NN_name.ipynb (default: every chapter)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="smoke | cpu | cpu-full | paper (default: cpu)")
    p.add_argument("--device", default=None, help="the device whose make bench rates to use (default: the profile's)")
    p.add_argument("--tflops", type=float, default=None, metavar="RATE",
                   help="estimate time from the counted FLOPs at this ASSUMED sustained TFLOP/s (a device not benchmarked)")
    p.add_argument("--budget", type=float, default=None, metavar="HOURS", help="exit with an error if the plan exceeds HOURS")
    p.set_defaults(func=_cmd_plan)


def real_classifier_mark(cfg, seed: int) -> str:
    """The ``shared`` mark of the classifier trained on R alone with ``seed``: its cache key
    (:func:`cxrlib.experiments.common.train_cached_classifier`) is the recipe, the labels, the seed and
    the content of R and val, so chapters whose marks are equal train the very same model."""
    import hashlib

    from .experiments.common import CLF_FIELDS

    fields = [f for f in CLF_FIELDS if not (f == "clf_epochs" and cfg.clf_steps is not None)]  # as the cache key
    fields += ["labels", "dataset", "root", "image_size", "n_pool", "labeled_fraction", "n_val"]
    spec = json.dumps({f: getattr(cfg, f) for f in fields}, sort_keys=True, default=list)
    return f"classifier of R alone {hashlib.sha256(spec.encode()).hexdigest()[:12]}, seed {seed}"


def evaluations(steps: int, guidance: float) -> int:
    """Network evaluations per image of a sampler with ``steps`` steps: two per step under classifier-free
    guidance (``guidance`` > 0: the conditional and the unconditional pass), one without."""
    return int(steps) * (2 if float(guidance) else 1)


def set_mark(model: str, sampler: str, steps: int, guidance: float) -> str:
    """The ``shared`` mark of the evaluation-prevalence synthetic set of the shared model ``model`` (e.g.
    "main generator") at a sampler setting: chapters 2, 4 and 6 sample the same cache entry ("" if the
    model is not shared)."""
    return f"{model}: eval-prevalence set ({sampler}-{int(steps)}, w={float(guidance):g})" if model else ""
