"""Experiment 9 — Performance: throughput benchmarks (phantom rendering, classifier and generator
training, samplers) measured by this run, and the wall time of every chapter of the book at the
same profile, read from the run records that ``cxr run``/``cxr book`` wrote.

Timings are measurements of the machine that ran the book, not constants: they differ between runs
and machines (compare ratios from one run). Everything else in the book repeats bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pandas as pd

from ..config import ConfigError, ExperimentConfig


@dataclasses.dataclass(frozen=True)
class Config(ExperimentConfig):
    NAME: ClassVar[str] = "performance"
    phantom_images: int = 4000  # images rendered for the phantom benchmark (64 px)
    classifier_images: int = 512  # images per classifier-training benchmark
    generator_steps: int = 10  # optimizer steps of the generator-training benchmark
    sampler_images: int = 16  # images per sampler benchmark
    generator_profile: str = "cpu"  # whose study generator recipe is timed: smoke | cpu | paper
    sampler_steps: tuple[int, int, int] = (250, 50, 20)  # DDPM, DDIM, DPM-Solver++ steps
    worker_steps: int = 100  # steps per training of the executor benchmark (serial vs one worker per core)
    plan_profiles: tuple[str, ...] = ("smoke", "cpu", "cpu-full", "paper")  # whose book plan is shown (paper: ~2 min)

    PROFILES: ClassVar = {
        "smoke": dict(phantom_images=300, classifier_images=128, generator_steps=2, sampler_images=4,
                      generator_profile="smoke", sampler_steps=(20, 5, 5), worker_steps=5, plan_profiles=("smoke",)),
        "cpu": {},
        "paper": dict(phantom_images=10000, classifier_images=2048, generator_steps=50, sampler_images=64),
    }

    def validate(self) -> None:
        super().validate()
        from ..config import PROFILE_NAMES

        if self.generator_profile not in PROFILE_NAMES:
            raise ConfigError(f"parameter 'generator_profile': {self.generator_profile!r} is not one of {list(PROFILE_NAMES)}")
        bad = [p for p in self.plan_profiles if p not in PROFILE_NAMES]
        if bad:
            raise ConfigError(f"parameter 'plan_profiles': {bad} not among {list(PROFILE_NAMES)}")


def benchmarks(cfg: Config) -> pd.DataFrame:
    """Run the benchmarks of :mod:`cxrlib.bench` at this profile's sizes."""
    from .. import bench

    rows = bench.bench_phantom(n=cfg.phantom_images, size=64)
    rows += bench.bench_classifier(size=32, n=cfg.classifier_images)
    rows += bench.bench_classifier(size=64, n=cfg.classifier_images)
    rows += bench.bench_workers(size=32, steps=cfg.worker_steps)
    rows += bench.bench_generator(profile=cfg.generator_profile, steps=cfg.generator_steps, n_sample=cfg.sampler_images,
                                  sampler_steps=dict(zip(("ddpm", "ddim", "dpm++"), cfg.sampler_steps)))
    rows += bench.bench_peer(profile=cfg.generator_profile, steps=max(2, cfg.generator_steps))
    return pd.DataFrame(rows).assign(**{k: str(v) for k, v in bench.machine().items()})


def chapter_times(cfg: Config) -> pd.DataFrame:
    """Wall time and peak resident memory (``peak_rss_gb``: the runner's child processes, summed; missing
    for runs recorded before it was measured) of every chapter's most recent complete run at this profile."""
    from ..run_context import runs_root

    rows = []
    for rec_path in sorted(runs_root().glob(f"*/{cfg.profile}-*/run.json")):
        rec = json.loads(rec_path.read_text())
        rows.append({"chapter": rec_path.parent.parent.name, "run": rec_path.parent.name,
                     "wall_time_s": float(rec.get("wall_time_s") or 0.0), "finished": rec.get("finished", ""),
                     "peak_rss_gb": rec.get("peak_rss_gb"), "mtime": rec_path.stat().st_mtime})
    df = pd.DataFrame(rows, columns=["chapter", "run", "wall_time_s", "finished", "peak_rss_gb", "mtime"])
    if df.empty:
        return df
    df = df.sort_values("mtime").groupby("chapter", as_index=False).last().sort_values("chapter")
    return df.drop(columns="mtime").reset_index(drop=True)


def profile_plans(bench_df: pd.DataFrame, profiles=("smoke", "cpu", "cpu-full", "paper")) -> pd.DataFrame:
    """The cost plan of the whole book at each profile (:func:`cxrlib.plan.plan_book`, shared models counted
    once) at the rates this chapter measured: one row per profile and chapter with ``jobs``, ``pflop`` (the
    FLOPs counted, device-independent) and ``hours`` on this machine. ``paper`` reads CheXpert's label files
    (torchxrayvision's), no image."""
    from .. import plan

    rates = plan.rates_from_rows(bench_df.to_dict("records"), "this chapter's benchmarks")
    frames = []
    for p in profiles:
        _, est = plan.plan_book(profile=p, rates=rates)
        g = est.groupby("chapter", sort=False)
        frames.append(pd.DataFrame({"jobs": g.size(), "pflop": g.tflop.sum() / 1e3, "hours": g.seconds.sum() / 3600})
                      .reset_index().assign(profile=p))
    return pd.concat(frames, ignore_index=True)[["profile", "chapter", "jobs", "pflop", "hours"]]


def plan_vs_measured(plans: pd.DataFrame, times: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Per chapter at ``profile``: the planned hours (every job uncached) beside the wall time of its latest
    run (:func:`chapter_times`; a run served partly from the cache is shorter than its plan)."""
    planned = plans[plans.profile == profile].set_index("chapter")["hours"]
    measured = times.set_index("chapter")["wall_time_s"] / 3600 if len(times) else pd.Series(dtype=float)
    out = pd.DataFrame({"planned_hours": planned, "measured_hours": measured}).dropna()
    out.index.name = "chapter"
    return out.assign(measured_over_planned=out.measured_hours / out.planned_hours)


def plans_text(plans: pd.DataFrame) -> str:
    """One sentence per profile: the book's planned hours on this machine and its counted compute."""
    tot = plans.groupby("profile", sort=False)[["jobs", "pflop", "hours"]].sum()
    return " ".join(f"At `{p}` the book plans {int(r.jobs):,} jobs, {r.pflop:,.2f} PFLOP, about {r.hours:,.1f} h on "
                    "this machine." for p, r in tot.iterrows())


# Where a chapter's time goes: the cache records every artifact it produced (kind and seconds); the kinds map
# to the stages below, and the rest of the wall time is evaluation, statistics, figures and the notebook itself.
STAGES = {"generator": "generator training", "synthetic": "sampling", "classifier": "classifier training",
          "phantom": "phantom data", "phantom-source": "phantom data"}
REST = "evaluation, statistics, figures, notebook"
STAGE_ORDER = ("generator training", "sampling", "classifier training", "phantom data", "other cached work", REST)


def stage_times(cfg: Config, chapters: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per chapter (its latest complete run at this profile, :func:`chapter_times`) the seconds of each
    stage: ``chapter, stage, seconds, artifacts``. A stage's seconds are those of the cache misses of its
    kinds (:data:`STAGES`: the artifacts this run produced; an artifact another chapter produced is a
    hit, and costs its loading time only); ``evaluation, statistics, figures, notebook`` is the rest of
    the run's wall time."""
    from ..run_context import runs_root

    chapters = chapter_times(cfg) if chapters is None else chapters
    rows = []
    for ch in chapters.itertuples():
        prov = runs_root() / ch.chapter / ch.run / "provenance.json"
        events = json.loads(prov.read_text()).get("cache_events", []) if prov.is_file() else []
        spent: dict[str, list] = {}
        for e in events:
            if e.get("event") == "miss":
                stage = STAGES.get(str(e.get("key", "")).split("/")[0], "other cached work")
                spent.setdefault(stage, []).append(float(e.get("seconds") or 0.0))
        for stage, secs in spent.items():
            rows.append({"chapter": ch.chapter, "stage": stage, "seconds": sum(secs), "artifacts": len(secs)})
        rest = float(ch.wall_time_s) - sum(sum(v) for v in spent.values())
        rows.append({"chapter": ch.chapter, "stage": REST, "seconds": max(rest, 0.0), "artifacts": 0})
    out = pd.DataFrame(rows, columns=["chapter", "stage", "seconds", "artifacts"])
    out["stage"] = pd.Categorical(out["stage"], STAGE_ORDER, ordered=True)
    return out.sort_values(["chapter", "stage"]).reset_index(drop=True)


def plot_stage_times(stages: pd.DataFrame):
    """One stacked bar per chapter: minutes per stage (:func:`stage_times`)."""
    import matplotlib.pyplot as plt

    wide = stages.pivot_table(index="chapter", columns="stage", values="seconds", aggfunc="sum", observed=False).fillna(0) / 60
    wide = wide[[s for s in STAGE_ORDER if s in wide.columns and wide[s].sum() > 0]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(wide), 3) + 1.4))
    left = pd.Series(0.0, index=wide.index)
    for i, stage in enumerate(wide.columns):
        ax.barh(wide.index, wide[stage], left=left, color=f"C{STAGE_ORDER.index(stage)}", label=stage)
        left += wide[stage]
    ax.invert_yaxis()
    ax.set_xlabel("wall time (minutes)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"where the time goes: {left.sum():.1f} min in total", fontsize=10)
    fig.tight_layout()
    return fig


def peer_text(bench_df: pd.DataFrame) -> str:
    """One sentence on the generator loop against a plain diffusers loop and the GEMM rate
    (:func:`cxrlib.bench.bench_peer`), with the targets of the performance issue."""
    v = bench_df[bench_df.benchmark == "peer"].set_index("setting")["value"]
    return (f"The study's generator training loop runs at {v['cxrlib loop speed over the plain diffusers loop']:.2f}x the "
            "speed of a plain diffusers loop on the same UNet, batch and images (target: at least 1.0x), and achieves "
            f"{v['cxrlib loop achieved FLOP/s of GEMM']:.0f} % of this machine's GEMM rate "
            f"({v['GEMM 2048x2048 float32']:.2f} TFLOP/s; target: 70 %; the plain loop "
            f"{v['plain diffusers loop achieved FLOP/s of GEMM']:.0f} %). Both were measured in this run, one after the other.")


def executor_text(bench_df: pd.DataFrame) -> str:
    """One sentence on the measured speed-up of running the arms x seeds grid on one worker process per
    core (:func:`cxrlib.bench.bench_workers`), or why it was not measured."""
    r = bench_df[(bench_df["benchmark"] == "classifier grid") & (bench_df["unit"] == "x")]
    if r.empty:
        return "The executor benchmark needs at least two cores; this machine has one, so it was not run."
    setting, ratio = r["setting"].iloc[0], float(r["value"].iloc[0])
    return (f"Training the independent classifiers of an arms x seeds grid on one worker process per core "
            f"(`executor = \"{setting.split()[0]}\"`) is **{ratio:.2f}×** as fast as training them one after another in one "
            f"process with every core's threads (worker start-up included).")


def plot_throughput(bench_df: pd.DataFrame):
    """Bar chart (log scale) of every images/s measurement of :func:`benchmarks`."""
    import matplotlib.pyplot as plt

    d = bench_df[bench_df["unit"] == "images/s"].copy()
    d["label"] = d["benchmark"].astype(str) + ": " + d["setting"].astype(str)
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(d), 3) + 1.2))
    ax.barh(d["label"], d["value"], color=[f"C{i}" for i in pd.factorize(d["benchmark"])[0]])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("images per second (log scale)")
    fig.tight_layout()
    return fig


def plot_chapter_times(times: pd.DataFrame, budget_s: float | None = None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(times), 3) + 1.2))
    ax.barh(times["chapter"], times["wall_time_s"] / 60, color="C0")
    ax.invert_yaxis()
    ax.set_xlabel("wall time (minutes)")
    total = times["wall_time_s"].sum() / 60
    ax.set_title(f"chapters run so far at this profile: {total:.1f} min in total", fontsize=10)
    if budget_s:
        ax.axvline(budget_s / 60, ls="--", color="k", lw=1)
    fig.tight_layout()
    return fig
