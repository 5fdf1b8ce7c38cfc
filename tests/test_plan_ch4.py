"""Chapter 4's cost plan (cxrlib/experiments/pretraining_plan.py): the pool pretraining, a fine-tuning per
ft fraction, a from-scratch generator per scratch fraction (the main generator at labeled_fraction), a
synthetic set per generator, every arm x seed and the oracle; R_f sized as the run draws it."""

import functools
from pathlib import Path

import pytest

from cxrlib import plan
from cxrlib.experiments import pretraining as P
from cxrlib.experiments.pretraining_plan import plan_jobs


@functools.lru_cache(maxsize=None)
def _data(dataset, n_pool, n_val, n_test, labeled_fraction, n_external, sites):
    cfg = P.Config.from_params(profile="cpu", dataset=dataset, n_pool=n_pool, n_val=n_val, n_test=n_test,
                               labeled_fraction=labeled_fraction, n_external=n_external, external_sites=sites)
    return plan.plan_data(cfg)


def data(cfg):
    """plan.plan_data(cfg), computed once per data setting (cpu and cpu-full read the same sets)."""
    return _data(cfg.dataset, cfg.n_pool, cfg.n_val, cfg.n_test, cfg.labeled_fraction, cfg.n_external, cfg.external_sites)


# the primary design of chapter 4 (25 % vs the 100 % reference, the main generator beside them); the cpu hour
# book runs no pretraining chain, cpu-full the whole grid
PRIMARY = dict(profile="cpu-full", ft_fractions=(0.25, 1.0), scratch_fractions=(0.25,), real_fractions=(0.25, 1.0),
               real_plus_syn=False)


def kinds(jobs):
    return {k: [j for j in jobs if j.kind == k] for k in plan.KINDS}


def test_chapter_4_plan_at_cpu_counts_the_pretraining_each_fine_tuning_the_main_generator_their_sets_and_arms():
    cfg = P.Config.from_params(**PRIMARY)  # ft (25 %, 100 %), scratch (25 % = R: the main generator)
    d = data(cfg)
    sizes, n = d.sizes, d.sizes["train"]
    assert cfg.labeled_fraction == 0.25 and n == d.labeled(0.25) < d.labeled(1.0) == sizes["pool"]
    jobs = kinds(plan_jobs(cfg, d))
    gen = [(j.steps, j.held_images, j.shared) for j in jobs["generator"]]
    assert gen == [(cfg.gen_steps, sizes["pool"], "pool-pretrained generator"), (cfg.ft_steps, n, "pool fine-tuned on R"),
                   (cfg.ft_steps, sizes["pool"], "pool fine-tuned on R100%"), (cfg.gen_steps, n, "main generator")]
    assert {j.batch for j in jobs["generator"]} == {cfg.gen_batch_size}
    # one set of n_syn images per generator (not the pretrained one: it is only fine-tuned)
    assert [(j.steps, j.batch, j.held_images) for j in jobs["sampling"]] == [(2 * cfg.sampler_steps, cfg.n_syn, cfg.n_syn)] * 3
    assert jobs["sampling"][2].shared.startswith("main generator: ")
    # 3 synthetic-only arms + real 25 %, real 100 %; x 5 seeds; + the oracle
    clf = jobs["classifier"]
    assert len(clf) == 5 * cfg.n_seeds + 1 and cfg.n_seeds == 5
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in clf if j.shared != "oracle"}
    assert held == {"synthetic: pretrained+FT 25%": cfg.n_syn, "synthetic: pretrained+FT 100%": cfg.n_syn,
                    "synthetic: scratch 25%": cfg.n_syn, "real 25%": n, "real 100%": sizes["pool"]}
    # R_25% is R: its classifiers are the other chapters' real arm (one mark per seed), the others are chapter 4's
    assert [j.shared for j in clf if j.name.startswith("real 25%")] == [plan.real_classifier_mark(cfg, s) for s in cfg.clf_seeds()]
    assert not any(j.shared for j in clf if j.name.startswith(("real 100%", "synthetic")))
    assert {j.steps for j in clf if j.shared != "oracle"} == {cfg.clf_steps}
    assert {j.eval_images for j in clf if j.shared != "oracle"} == {cfg.clf_steps // cfg.clf_eval_every * sizes["val"] + sizes["test"]}
    oracle = [j for j in clf if j.shared == "oracle"]
    assert [j.shared for j in oracle] == ["oracle"] and oracle[0] == plan.oracle_job(cfg, sizes)


def test_cpu_full_plans_huijbens_grid_with_real_plus_synthetic_arms_on_nested_subsets():
    cfg = P.Config.from_params(profile="cpu-full")
    d = data(cfg)
    n_f = {f: d.labeled(f) for f in (0.1, 0.25, 0.5, 1.0)}
    assert n_f[0.1] < n_f[0.25] == d.sizes["train"] < n_f[0.5] < n_f[1.0] == d.sizes["pool"]
    jobs = kinds(plan_jobs(cfg, d))
    ft = [j for j in jobs["generator"] if j.steps == cfg.ft_steps]
    scratch = [j for j in jobs["generator"] if j.steps == cfg.gen_steps][1:]  # after the pretraining
    assert [j.held_images for j in ft] == [j.held_images for j in scratch] == list(n_f.values())
    assert [j.shared for j in ft] == ["pool fine-tuned on R10%", "pool fine-tuned on R", "pool fine-tuned on R50%",
                                      "pool fine-tuned on R100%"]
    assert [j.shared for j in scratch].count("main generator") == 1 and len(jobs["sampling"]) == 8
    clf = [j for j in jobs["classifier"] if j.shared != "oracle"]
    assert len(clf) == (8 + 4 + 8) * cfg.n_seeds  # synthetic-only, real-only, real + synthetic
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in clf}
    assert held["real 10% + synthetic: pretrained+FT 10%"] == n_f[0.1] + cfg.n_syn
    assert held["real 100% + synthetic: scratch 100%"] == n_f[1.0] + cfg.n_syn


def test_a_pretraining_other_than_the_shared_one_shares_neither_it_nor_its_fine_tunings():
    cfg = P.Config.from_params(**PRIMARY, pretrain_steps=300)
    jobs = kinds(plan_jobs(cfg, data(cfg)))
    assert (jobs["generator"][0].steps, jobs["generator"][0].shared) == (300, "")
    assert [j.shared for j in jobs["generator"][1:3]] == ["", ""] and jobs["generator"][3].shared == "main generator"
    assert [bool(j.shared) for j in jobs["sampling"]] == [False, False, True]


def test_plan_sizes_are_the_subsets_the_chapter_draws_from_the_loaded_pool():
    """R_f of the plan (stand-ins with the pool's metadata) against the chapter's own labeled_subset on the
    real sets it loads (at smoke, with every kind of fraction: below, at and above labeled_fraction, 100 %)."""
    from cxrlib.experiments import common

    cfg = P.Config.from_params(profile="smoke", ft_fractions=(0.1, 0.5, 1.0), scratch_fractions=(0.25, 0.5),
                               real_fractions=(0.1, 1.0), real_plus_syn=True)
    sets = common.real_sets(cfg, progress=False)
    r = {f: len(P.labeled_subset(cfg, sets, f)) for f in (0.1, 0.25, 0.5, 1.0)}
    assert len(set(r.values())) == 4 and r[0.5] == len(sets.train)
    jobs = kinds(plan_jobs(cfg, plan.plan_data(cfg)))
    assert [j.held_images for j in jobs["generator"]] == [len(sets.pool), r[0.1], r[0.5], r[1.0], r[0.25], r[0.5]]
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in jobs["classifier"] if j.shared != "oracle"}
    assert held["real 10%"] == r[0.1] and held["real 25% + synthetic: scratch 25%"] == r[0.25] + cfg.n_syn
    assert len(held) == 5 + 2 + 5


@pytest.mark.parametrize("profile", ["smoke", "cpu-full", "paper"])  # at cpu neither chapter fine-tunes (next test)
def test_the_fine_tuning_on_r_is_chapter_5s_cache_entry(profile, monkeypatch):
    """The mark "pool fine-tuned on R" claims chapter 4's fine-tuning on R is chapter 5's pool-pretrained
    source: both reach train_cached_generator with the same recipe, training set and starting model."""
    from cxrlib.experiments import common, synthetic
    from cxrlib.experiments import supplementation as S

    calls = []
    monkeypatch.setattr(synthetic, "pretrained_generator", lambda cfg, sets, progress=True: Path("pretrained"))
    monkeypatch.setattr(synthetic, "train_cached_generator",
                        lambda cfg, train, **kw: calls.append((synthetic.generator_options(cfg), train, kw)) or
                        {kw["steps"]: Path("x")})
    c4, c5 = P.Config.from_params(profile=profile), S.Config.from_params(profile=profile)
    sets = common.RealSets(plan.stand_in(10), plan.stand_in(5), plan.stand_in(1), plan.stand_in(1), {})
    P.finetuned(c4, P.labeled_subset(c4, sets, c4.labeled_fraction), P.pretrained(c4, sets))
    synthetic.pool_finetuned_generator(c5, sets, ft_steps=c5.ft_steps, ft_lr=c5.ft_lr)
    assert calls[0][1] is calls[1][1] is sets.train
    assert calls[0] == calls[1]
    assert c4.pretrain_steps is None  # the pretrained model is synthetic.pretrained_generator's


def test_the_chapter_is_planned_through_its_plan_module():
    from test_architecture import import_graph

    cfg = P.Config.from_params(profile="cpu")
    sizes, jobs = plan.plan_for(cfg, "04_pretraining.ipynb")
    assert sizes == data(cfg).sizes and jobs == plan_jobs(cfg, data(cfg))
    assert "cxrlib.experiments.pretraining_plan" not in import_graph()["cxrlib.experiments.pretraining"]


def test_the_cpu_hour_book_plans_no_pretraining_only_the_main_generators_synthetic_arm():
    """At ``cpu`` nothing is fine-tuned, so nothing is pretrained (``pretraining.generators`` skips it too)."""
    cfg = P.Config.from_params(profile="cpu")
    jobs = kinds(plan_jobs(cfg, data(cfg)))
    assert [j.shared for j in jobs["generator"]] == ["main generator"]
    assert {j.name.rsplit(",", 1)[0] for j in jobs["classifier"] if j.shared != "oracle"} == {"synthetic: scratch 25%", "real 25%"}


def test_at_cpu_nothing_is_pretrained_since_nothing_is_fine_tuned(monkeypatch):
    from cxrlib.experiments import common, synthetic
    from cxrlib.experiments import supplementation as S

    monkeypatch.setattr(synthetic, "pretrained_generator", lambda *a, **k: pytest.fail("pretrained at cpu"))
    c4 = P.Config.from_params(profile="cpu")
    sets = common.RealSets(plan.stand_in(10), plan.stand_in(5), plan.stand_in(1), plan.stand_in(1), {})
    assert c4.ft_fractions == () and P.pretrained(c4, sets) is None
    assert not S.Config.from_params(profile="cpu").pool_pretrained
