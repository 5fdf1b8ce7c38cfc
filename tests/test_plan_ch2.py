"""The cost plan of chapter 2 (generators): the main generator, the label grids, one prevalence set per
distinct sampler variant and its fresh timing, the counterfactual twins and the oracle; checked against
the config and against what the chapter's own functions sample and train when replayed on fakes."""

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib import plan
from cxrlib.experiments import common, synthetic
from cxrlib.experiments import generators as G


def _kinds(jobs):
    return {k: [j for j in jobs if j.kind == k] for k in plan.KINDS}


def _nfe(steps, w):
    return steps * (2 if w else 1)


def test_chapter_2_plan_at_cpu_counts_the_generator_grids_variants_timings_twins_and_oracle():
    cfg = G.Config.from_params(profile="cpu-full")  # the full grids (the cpu hour book samples w = 0, 2 only)
    data = plan.plan_data(cfg)
    jobs = _kinds(G.plan_jobs(cfg, data))
    L, n = len(cfg.labels), data.sizes["train"]
    # one training run of the main generator on R; its EMA snapshots are stops on the way, not extra training
    [gen] = jobs["generator"]
    assert (gen.steps, gen.batch, gen.held_images, gen.shared) == (cfg.gen_steps, cfg.gen_batch_size, n, "main generator")
    assert cfg.gen_checkpoints == (200, 500) and "200, 500" in gen.name
    sampling = {j.name: j for j in jobs["sampling"]}
    # label grids: (L + 1) rows x n_per_label per guidance weight; w = 0 is one pass, w > 0 two
    grids = [j for name, j in sampling.items() if name.startswith("label grid")]
    assert [(j.steps, j.batch) for j in grids] == [(15, 48), (30, 48), (30, 48), (30, 48)]
    assert 48 == (L + 1) * cfg.n_per_label
    # 5 samplers at w = 2 and 4 weights at ddim-15: 9 distinct prevalence sets (memorization reuses ddim-15 w=2)
    sets = {name: j for name, j in sampling.items() if name.startswith("eval-prevalence")}
    assert len(sets) == len(cfg.sampler_grid) + len(cfg.grid_guidance) == 9
    assert {j.batch for j in sets.values()} == {cfg.n_eval}
    assert sets["eval-prevalence set ddpm-50 w=2"].steps == 100 and sets["eval-prevalence set dpm++-10 w=2"].steps == 20
    assert sets["eval-prevalence set ddim-15 w=0"].steps == 15
    timing = [j for name, j in sampling.items() if name.startswith("timing")]
    assert len(timing) == 9 and {j.batch for j in timing} == {cfg.n_timing}
    twins = [j for name, j in sampling.items() if name.startswith("label flip")]
    assert len(twins) == 2 * L and {(j.steps, j.batch) for j in twins} == {(2 * cfg.sampler_steps, cfg.n_flip)}
    assert len(sampling) == len(jobs["sampling"]) == 4 + 9 + 9 + 10  # names are unique: nothing hidden by the dict
    # the only classifier is the shared oracle: oracle_epochs passes over the pool
    [oracle] = jobs["classifier"]
    assert oracle.shared == "oracle" and oracle.held_images == data.sizes["pool"] == cfg.n_pool
    assert oracle.steps == cfg.oracle_epochs * math.ceil(cfg.n_pool / cfg.clf_batch_size)
    images = sum(j.steps * j.batch for j in jobs["sampling"])
    assert images == 48 * (15 + 3 * 30) + 600 * (100 + 20 + 50 + 20 + 40 + 15 + 30 * 3) \
        + 16 * (100 + 20 + 50 + 20 + 40 + 15 + 30 * 3) + 10 * 200 * 30


ODD = {"guidance": 1.5, "sampler_grid": ("dpm++-4",)}


def test_a_set_the_cache_shares_is_planned_once_and_the_audit_set_is_planned_when_no_variant_has_it():
    cfg = G.Config.from_params(profile="smoke")  # ddim-4 is in sampler_grid, w = 2 in grid_guidance: one set
    data = plan.plan_data(cfg)
    names = [j.name for j in G.plan_jobs(cfg, data) if j.kind == "sampling"]
    assert [x for x in names if x.startswith("eval-prevalence")] == [
        "eval-prevalence set ddim-4 w=2", "eval-prevalence set dpm++-4 w=2", "eval-prevalence set ddim-4 w=0"]
    assert sum(x.startswith("timing") for x in names) == 4  # timing is sampled afresh for every variant
    odd = G.Config.from_params(profile="smoke", **ODD)  # memorization's set (ddim-4 at w = 1.5) is no variant's
    sets = [j.name for j in G.plan_jobs(odd, data) if j.name.startswith("eval-prevalence")]
    assert sets == ["eval-prevalence set dpm++-4 w=1.5", "eval-prevalence set ddim-4 w=0", "eval-prevalence set ddim-4 w=2",
                    "eval-prevalence set ddim-4 w=1.5"]
    plain = [j for j in G.plan_jobs(G.Config.from_params(profile="smoke", guidance=0.0), data) if j.name.startswith("label flip")]
    assert {j.steps for j in plain} == {cfg.sampler_steps}  # no guidance: one pass per step


# --- the run replayed on fakes: what the chapter's functions sample and train -----------------------
# The notebook's calls into the library that may train or sample: each is replayed below; any other call
# must be listed as free of jobs, so a new sampling or training call in the notebook fails this test.
REPLAYED = {"synthetic.main_generator_snapshots", "generators.label_grids", "common.oracle", "generators.real_reference",
            "generators.sampler_comparison", "generators.label_flip_effects", "generators.memorization"}
FREE = {"generators.Config", "common.real_sets", "generators.training_log", "generators.plot_training",
        "generators.label_conditions", "generators.plot_tradeoff", "generators.unpaired_label_auroc",
        "generators.plot_flip_effects", "generators.nfe_tradeoff", "generators.nfe_tradeoff_text"}


def test_the_notebook_calls_only_what_the_replay_covers():
    from cxrlib.utils import project_root

    nb = json.loads((project_root() / "notebooks" / "02_generators.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    calls = set(re.findall(r"\b((?:generators|synthetic|common)\.\w+)", code))
    assert calls == REPLAYED | FREE


def _replay(cfg, data, tmp_path, monkeypatch):
    """Run the notebook's job-making calls with every model, cache and metric faked; returns what was
    trained and sampled: ``[("generator", steps, batch, n)], [("classifier", ...)], [(nfe, images)]``."""
    import cxrlib.cache as C
    import cxrlib.classify as classify
    import cxrlib.fidelity as F
    import cxrlib.generators.ddpm as ddpm
    import cxrlib.generators.sampling as sampling
    import cxrlib.generators.synthetic_sets as sets_io

    trained, sampled, store, written = [], [], {}, {}
    L, S = len(cfg.labels), cfg.image_size

    def train_cached_generator(c, train, *, name, steps=None, checkpoints=(), **kw):
        steps = int(steps if steps is not None else c.gen_steps)
        trained.append(("generator", steps, c.gen_batch_size, len(train)))
        return {s: tmp_path / f"gen{s}" for s in sorted({int(x) for x in checkpoints if 0 < int(x) < steps} | {steps})}

    def train_cached_classifier(c, train_sets, val, *, seed, **kw):
        trained.append(("classifier", c.clf_arch, c.clf_epochs, c.clf_steps, sum(len(d) for d in train_sets)))
        return "oracle"

    def sample_images(model, conditions, seeds, *, sampler="ddim", steps=None, guidance=0.0, **kw):
        assert len(seeds) == len(conditions)
        sampled.append((_nfe(steps or sampling.DEFAULT_STEPS[sampler], guidance), len(seeds)))
        return torch.zeros(len(seeds), 1, S, S)

    def write_synthetic_set(gen_dir, conditions, out, *, seed, sampler, steps, guidance, **kw):
        sampled.append((_nfe(steps, guidance), len(conditions)))
        written[out] = len(conditions)

    def get_or_create(k, produce, **kw):  # the real cache key: a set asked for twice is sampled once
        if k not in store:
            store[k] = tmp_path / f"entry{len(store)}"
            produce(store[k])
        return store[k]

    monkeypatch.setattr(synthetic, "train_cached_generator", train_cached_generator)
    monkeypatch.setattr(common, "train_cached_classifier", train_cached_classifier)
    monkeypatch.setattr(sampling, "sample_images", sample_images)
    monkeypatch.setattr(sets_io, "write_synthetic_set", write_synthetic_set)
    monkeypatch.setattr(sets_io, "load_synthetic_set", lambda path, verify=True: plan.stand_in(written[path]))
    monkeypatch.setattr(C, "get_or_create", get_or_create)
    monkeypatch.setattr(ddpm, "load_generator", lambda *a, **k: SimpleNamespace(generator_id="g", label_names=list(cfg.labels)))
    monkeypatch.setattr(classify, "predict", lambda model, x, **k: np.zeros((len(x), L)))
    monkeypatch.setattr(F, "study_extractor", lambda model: None)
    monkeypatch.setattr(F, "extract_features", lambda ex, x, **k: np.zeros((len(x), 4)))
    monkeypatch.setattr(F, "frechet_distance", lambda *a, **k: {"value": 0.0})
    monkeypatch.setattr(F, "kernel_distance", lambda *a, **k: {"value": 0.0})
    monkeypatch.setattr(F, "label_consistency", lambda *a, **k: pd.DataFrame({"label": list(cfg.labels), "auroc": 0.5}))
    monkeypatch.setattr(F, "precision_recall_density_coverage",
                        lambda *a, **k: dict(precision=1.0, recall=1.0, density=1.0, coverage=1.0))
    monkeypatch.setattr(F, "paired_label_effect", lambda on, off, **k: dict(auroc=0.5, ci_low=0.4, ci_high=0.6, p_value=0.5, n=len(on)))
    monkeypatch.setattr(F, "memorization_audit", lambda *a, **k: {})

    sz = data.sizes
    sets = common.RealSets(pool=plan.stand_in(sz["pool"]), train=data.real(), val=plan.stand_in(sz["val"]),
                           test=plan.stand_in(sz["test"]), external={})
    # the notebook's cells, in order (REPLAYED)
    snapshots = synthetic.main_generator_snapshots(cfg, sets, progress=False)
    gen_dir = snapshots[cfg.gen_steps]
    G.label_grids(cfg, gen_dir)
    oracle = common.oracle(cfg, sets, progress=False)
    G.real_reference(cfg, sets, oracle)
    G.sampler_comparison(cfg, sets, gen_dir, oracle, progress=False)
    G.label_flip_effects(cfg, sets, gen_dir, oracle, progress=False)
    G.memorization(cfg, sets, gen_dir, oracle)
    return trained, sampled


@pytest.mark.parametrize("profile, overrides", [("smoke", {}), ("cpu", {}), ("smoke", ODD)])
def test_the_plan_is_what_the_chapter_trains_and_samples(profile, overrides, tmp_path, monkeypatch):
    cfg = G.Config.from_params(profile=profile, **overrides)
    data = plan.plan_data(cfg)
    jobs = _kinds(G.plan_jobs(cfg, data))
    trained, sampled = _replay(cfg, data, tmp_path, monkeypatch)
    assert sorted((j.steps, j.batch) for j in jobs["sampling"]) == sorted(sampled)
    assert [("generator", j.steps, j.batch, j.held_images) for j in jobs["generator"]] == [t for t in trained if t[0] == "generator"]
    [(_, arch, epochs, steps, n)] = [t for t in trained if t[0] == "classifier"]
    [oracle] = jobs["classifier"]
    assert steps is None and (oracle.model, oracle.held_images) == (arch, n)
    assert oracle.steps == epochs * math.ceil(n / cfg.clf_batch_size)
