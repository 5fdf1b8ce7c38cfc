"""The cost plan of chapter 4 (``cxr run notebooks/04_pretraining.ipynb --plan``, :mod:`cxrlib.plan`), kept
beside :mod:`cxrlib.experiments.pretraining` (a full module): every generator, synthetic set and classifier
of the chapter's run, from its config and the data's metadata, no image read.

The jobs, as :func:`pretraining.generators`, :func:`pretraining.synthetic_sets`, :func:`pretraining.utility`
and :func:`pretraining.fidelity` make them:

* the unconditional DDPM on the pool (``pretrain_steps``, default ``gen_steps``: then it is
  :func:`synthetic.pretrained_generator`, ``shared="pool-pretrained generator"``);
* its conditional fine-tuning on each R_f of ``ft_fractions`` (``ft_steps``). With the shared pretraining
  it is :func:`synthetic.pool_finetuned_generator` on R_f, the cache entry chapter 5 trains (on R for its
  pool-pretrained source, on each R_f for its regime map): ``shared="pool fine-tuned on R"`` at
  ``labeled_fraction``, ``"pool fine-tuned on R10%"`` etc. elsewhere (:func:`shared_name`);
* the from-scratch conditional DDPM on each R_f of ``scratch_fractions`` (``gen_steps``); at
  ``labeled_fraction`` it is :func:`synthetic.main_generator` (``shared="main generator"``);
* one synthetic set of ``n_syn`` images per generator on the shared conditions (the main generator's is
  chapter 2's evaluation set at the study sampler; chapter 6 samples all of them), marked with the
  generator's mark and the sampler settings;
* every arm of :func:`pretraining.arms` x seed (the contrasts refit nothing: same arms, same cache
  keys) and the oracle of :func:`pretraining.fidelity` (``shared="oracle"``).

The arms are assembled by the chapter's own :func:`pretraining.arms` and :func:`pretraining.labeled_subset`
on image-less stand-ins of the pool and R that carry their real metadata (the manifest's ``labeled_frac``),
so every R_f has the size the run draws.
"""

from __future__ import annotations

import pandas as pd

from . import common
from . import pretraining as P


def plan_sets(data) -> common.RealSets:
    """Image-less stand-ins of the chapter's real sets: the pool with its real metadata (R_f is drawn
    from it by :func:`pretraining.labeled_subset`), R = ``data.real()``; val, test and the external
    sites are counted by ``data.sizes`` alone."""
    from ..plan import stand_in

    real = data.real()
    pool = stand_in(data.sizes["pool"], data.pool_meta.reset_index(drop=True), real.label_names)
    return common.RealSets(pool=pool, train=real, val=stand_in(0), test=stand_in(0), external={})


def planned_generators(cfg: P.Config, sets: common.RealSets) -> pd.DataFrame:
    """The generator table of :func:`pretraining.generators` without its paths: one row per generator
    (index = its name, in the run's order) with ``kind, fraction, labeled_images``."""
    rows = [dict(generator=P.generator_name("pretrained+FT", f), kind="pretrained+FT", fraction=f,
                 labeled_images=len(P.labeled_subset(cfg, sets, f))) for f in sorted(cfg.ft_fractions)]
    rows += [dict(generator=P.generator_name("scratch", f), kind="scratch", fraction=f,
                  labeled_images=len(P.labeled_subset(cfg, sets, f))) for f in sorted(cfg.scratch_fractions)]
    return pd.DataFrame(rows, columns=["generator", "kind", "fraction", "labeled_images"]).set_index("generator")


def shared_name(cfg: P.Config, kind: str, fraction: float) -> str:
    """The ``Job.shared`` mark of a generator of the design: the name a book plan counts it once under.
    The main generator and the pool fine-tuned ones are trained by chapters 2-8 and 5 (and all of them
    by chapter 6 at ``cpu-full`` and ``paper``); a fine-tuned generator is that cached model only when its
    pretraining is the shared one (``pretrain_steps`` None or ``gen_steps``): else unmarked."""
    r_f = "R" if abs(fraction - cfg.labeled_fraction) < 1e-9 else f"R{P.pct(fraction)}"
    if kind == "scratch":
        return "main generator" if r_f == "R" else f"conditional DDPM from scratch on {r_f}"
    return f"pool fine-tuned on {r_f}" if (cfg.pretrain_steps or cfg.gen_steps) == cfg.gen_steps else ""


def generator_jobs(cfg: P.Config, data, gens: pd.DataFrame) -> list:
    """The trainings of chapter 4's generators: the pool pretraining, then one per row of ``gens``
    (:func:`planned_generators`), with the marks of :func:`shared_name` (chapter 6 trains the same ones)."""
    from ..plan import Job

    size, batch, pre_steps = cfg.image_size, cfg.gen_batch_size, cfg.pretrain_steps or cfg.gen_steps
    jobs = [Job("generator", f"unconditional DDPM pretrained on the pool ({pre_steps} steps)", pre_steps, batch, size,
                "generator", data.sizes["pool"], shared="pool-pretrained generator" if pre_steps == cfg.gen_steps else "")
            ] if cfg.ft_fractions else []  # nothing fine-tuned: nothing pretrained (pretraining.generators)
    what = {"pretrained+FT": "the pretrained DDPM fine-tuned on R_{}", "scratch": "conditional DDPM from scratch on R_{}"}
    for g, row in gens.iterrows():
        shared = shared_name(cfg, row.kind, row.fraction)
        steps = cfg.ft_steps if row.kind == "pretrained+FT" else cfg.gen_steps
        name = f"{g}: " + ("conditional DDPM on R (the main generator)" if shared == "main generator"
                           else what[row.kind].format(P.pct(row.fraction)))
        jobs.append(Job("generator", name, steps, batch, size, "generator", int(row.labeled_images), shared=shared))
    return jobs


def plan_jobs(cfg: P.Config, data) -> list:
    """The jobs of a run of chapter 4 (module docstring)."""
    from ..plan import Job, classifier_jobs, evaluations, oracle_job, set_mark, stand_in

    sizes, size = data.sizes, cfg.image_size
    nfe = evaluations(cfg.sampler_steps, cfg.guidance)
    sets = plan_sets(data)
    gens = planned_generators(cfg, sets)
    jobs = generator_jobs(cfg, data, gens)
    for g, row in gens.iterrows():  # chapters 2 (main generator) and 6 sample these very sets
        mark = set_mark(shared_name(cfg, row.kind, row.fraction), cfg.sampler, cfg.sampler_steps, cfg.guidance)
        jobs.append(Job("sampling", f"{g}: synthetic set", nfe, cfg.n_syn, size, "generator", cfg.n_syn, shared=mark))
    syn = {g: stand_in(cfg.n_syn) for g in gens.index}
    arms = {a: sum(len(d) for d in ds) for a, ds in P.arms(cfg, sets, gens, syn).items()}
    real = f"real {P.pct(cfg.labeled_fraction)}"  # R_f at the study's fraction is R: the other chapters' real arm
    return jobs + classifier_jobs(cfg, arms, sizes, sizes["test"], real=real) + [oracle_job(cfg, sizes)]
