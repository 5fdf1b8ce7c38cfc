"""The cost plan of a run (cxr run --plan / --budget): its jobs come from the chapter's own arm builders,
its estimate scales measured rates by FLOPs, and a run over budget never starts."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrlib import plan
from cxrlib.errors import UserError
from cxrlib.experiments import supplementation as S

RATES = {"classifier": 250.0, "generator": 30.0, "nfe": 500.0, "recipe": "cpu", "source": "test rates"}
BENCH_ROWS = [{"benchmark": "classifier training", "setting": "small_cnn 32px batch 64", "value": 250.0, "unit": "images/s"},
              {"benchmark": "generator training", "setting": "cpu recipe 32px batch 64", "value": 30.0, "unit": "images/s"},
              {"benchmark": "sampling", "setting": "ddim-50 32px", "value": 500.0, "unit": "image-steps/s"}]


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    """A make bench result of RATES in $CXR_BENCH_DIR."""
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "bench-20261202-000000.json").write_text(json.dumps({"machine": {}, "rows": BENCH_ROWS}))
    monkeypatch.setenv("CXR_BENCH_DIR", str(folder))
    return folder


def _kinds(jobs):
    return {k: [j for j in jobs if j.kind == k] for k in plan.KINDS}


def test_chapter_5_plan_at_cpu_counts_every_source_stream_arm_and_seed():
    # the 1000 % design with all three sources and the mixing arms on the cpu recipes (cpu-full's largest point)
    cfg = S.Config.from_params(profile="cpu-full", supplement_percents=(0, 1000), synthetic_only_percents=(300,),
                               duplicate_percents=(1000,), regime_fractions=())
    data = plan.plan_data(cfg)
    sizes = data.sizes
    assert sizes["pool"] == cfg.n_pool and 0 < sizes["train"] < sizes["pool"] and sizes["external nih"] == cfg.n_external
    jobs = _kinds(S.plan_jobs(cfg, data))
    n = sizes["train"]
    # R-only 1, R-only 2, the pool pretraining and its fine-tuning on R; one stream per source
    assert [j.steps for j in jobs["generator"]] == [cfg.gen_steps] * 3 + [cfg.ft_steps]
    assert [j.batch for j in jobs["sampling"]] == [10 * n] * 3 and all(j.steps == 2 * cfg.sampler_steps for j in jobs["sampling"])
    # main grid: real, 3 sources x (1000 % supplemented, 300 % alone), duplicates 1000 %; mixing: 3 arms; 5 seeds each
    clf = jobs["classifier"]
    assert len(clf) == (1 + 3 * 2 + 1 + 3) * cfg.n_seeds
    assert {j.steps for j in clf} == {cfg.clf_steps}
    held = {j.name.rsplit(",", 1)[0]: j.held_images for j in clf}
    assert held["real"] == n and held["real+duplicates 1000%"] == held["real+synthetic 1000% [pool-pretrained]"] == 11 * n
    assert held["synthetic 300% [R-only 2]"] == 3 * n and held["nih real + internal synthetic 100%"] == 2 * n


def test_the_regime_map_counts_what_it_shares_with_the_main_grid_once():
    cfg = S.Config.from_params(profile="cpu-full")  # regime (0.1, 0.25, 0.5, 1.0) x (100, 300); R = R_25%
    data = plan.plan_data(cfg)
    labeled = data.labeled
    jobs = _kinds(S.plan_jobs(cfg, data))
    regime = [j for j in jobs["classifier"] if j.name.startswith("R")]
    assert len(regime) == 3 * (1 + 2 * 2) * cfg.n_seeds  # R_25% is R: its arms are the main grid's
    assert sum("R10%" in j.name for j in jobs["generator"]) == 1 and labeled(0.1) < labeled(0.5) < labeled(1.0) == data.sizes["pool"]
    assert not any("R25%" in j.name for j in jobs["generator"] + jobs["sampling"])


def test_chapter_3_plan_reads_r_labels_from_the_metadata_exactly_as_the_run_does():
    """The minority rule needs R's labels: the plan's image-less R has the labels of the R the chapter
    loads (rendered here at smoke), so its minority set has the run's size."""
    from cxrlib.experiments import common
    from cxrlib.experiments import imbalance as I

    cfg = I.Config.from_params(profile="smoke")
    data = plan.plan_data(cfg)
    real = common.real_sets(cfg, progress=False).train
    np.testing.assert_array_equal(I.positive_counts(data.real(), cfg.labels), I.positive_counts(real, cfg.labels))
    minority = len(I.plan_minority(cfg, real)[0])
    jobs = _kinds(I.plan_jobs(cfg, data))
    assert [j.name for j in jobs["sampling"]] == ["balanced synthetic set", "minority synthetic set", "natural synthetic set"]
    assert jobs["sampling"][1].batch == minority > 0
    assert len(jobs["classifier"]) == len(cfg.arms) * cfg.n_seeds
    assert {j.held_images for j in jobs["classifier"] if j.name.startswith("real+minority")} == {len(real) + minority}


def test_the_estimate_scales_by_flops_and_a_run_over_budget_is_refused():
    cfg = S.Config.from_params(profile="cpu")
    small = plan.Job("classifier", "a", 100, 64, 32, "small_cnn", 1000)
    dense = plan.Job("classifier", "b", 100, 64, 32, "densenet121", 1000)
    est = plan.estimate([small, dense], cfg, RATES).set_index("name")
    assert est.loc["a", "seconds"] == pytest.approx(100 * 64 / RATES["classifier"])
    ratio = plan.classifier_flops("densenet121", 32) / plan.classifier_flops("small_cnn", 32)
    assert est.loc["b", "seconds"] / est.loc["a", "seconds"] == pytest.approx(ratio) and ratio > 5
    assert est.loc["b", "memory_gb"] > est.loc["a", "memory_gb"]  # densenet121's weights and Adam moments
    plan.check_budget(est, budget_hours=1.0)  # about 2 minutes: within
    sizes = {"val": 100, "test": 50}  # validations: every clf_eval_every steps, or once per epoch without a step budget
    assert plan.classifier_jobs(cfg, {"a": 640}, sizes)[0].eval_images == (cfg.clf_steps // cfg.clf_eval_every) * 100 + 50
    epochs = plan.classifier_jobs(cfg.replace(clf_steps=None, clf_epochs=3), {"a": 640}, sizes)[0]
    assert (epochs.steps, epochs.eval_images) == (3 * 10, 3 * 100 + 50)
    with pytest.raises(UserError, match=r"over the budget of 0.001 h; most of it is classifier .*n_seeds"):
        plan.check_budget(est, budget_hours=0.001)


def test_cxr_run_plan_prints_the_jobs_and_totals_and_budget_stops_the_run(tmp_path, monkeypatch, capsys, bench_dir):
    from cxrlib.cli import main

    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["run", "notebooks/05_supplementation.ipynb", "--profile", "smoke", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "real+duplicates 100%, seed 0" in out and "total: about" in out and str(bench_dir) in out
    assert main(["run", "notebooks/05_supplementation.ipynb", "--profile", "smoke", "--budget", "0.00001"]) == 2
    assert "over the budget" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran
    assert main(["run", "notebooks/09_performance.ipynb", "--profile", "smoke", "--plan"]) == 2
    assert "no cost plan yet" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"cxr bench --device cuda"):  # CPU rates are never passed off as a GPU's
        plan.bench_rates(device="cuda")


def test_a_book_plan_counts_a_shared_model_once_and_keeps_different_recipes_apart():
    cfg = S.Config.from_params(profile="cpu")
    gen = plan.Job("generator", "main", 100, 64, 32, "generator", 500, shared="main generator")
    longer = plan.Job("generator", "main, longer", 200, 64, 32, "generator", 500, shared="main generator")
    clf = plan.Job("classifier", "real, seed 0", 10, 64, 32, "small_cnn", 500)
    est = plan.book_estimate([("03", cfg, [gen, clf]), ("05", cfg, [gen, longer, clf])], RATES)
    assert est.groupby("chapter").size().to_dict() == {"03": 2, "05": 2}  # 05: the same main generator is cached
    assert sorted(est.loc[est.chapter == "05", "name"]) == ["main, longer", "real, seed 0"]
    fwd = plan.classifier_flops("small_cnn", 32, len(cfg.labels))
    assert est.loc[est.name == "real, seed 0", "tflop"].iloc[0] == pytest.approx(fwd * 3 * 10 * 64 / 1e12)
    assumed = plan.with_assumed_rate(est, 2.0)
    assert assumed["seconds"].to_numpy() == pytest.approx(est["tflop"].to_numpy() / 2.0)
    with pytest.raises(UserError, match="--tflops"):
        plan.with_assumed_rate(est, 0)


def test_chapter_1_plan_counts_the_learning_curve_as_it_reads_it():
    from cxrlib.experiments import data as D

    cfg = D.Config.from_params(profile="smoke")  # fractions (0.25, 1.0), at most 600 images at 100 %
    jobs = plan.plan_for(cfg, "01_data.ipynb")[1]
    assert [j.held_images for j in jobs] == [600, 150] and [j.steps for j in jobs] == [10, 3]
    assert {j.eval_images for j in jobs} == {2 * cfg.n_test} and {j.model for j in jobs} == {cfg.difficulty_arch}


def test_cxr_plan_sums_the_book_names_the_unplanned_chapters_and_honours_the_budget(capsys, bench_dir):
    from cxrlib.cli import main

    nbs = ["notebooks/03_imbalance.ipynb", "notebooks/05_supplementation.ipynb", "notebooks/09_performance.ipynb"]
    assert main(["plan", *nbs, "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "03_imbalance" in out and "05_supplementation" in out and "\nbook " in out
    assert "not planned (no plan_jobs; not counted): 09_performance.ipynb" in out and str(bench_dir) in out
    text, est = plan.plan_book(nbs[:2], profile="smoke")
    assert est.loc[est.shared == "main generator", "chapter"].tolist() == ["03_imbalance"]  # chapter 5 reuses it
    _, assumed = plan.plan_book(nbs[:2], profile="smoke", tflops=1.0)
    assert assumed["seconds"].sum() == pytest.approx(est["tflop"].sum())
    assert main(["plan", *nbs[:2], "--profile", "smoke", "--tflops", "1e-9", "--budget", "1"]) == 2
    assert "over the budget" in capsys.readouterr().err


def test_the_book_plan_shares_the_real_classifiers_and_the_main_generators_sets_across_chapters():
    """The real arm (R alone) is one cached classifier per seed for chapters 3, 4 and 5, and chapter 2's
    evaluation set of the main generator is chapter 4's: a book plan counts each in its first chapter."""
    from cxrlib.experiments import generators as G
    from cxrlib.experiments import imbalance as I
    from cxrlib.experiments import pretraining as P

    chapters = []
    for name, module in (("02", G), ("03", I), ("04", P), ("05", S)):
        cfg = module.Config.from_params(profile="cpu")
        chapters.append((name, cfg, plan.plan_for(cfg, f"{name}.ipynb")[1]))
    est = plan.book_estimate(chapters, RATES)
    real = est[est.shared.str.startswith("classifier of R alone")]
    assert real.chapter.tolist() == ["03"] * chapters[1][1].n_seeds
    main_sets = est[est.shared.str.startswith("main generator: eval-prevalence")]
    assert "04" not in set(main_sets.chapter) and "02" in set(main_sets.chapter)
    assert est[est.shared == "main generator"].chapter.tolist() == ["02"]
    assert est[est.shared == "oracle"].chapter.tolist() == ["02"]


def test_other_generator_families_are_estimated_by_their_own_counted_flops():
    """A GAN or latent model is not timed as the pixel DDPM: its jobs carry FLOPs counted on the meta
    device, and the estimate scales the benchmarked DDPM rate by them."""
    from cxrlib.experiments import comparison as C

    cfg = C.Config.from_params(profile="cpu")
    jobs = {j.name.split(":")[0]: j for j in C.plan_jobs(cfg, plan.plan_data(cfg)) if j.kind == "generator"}
    ddpm, _ = plan.generator_flops(cfg)
    assert 0 < jobs["gan"].step_flops < 3 * ddpm and jobs["ddpm"].step_flops == 0.0
    est = plan.estimate([jobs["gan"], jobs["ddpm"]], cfg, RATES).set_index("name")
    per_image = est.seconds / (est.steps * est.batch)
    assert per_image.iloc[0] / per_image.iloc[1] == pytest.approx(jobs["gan"].step_flops / (3 * ddpm))
    assert est.tflop.iloc[0] == pytest.approx(jobs["gan"].step_flops * jobs["gan"].steps * jobs["gan"].batch / 1e12)


def test_a_labeled_fraction_the_manifest_lacks_is_an_error_not_the_whole_pool():
    meta = pd.DataFrame({"Edema": [0.0, 1.0, 0.0], "patient_id": ["a", "b", "c"]})
    data = plan.PlanData({}, meta, labeled_fraction=0.25)
    assert data.labeled(1.0) == 3
    with pytest.raises(UserError, match="labeled fraction 0.25 cannot be planned"):
        data.labeled(0.25)
    with_subsets = plan.PlanData({}, meta.assign(labeled_frac=[0.1, 0.25, 1.0]), labeled_fraction=0.25)
    assert with_subsets.labeled(0.25) == 2 and len(with_subsets.real()) == 2


def test_the_short_benchmark_of_a_plan_without_results_is_kept_for_the_next_plan(tmp_path, monkeypatch):
    from cxrlib import bench

    runs, rows = [], BENCH_ROWS
    monkeypatch.setattr(bench, "bench_classifier", lambda **kw: runs.append("clf") or rows[:1])
    monkeypatch.setattr(bench, "bench_generator", lambda **kw: runs.append("gen") or rows[1:])
    first = plan.bench_rates(tmp_path)
    assert runs == ["clf", "gen"] and "run now" in first["source"]
    second = plan.bench_rates(tmp_path)
    assert runs == ["clf", "gen"] and "short benchmark" in second["source"]  # read back, not rerun
    assert {k: second[k] for k in ("classifier", "generator", "nfe")} == {"classifier": 250.0, "generator": 30.0, "nfe": 500.0}
    (tmp_path / "bench-20261204-000000.json").write_text(json.dumps({"machine": {}, "rows": [{**r, "value": 2 * r["value"]} for r in rows]}))
    assert plan.bench_rates(tmp_path)["classifier"] == 500.0  # make bench's results win over a short one


def test_a_benchmarked_backbone_is_timed_by_its_own_rate_and_the_others_by_flops():
    cfg = S.Config.from_params(profile="cpu")
    resnet = {"benchmark": "classifier training", "setting": "resnet18 32px batch 64", "value": 40.0, "unit": "images/s"}
    rates = plan.rates_from_rows([*BENCH_ROWS, resnet], "test")
    assert rates["classifiers"] == {("small_cnn", 32): 250.0, ("resnet18", 32): 40.0}
    jobs = [plan.Job("classifier", a, 100, 64, 32, a, 1000, eval_images=300) for a in ("resnet18", "densenet121")]
    est = plan.estimate(jobs, cfg, rates).set_index("name")
    assert est.loc["resnet18", "seconds"] == pytest.approx((100 * 64 + 300 / 3) / 40.0)
    scale = plan.classifier_flops("densenet121", 32, len(cfg.labels)) / plan.classifier_flops("small_cnn", 32)
    assert est.loc["densenet121", "seconds"] == pytest.approx((100 * 64 + 300 / 3) * scale / 250.0)


# make bench on the reference machine (2 cores, 2026-12-04): the rates the README's hour is measured against
REFERENCE_ROWS = [
    {"benchmark": "classifier training", "setting": "small_cnn 32px batch 64", "value": 685.2, "unit": "images/s"},
    {"benchmark": "classifier training", "setting": "small_cnn 64px batch 64", "value": 170.7, "unit": "images/s"},
    {"benchmark": "classifier training", "setting": "resnet18 32px batch 64", "value": 67.7, "unit": "images/s"},
    {"benchmark": "classifier training", "setting": "densenet121 32px batch 64", "value": 16.0, "unit": "images/s"},
    {"benchmark": "generator training", "setting": "cpu recipe 32px batch 64", "value": 99.0, "unit": "images/s"},
    {"benchmark": "sampling", "setting": "ddim-50 32px", "value": 326.8, "unit": "image-steps/s"}]


def test_the_default_cpu_book_plans_within_its_hour_and_cpu_full_holds_the_rest():
    """The budget of `make book` is an hour cold on 2 cores. At the reference machine's rates the `cpu`
    book's planned compute must leave room for what the plan does not count (phantom rendering,
    evaluation and bootstrap, figures, the HTML and PDF build: 5-10 min in the measured cold builds), so
    a design change that would overrun the hour fails here, before anyone waits an afternoon. `cpu-full`
    holds the complete grids: several times longer."""
    rates = plan.rates_from_rows(REFERENCE_ROWS, "reference machine")
    _, cpu = plan.plan_book(profile="cpu", rates=rates)
    assert cpu.seconds.sum() <= 46 * 60  # 44 min at 6c7ab20; it ran cold in the time the README gives
    _, full = plan.plan_book(profile="cpu-full", rates=rates)
    assert full.seconds.sum() > 5 * cpu.seconds.sum()
