"""The cost plan of a run (cxr run --plan / --budget): its jobs come from the chapter's own arm builders,
its estimate scales measured rates by FLOPs, and a run over budget never starts."""

import json

import numpy as np
import pytest

from cxrlib import plan
from cxrlib.errors import UserError
from cxrlib.experiments import supplementation as S

RATES = {"classifier": 250.0, "generator": 30.0, "nfe": 500.0, "recipe": "cpu", "source": "test rates"}


def _kinds(jobs):
    return {k: [j for j in jobs if j.kind == k] for k in plan.KINDS}


def test_chapter_5_plan_at_cpu_counts_every_source_stream_arm_and_seed():
    cfg = S.Config.from_params(profile="cpu")
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
    assert plan.classifier_jobs(cfg, {"a": 640}, sizes)[0].eval_images == (400 // 25) * 100 + 50
    epochs = plan.classifier_jobs(cfg.replace(clf_steps=None, clf_epochs=3), {"a": 640}, sizes)[0]
    assert (epochs.steps, epochs.eval_images) == (3 * 10, 3 * 100 + 50)
    with pytest.raises(UserError, match=r"over the budget of 0.001 h; most of it is classifier .*n_seeds"):
        plan.check_budget(est, budget_hours=0.001)


def test_cxr_run_plan_prints_the_jobs_and_totals_and_budget_stops_the_run(tmp_path, monkeypatch, capsys):
    from cxrlib.cli import main

    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    rows = [{"benchmark": "classifier training", "setting": "small_cnn 32px batch 64", "value": 250.0, "unit": "images/s"},
            {"benchmark": "generator training", "setting": "cpu recipe 32px batch 64", "value": 30.0, "unit": "images/s"},
            {"benchmark": "sampling", "setting": "ddim-50 32px", "value": 500.0, "unit": "image-steps/s"}]
    (bench_dir / "bench-20261202-000000.json").write_text(json.dumps({"machine": {}, "rows": rows}))
    monkeypatch.setenv("CXR_BENCH_DIR", str(bench_dir))
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
