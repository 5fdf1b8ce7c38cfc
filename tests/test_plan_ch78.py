"""The cost plans of chapters 7 (generator comparison) and 8 (image-to-image): every generator, sample and
classifier the notebooks make, counted from the config and the data's metadata, and the latent generator
both chapters train counted once in a book plan."""

import math

import pytest

from cxrlib import plan
from cxrlib.config import ConfigError
from cxrlib.experiments import comparison as C
from cxrlib.experiments import generator_families as G
from cxrlib.experiments import img2img as I

RATES = {"classifier": 250.0, "generator": 30.0, "nfe": 500.0, "recipe": "cpu", "source": "test rates"}


def _kinds(jobs):
    return {k: [j for j in jobs if j.kind == k] for k in plan.KINDS}


@pytest.fixture(scope="module")
def smoke_sets():
    """The real sets a smoke run of chapter 7 or 8 loads (their data fields are the same)."""
    from cxrlib.experiments import common

    return common.real_sets(I.Config.from_params(profile="smoke"), progress=False)


def test_chapter_7_plan_at_cpu_counts_every_generator_sample_architecture_and_seed():
    # the complete design on the cpu recipes (the hour book trains small_cnn alone on 3 generators: next test)
    cfg = C.Config.from_params(profile="cpu-full", arch_seeds=(5, 1))
    data = plan.plan_data(cfg)
    sizes, n, L = data.sizes, data.sizes["train"], len(cfg.labels)
    jobs = _kinds(C.plan_jobs(cfg, data))
    gen = jobs["generator"]  # GAN, the main generator, autoencoder + latent denoiser, pool pretraining + few-shot
    assert [(j.steps, j.batch) for j in gen] == [(cfg.gan_steps, cfg.gan_batch_size), (cfg.gen_steps, cfg.gen_batch_size),
                                                  (cfg.ldm_vae_steps, cfg.ldm_vae_batch_size), (cfg.ldm_steps, cfg.ldm_batch_size),
                                                  (cfg.gen_steps, cfg.gen_batch_size), (cfg.fewshot_steps, cfg.fewshot_batch_size)]
    assert [j.shared for j in gen] == ["", "main generator", "latent generator: autoencoder", "latent generator",
                                       "pool-pretrained generator", ""]
    assert [j.held_images for j in gen] == [n] * 4 + [sizes["pool"], (L + 1) * cfg.fewshot_k]
    # a grid and a balanced set per generator; a GAN image is one forward pass, the others 10 DDIM steps x 2 (guidance)
    samp = jobs["sampling"]
    assert [j.batch for j in samp] == [(L + 1) * cfg.n_grid, max(cfg.amounts) * L] * 4 == [36, 1500] * 4
    assert [j.steps for j in samp] == [1, 1] + [2 * cfg.sampler_steps] * 6 and cfg.sampler_steps == 10
    # small_cnn: real + 4 generators x 2 amounts, 5 seeds; resnet18: real + 4 x the largest amount, 1 seed; the oracle
    clf = jobs["classifier"]
    assert len(clf) == (1 + 4 * 2) * 5 + (1 + 4) * 1 + 1
    assert clf[-1] == plan.oracle_job(cfg, sizes) and clf[-1].shared == "oracle"
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in clf[:-1]}
    assert held["small_cnn: real"] == held["resnet18: real"] == n
    assert held["small_cnn: gan +100/label"] == n + 100 * L and held["resnet18: fewshot +300/label"] == n + 300 * L
    assert "resnet18: gan +100/label" not in held
    assert {j.model for j in clf[:-1]} == {"small_cnn", "resnet18"} and {j.steps for j in clf[:-1]} == {cfg.clf_steps}
    assert {j.eval_images for j in clf[:-1]} == {math.ceil(cfg.clf_steps / cfg.clf_eval_every) * sizes["val"] + sizes["test"]}
    ext = C.plan_jobs(cfg.replace(test_sets=("internal", "nih")), data)  # an external test set is predicted once more
    assert ext[-2].eval_images == clf[-2].eval_images + sizes["external nih"]


def test_the_cpu_hour_book_plans_chapter_7_without_the_pool_chain_or_a_second_backbone():
    cfg = C.Config.from_params(profile="cpu")
    jobs = _kinds(C.plan_jobs(cfg, plan.plan_data(cfg)))
    assert "pool-pretrained generator" not in {j.shared for j in jobs["generator"]}
    arms = [j for j in jobs["classifier"] if j.shared != "oracle"]
    assert {j.model for j in arms} == {"small_cnn"} and len(arms) == (1 + 3) * cfg.arch_seeds[0]


def test_chapter_7_paper_plan_trains_every_architecture_on_every_amount():
    """At paper, every architecture has every amount and n_seeds seeds (arch_* = None); the metadata of the
    cpu pool stands in for CheXpert's."""
    cfg = C.Config.from_params(profile="paper")
    meta = plan.plan_data(C.Config.from_params(profile="cpu")).pool_meta
    data = plan.PlanData({"pool": len(meta), "train": len(meta), "val": 100, "test": 200}, meta, cfg.labeled_fraction)
    jobs = _kinds(C.plan_jobs(cfg, data))
    assert len(jobs["classifier"]) == len(cfg.clf_archs) * (1 + 4 * len(cfg.amounts)) * cfg.n_seeds + 1 == 256
    assert {j.model for j in jobs["classifier"][:-1]} == set(cfg.clf_archs)
    assert [j.steps for j in jobs["generator"]][:1] == [100_000] and jobs["sampling"][3].steps == 2 * 200
    assert jobs["sampling"][1].batch == 1000 * len(cfg.labels)


def test_chapter_7_plan_reads_the_few_shot_set_and_r_as_the_run_does(smoke_sets):
    cfg = C.Config.from_params(profile="smoke")
    data = plan.plan_data(cfg)
    few = G.few_shot_subset(smoke_sets.train, cfg.labels, cfg.fewshot_k, cfg.seed)
    jobs = _kinds(C.plan_jobs(cfg, data))
    assert jobs["generator"][-1].held_images == len(few) > 0
    assert jobs["generator"][-1].name.startswith("fewshot") and jobs["generator"][-1].steps == cfg.fewshot_steps
    assert [j.held_images for j in jobs["classifier"][:3]] == [len(smoke_sets.train) + a * 3 for a in (0, 4, 8)]


def test_chapter_8_plan_at_cpu_counts_translations_controls_arms_and_seeds():
    cfg = I.Config.from_params(profile="cpu")
    assert cfg.task == "binary" and cfg.arm_strengths == (0.7,)
    data = plan.plan_data(cfg)
    jobs = _kinds(I.plan_jobs(cfg, data))
    assert jobs["generator"] == G.latent_jobs(cfg, data.sizes["train"])
    samp = jobs["sampling"]  # each strength to the minority label, then the controls: the last ⌊s·10⌋ DDIM steps x 2
    assert [j.steps for j in samp] == [6, 10, 14, 18] * 2
    n_src = samp[0].batch
    assert 0 < n_src <= cfg.n_translate and {j.batch for j in samp} == {j.held_images for j in samp} == {n_src}
    assert "control" in samp[4].name and "control" not in samp[3].name
    clf = jobs["classifier"]
    assert len(clf) == 3 * cfg.n_seeds + 1 and clf[-1] == plan.oracle_job(cfg, data.sizes)
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in clf[:-1]}
    n_task = held["real"]  # the binary task's R: normal or minority-positive images only
    assert 0 < n_task < data.sizes["train"]
    assert held == {"real": n_task, "real + img2img s=0.7": n_task + n_src, "real + control s=0.7": n_task + n_src}
    # validated on the binary val set every 25 steps, predicting the binary test set once: both smaller than the splits
    evals = {j.eval_images for j in clf[:-1]}
    assert len(evals) == 1 and evals.pop() < math.ceil(cfg.clf_steps / cfg.clf_eval_every) * data.sizes["val"] + data.sizes["test"]
    assert not any(j.shared for j in clf[:-1])
    multi = _kinds(I.plan_jobs(cfg.replace(task="multilabel"), data))["classifier"]
    assert multi[0].held_images == data.sizes["train"] and multi[1].held_images == data.sizes["train"] + n_src


def test_chapter_8_plan_reads_sources_and_the_binary_task_as_the_run_does(smoke_sets):
    cfg = I.Config.from_params(profile="smoke")
    data = plan.plan_data(cfg)
    jobs = _kinds(I.plan_jobs(cfg, data))
    n_src = len(I.normal_sources(cfg, smoke_sets))
    assert {j.batch for j in jobs["sampling"]} == {n_src} and n_src > 0
    _, tsets = I.task_sets(cfg, smoke_sets)
    real = jobs["classifier"][0]
    assert real.name == "real, seed 0" and real.held_images == len(tsets.train)
    assert jobs["classifier"][1].held_images == len(tsets.train) + n_src
    every = math.ceil(cfg.clf_steps / cfg.clf_eval_every)
    assert real.eval_images == every * len(tsets.val) + len(tsets.test)
    assert len(tsets.val) < len(smoke_sets.val) and len(tsets.test) < len(smoke_sets.test)


def test_sdedit_steps_of_the_plan_are_the_samplers():
    from cxrlib.generators.latent_sampling import img2img_timesteps
    from cxrlib.generators.sampling import make_scheduler

    schedule = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
    for sampler in ("ddim", "dpm++"):
        for steps in (10, 15):
            cfg = I.Config.from_params(profile="cpu", sampler=sampler, sampler_steps=steps, guidance=0.0)
            for s in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
                sched = make_scheduler(sampler, schedule)
                sched.set_timesteps(steps)
                assert G.network_evaluations(cfg, "latent-diffusion", s) == len(img2img_timesteps(sched, steps, s)), (sampler, steps, s)
    assert G.network_evaluations(cfg.replace(guidance=2.0), "ddpm") == 2 * 15 and G.network_evaluations(cfg, "gan") == 1


@pytest.mark.parametrize("profile", ["smoke", "cpu", "cpu-full", "paper"])
def test_the_latent_generator_is_one_model_for_chapters_7_and_8(profile):
    c7, c8 = C.Config.from_params(profile=profile), I.Config.from_params(profile=profile)
    assert G.latent_options(c7) == G.latent_options(c8)  # same function, same options, both on R: one cache entry
    assert G.latent_jobs(c7, 100) == G.latent_jobs(c8, 100)


def test_a_book_plan_counts_the_shared_latent_generator_and_real_arms_once():
    c7, c8 = C.Config.from_params(profile="cpu-full"), I.Config.from_params(profile="cpu-full", task="multilabel")
    d7 = plan.plan_data(c7)
    j7, j8 = C.plan_jobs(c7, d7), I.plan_jobs(c8, d7)
    # under the multilabel task, chapter 8's real arm is chapter 7's small_cnn real arm (same recipe, labels, R, val)
    real7 = [j.shared for j in j7 if j.name.startswith("small_cnn: real,")]
    assert [j.shared for j in j8 if j.name.startswith("real,")] == real7 and len(set(real7)) == c7.n_seeds
    assert not set(real7) & {j.shared for j in j7 if j.name.startswith("resnet18: real,")}
    est = plan.book_estimate([("07", c7, j7), ("08", c8, j8)], RATES)
    ch8 = est[est.chapter == "08"]
    assert not (ch8.kind == "generator").any() and not ch8.name.str.startswith("real,").any()
    assert not ch8.name.str.startswith("oracle").any() and len(ch8) == len(j8) - 2 - c8.n_seeds - 1
    assert len(est[est.chapter == "07"]) == len(j7)


def test_arm_strengths_must_be_translated():
    with pytest.raises(ConfigError, match="arm_strengths.*not among strengths"):
        I.Config.from_params(strengths=(0.3, 0.5), arm_strengths=(0.7,))
