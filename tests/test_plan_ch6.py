"""The cost plan of chapter 6 (fidelity vs utility): its variants are the run's (:func:`variant_rows`, the
same rows :func:`variants` builds), one synthetic set each, and two arms x seeds per variant plus R."""

from types import SimpleNamespace

import pytest

from cxrlib import plan
from cxrlib.experiments import fidelity_utility as F
from cxrlib.experiments import generators as G
from cxrlib.experiments import pretraining as P
from cxrlib.experiments import synthetic


def _kinds(jobs):
    return {k: [j for j in jobs if j.kind == k] for k in plan.KINDS}


def _variant(job):
    return job.name.removeprefix("synthetic set of ").removesuffix(" (if chapter 4 cached its generator)")


def test_chapter_6_plan_at_cpu_counts_every_variant_set_and_classifier():
    # the complete grids (cpu-full) with chapter 4's generators used only if cached
    cfg = F.Config.from_params(profile="cpu-full", pretraining_variants="if_cached")
    data = plan.plan_data(cfg)
    sizes, n = data.sizes, data.sizes["train"]
    jobs = _kinds(F.plan_jobs(cfg, data))
    # the main generator only (its snapshots are on the way); chapter 4's generators are not trained here
    [gen] = jobs["generator"]
    assert (gen.steps, gen.batch, gen.held_images, gen.shared) == (cfg.gen_steps, cfg.gen_batch_size, n, "main generator")
    # variants: final + 2 snapshots + w in (0, 1, 3) + chapter 2's 5 samplers + chapter 4's 4 fine-tuned and 3 other
    # scratch generators (its scratch 25 % is the main generator)
    ch2 = G.Config.from_params(profile="cpu-full")
    assert cfg.gen_checkpoints == (200, 500) and ch2.grid_guidance == (0.0, 1.0, 2.0, 3.0) and len(ch2.sampler_grid) == 5
    sampling = {_variant(j): j for j in jobs["sampling"]}
    assert len(sampling) == len(jobs["sampling"]) == 1 + 2 + 3 + 5 + 7
    assert {j.batch for j in jobs["sampling"]} == {j.held_images for j in jobs["sampling"]} == {cfg.n_syn}
    nfe = 2 * cfg.sampler_steps  # guidance w = 2: two network evaluations per step
    assert sampling["final (ddim-15, w=2)"].steps == sampling["EMA @ step 200"].steps == sampling["w=3"].steps == nfe
    assert sampling["w=0"].steps == cfg.sampler_steps and sampling["ddpm-50"].steps == 100 and sampling["dpm++-10"].steps == 20
    assert sampling["pretrained+FT 25%"].name.endswith("(if chapter 4 cached its generator)")
    assert "scratch 25%" not in sampling  # chapter 4's scratch 25 % is the main generator: the final variant
    # the oracle, and R + 2 arms per variant, 3 seeds each, on the step budget
    clf = jobs["classifier"]
    oracle = [j for j in clf if j.shared == "oracle"]
    assert len(oracle) == 1 and oracle[0].held_images == sizes["pool"] and oracle[0].model == cfg.oracle_arch
    arms = [j for j in clf if j.shared != "oracle"]
    assert cfg.n_seeds == 3 and len(arms) == (1 + 2 * 18) * 3
    assert {j.steps for j in arms} == {cfg.clf_steps} and {j.batch for j in arms} == {cfg.clf_batch_size}
    assert {j.eval_images for j in arms} == {(cfg.clf_steps // cfg.clf_eval_every) * sizes["val"] + sizes["test"]}
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in arms}
    assert held["real"] == n and held["synthetic only: w=0"] == cfg.n_syn
    assert held["real + synthetic: pretrained+FT 100%"] == n + cfg.n_syn


def test_the_sampling_steps_follow_each_variants_sampler_and_guidance():
    cfg = F.Config.from_params(profile="cpu", guidance_scales=(0.0, 2.0), samplers=("ddim-15", "dpm++-5", "ddpm-7"),
                               checkpoint_variants=False, pretraining_variants="never", n_syn=100)
    jobs = _kinds(F.plan_jobs(cfg, plan.plan_data(cfg)))
    assert {_variant(j): j.steps for j in jobs["sampling"]} == {"final (ddim-15, w=2)": 30, "w=0": 15, "dpm++-5": 10,
                                                                "ddpm-7": 14}
    assert len(jobs["generator"]) == 1 and len(jobs["classifier"]) == 1 + (1 + 2 * 4) * cfg.n_seeds


def test_cpu_full_trains_chapter_4s_generators_once_each():
    cfg = F.Config.from_params(profile="cpu-full")
    assert cfg.pretraining_variants == "always"
    data = plan.plan_data(cfg)
    labeled = data.labeled
    jobs = _kinds(F.plan_jobs(cfg, data))
    pcfg = F.pretraining_config(cfg)  # ft and scratch on 10, 25, 50, 100 %; R = R_25% (the main generator)
    assert pcfg.ft_fractions == pcfg.scratch_fractions == (0.1, 0.25, 0.5, 1.0) and cfg.labeled_fraction == 0.25
    gens = {j.name: j for j in jobs["generator"]}
    assert len(gens) == 1 + 1 + 4 + 3
    pre = gens[f"chapter 4: unconditional DDPM pretrained on the pool ({cfg.gen_steps} steps)"]  # chapter 4's job, named as there
    assert (pre.steps, pre.held_images, pre.shared) == (cfg.gen_steps, data.sizes["pool"], "pool-pretrained generator")
    assert [(j.steps, j.held_images) for j in gens.values() if "fine-tuned" in j.name] == \
        [(pcfg.ft_steps, labeled(f)) for f in (0.1, 0.25, 0.5, 1.0)]
    assert [(j.steps, j.held_images) for j in gens.values() if "scratch" in j.name] == \
        [(cfg.gen_steps, labeled(f)) for f in (0.1, 0.5, 1.0)]
    assert labeled(0.1) < labeled(0.25) == data.sizes["train"] < labeled(0.5) < labeled(1.0) == data.sizes["pool"]
    assert len(jobs["sampling"]) == 11 + 7 and not any("if chapter 4" in j.name for j in jobs["sampling"])
    assert len(jobs["classifier"]) == 1 + (1 + 2 * 18) * cfg.n_seeds


def test_the_plan_lists_the_variants_trainings_and_arms_the_run_builds(monkeypatch):
    """The run's own code (variants, pretraining.generators, utility) with its trainers replaced by stubs
    that record what they would train: the plan names the same variants, trainings and arms."""
    cfg = F.Config.from_params(profile="cpu-full", gen_checkpoints=(100, 400, 700))
    data = plan.plan_data(cfg)
    trained = []
    monkeypatch.setattr(synthetic, "main_generator_snapshots",
                        lambda c, sets, progress=True: {s: f"main@{s}" for s in (*c.gen_checkpoints, c.gen_steps)})
    monkeypatch.setattr(P, "labeled_subset", lambda c, sets, f: plan.stand_in(data.labeled(f)))
    monkeypatch.setattr(P, "pretrained", lambda c, sets, progress=True, cached_only=False:
                        trained.append(("pool", c.pretrain_steps or c.gen_steps, data.sizes["pool"])) or "pre")
    monkeypatch.setattr(P, "finetuned", lambda c, train, pre, progress=True, cached_only=False:
                        trained.append(("ft", c.ft_steps, len(train))) or f"ft{len(train)}")
    monkeypatch.setattr(P, "scratch", lambda c, sets, f, progress=True, cached_only=False:
                        trained.append(("scratch", c.gen_steps, data.labeled(f))) or f"scratch{f}")
    var = F.variants(cfg, sets=None)
    jobs = _kinds(F.plan_jobs(cfg, data))
    assert [_variant(j) for j in jobs["sampling"]] == list(var.index)
    assert [j.steps for j in jobs["sampling"]] == [s * (2 if w else 1) for s, w in zip(var.steps, var.guidance)]
    assert list(var.family).count("checkpoint") == 3
    # every training the run asks for (the scratch run at R's fraction is the main generator)
    main = (cfg.gen_steps, data.sizes["train"])
    assert sorted((j.steps, j.held_images) for j in jobs["generator"]) == \
        sorted([(s, m) for _, s, m in trained if (s, m) != main] + [main])
    # the arms utility() hands to evaluate_arms, and their sizes
    seen = {}
    monkeypatch.setattr(F.common, "evaluate_arms", lambda c, arms, sets, **kw: seen.update(arms))
    F.utility(cfg, SimpleNamespace(train=plan.stand_in(data.sizes["train"]), test=None),
              {v: plan.stand_in(cfg.n_syn) for v in var.index})
    expected = {a: sum(len(d) for d in ds) for a, ds in seen.items()}
    clf = [j for j in jobs["classifier"] if j.shared != "oracle"]
    assert {j.name.rsplit(",", 1)[0]: j.held_images for j in clf} == expected
    assert len(clf) == len(expected) * cfg.n_seeds


def test_the_plan_sizes_are_those_of_the_sets_the_run_loads():
    """At smoke, the sets the chapter loads (rendered): R, the conditions of every variant's set and the
    labeled subsets chapter 4's generators train on have the plan's sizes."""
    from cxrlib.experiments import common

    cfg = F.Config.from_params(profile="smoke", pretraining_variants="always")
    data = plan.plan_data(cfg)
    sets = common.real_sets(cfg, progress=False)
    jobs = _kinds(F.plan_jobs(cfg, data))
    assert (data.sizes["train"], data.sizes["val"], data.sizes["test"]) == (len(sets.train), len(sets.val), len(sets.test))
    assert jobs["generator"][0].held_images == len(sets.train)
    assert {j.batch for j in jobs["sampling"]} == {len(P.conditions(cfg, sets, cfg.n_syn))}
    for f in (0.1, 0.25, 0.5, 1.0):
        assert data.labeled(f) == len(P.labeled_subset(cfg, sets, f))
    real = [j for j in jobs["classifier"] if j.name.startswith("real,")]
    assert [j.held_images for j in real] == [len(sets.train)] * cfg.n_seeds


@pytest.mark.parametrize("mode", ["never", "if_cached"])
def test_no_chapter_4_generator_is_trained_unless_always(mode):
    cfg = F.Config.from_params(profile="cpu-full", pretraining_variants=mode)
    jobs = _kinds(F.plan_jobs(cfg, plan.plan_data(cfg)))
    assert [j.shared for j in jobs["generator"]] == ["main generator"]
    assert len(jobs["sampling"]) == 11 + (7 if mode == "if_cached" else 0)


def test_a_book_plan_counts_chapter_4s_generators_and_their_sets_once():
    """At cpu-full chapter 6 trains chapter 4's generators and samples the sets chapter 4 samples (same cache
    entries): after chapter 4, a book plan counts none of them again, only chapter 6's own variants."""
    from cxrlib.experiments.pretraining_plan import plan_jobs as chapter_4_jobs

    cfg, cfg4 = F.Config.from_params(profile="cpu-full"), P.Config.from_params(profile="cpu-full")
    data = plan.plan_data(cfg)
    rates = {"classifier": 250.0, "generator": 30.0, "nfe": 500.0, "recipe": "cpu", "source": "test rates"}
    est = plan.book_estimate([("04", cfg4, chapter_4_jobs(cfg4, data)), ("06", cfg, F.plan_jobs(cfg, data))], rates)
    ch6 = est[est.chapter == "06"]
    assert "generator" not in set(ch6.kind)  # main generator, pool pretraining, 4 fine-tunings, 3 from scratch
    kept = [_variant(j) for j in ch6[ch6.kind == "sampling"].itertuples()]
    assert kept == ["EMA @ step 200", "EMA @ step 500", "w=0", "w=1", "w=3", "ddpm-50", "ddim-10", "ddim-25", "dpm++-10",
                    "dpm++-20"]  # the final generator's set and chapter 4's seven are chapter 4's
    assert not any(ch6.name.str.startswith("oracle"))


def test_the_cpu_hour_book_plans_the_main_generators_variants_with_one_seed():
    cfg = F.Config.from_params(profile="cpu")
    jobs = _kinds(F.plan_jobs(cfg, plan.plan_data(cfg)))
    assert {_variant(j) for j in jobs["sampling"]} == {"EMA @ step 200", "EMA @ step 500", "final (ddim-15, w=2)", "w=0"}
    assert len([j for j in jobs["classifier"] if j.shared != "oracle"]) == (1 + 2 * 4) * cfg.n_seeds and cfg.n_seeds == 1
