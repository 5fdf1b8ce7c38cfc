"""Experiment 6 (fidelity vs utility): sampler specs, variant assembly, rank correlations with
bootstrap CIs over variants, and the verdict numbers."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from cxrlib.config import ConfigError
from cxrlib.experiments import synthetic
from cxrlib.experiments import fidelity_utility as F


def test_config_and_sampler_specs():
    assert F.parse_samplers(["ddim-10", "dpm++-5"]) == [("ddim", 10), ("dpm++", 5)]
    for bad in ("euler-10", "ddim", "ddim-0", "ddim-x", "ddim:10"):
        with pytest.raises(ConfigError, match="samplers"):
            F.Config.from_params(profile="smoke", samplers=(bad,))
    with pytest.raises(ConfigError, match="pretraining_variants"):
        F.Config.from_params(profile="smoke", pretraining_variants="sometimes")
    with pytest.raises(ConfigError, match="guidance_scales"):
        F.Config.from_params(profile="smoke", guidance_scales=(-1.0,))
    from cxrlib.experiments import generators as G

    for prof in ("smoke", "cpu", "cpu-full", "paper"):
        cfg, ch2 = F.Config.from_params(profile=prof), G.Config.from_params(profile=prof)
        guid, samp = F.sampling_grid(cfg)  # chapter 2's grids and set size: its synthetic sets are reused
        assert guid == ch2.grid_guidance and samp == [G.parse_variant(v) for v in ch2.sampler_grid]
        assert cfg.n_syn == ch2.n_eval
    assert F.sampling_grid(F.Config.from_params(profile="cpu", samplers=("ddim-3",)))[1] == [("ddim", 3)]


def test_pretraining_config_shares_the_generator_recipe():
    cfg = F.Config.from_params(profile="cpu", labeled_fraction=0.5, gen_steps=1000, gen_checkpoints=(100,))
    p = F.pretraining_config(cfg)
    assert (p.gen_steps, p.labeled_fraction, p.gen_checkpoints, p.profile) == (1000, 0.5, (100,), "cpu")
    assert 0.5 in p.scratch_fractions  # chapter 4's reference generator exists for any labeled_fraction


def test_variants_cover_each_family_without_duplicates(monkeypatch):
    cfg = F.Config.from_params(profile="smoke", guidance=1.0, guidance_scales=(0.0, 1.0), samplers=("dpm++-2", "ddim-4"),
                               pretraining_variants="never")  # guidance 1.0 and ddim-4 (smoke) are the defaults
    monkeypatch.setattr(synthetic, "main_generator_snapshots", lambda cfg, sets, progress=True: {15: "g15", 30: "g30"})
    var = F.variants(cfg, sets=None)
    assert list(var.family) == ["checkpoint", "default", "guidance", "sampler"]
    assert list(var.index) == ["EMA @ step 15", "final (ddim-4, w=1)", "w=0", "dpm++-2"]
    assert var.loc["EMA @ step 15", "path"] == "g15" and var.loc["dpm++-2", "steps"] == 2
    assert var.loc["w=0", "guidance"] == 0.0 and var.loc["w=0", "sampler"] == "ddim"


def test_rank_correlations_match_scipy_and_orient_by_direction():
    rng = np.random.default_rng(0)
    n = 9
    util = np.sort(rng.normal(size=n))
    table = pd.DataFrame({"fd": -util * 3 + 10,  # better (lower) FD, more utility: agreement +1
                          "precision": rng.normal(size=n), "recall": np.ones(n), "gain": util, "syn_only": util})
    corr = F.rank_correlations(table, metrics=("fd", "precision", "recall"), utilities=("gain",), n_boot=300, seed=1)
    c = corr.set_index("metric")
    assert c.loc["fd", "spearman"] == pytest.approx(-1) and c.loc["fd", "kendall"] == pytest.approx(-1)
    assert c.loc["fd", "agreement"] == pytest.approx(1)
    assert (c.loc["fd", "spearman_ci_low"], c.loc["fd", "spearman_ci_high"]) == (pytest.approx(-1), pytest.approx(-1))
    assert c.loc["precision", "spearman"] == pytest.approx(spearmanr(table.precision, util).statistic)
    assert c.loc["precision", "kendall_p"] == pytest.approx(kendalltau(table.precision, util).pvalue)
    assert c.loc["precision", "spearman_ci_low"] < c.loc["precision", "spearman"] < c.loc["precision", "spearman_ci_high"]
    assert np.isnan(c.loc["recall", "spearman"]) and c.loc["recall", "n_boot_valid"] == 0  # constant: undefined, not 0
    assert (c["n"] == n).all()
    # same seed, same CIs; a NaN variant is left out and n says so
    again = F.rank_correlations(table, metrics=("precision",), utilities=("gain",), n_boot=300, seed=1)
    assert again.spearman_ci_low.iloc[0] == c.loc["precision", "spearman_ci_low"]
    table.loc[0, "precision"] = np.nan
    assert F.rank_correlations(table, metrics=("precision",), utilities=("gain",), n_boot=10).n.iloc[0] == n - 1


def test_verdict_counts_agreement():
    corr = pd.DataFrame({"utility": "gain", "metric": ["fd", "precision", "label_auroc"], "n": 8,
                         "spearman": [0.5, 0.2, 0.8], "spearman_ci_low": [0.1, -0.5, 0.3], "spearman_ci_high": [0.9, 0.7, 1.0],
                         "agreement": [-0.5, 0.2, 0.8]})
    v = F.verdict(corr)["gain"]
    assert (v["n_agree"], v["n_disagree"], v["best_metric"]) == (2, 1, "label_auroc")
    assert v["metrics_ci_excludes_0"] == ["fd", "label_auroc"] and v["metrics_disagree_ci_excludes_0"] == ["fd"]
    assert v["fd_agreement"] == -0.5 and v["fd_ci"] == (-0.9, -0.1)  # FD's CI in the agreement orientation
