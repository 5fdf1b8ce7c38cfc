"""Chapter 2 helpers (the notebook itself runs in the smoke book): the paired-effect table's companions."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from cxrlib.config import ConfigError
from cxrlib.experiments import generators


def _comparison():
    rows = []
    for kind, sampler, steps, w, a in [("sampler", "ddim", 10, 2.0, 0.7), ("guidance", "ddim", 15, 0.0, 0.6),
                                        ("guidance", "ddim", 15, 2.0, 0.8)]:
        rows.append({"comparison": kind, "sampler": sampler, "steps": steps, "guidance": w,
                     "label_auroc:Edema": a, "label_auroc:Cardiomegaly": a + 0.1, "label_auroc_macro": a + 0.05})
    return pd.DataFrame(rows)


def test_unpaired_label_auroc_picks_the_study_variant_or_none():
    cfg = generators.Config.from_params(profile="smoke", labels=("Cardiomegaly", "Edema"), sampler="ddim", sampler_steps=15, guidance=2.0)
    row = generators.unpaired_label_auroc(_comparison(), cfg)
    assert row.to_dict() == pytest.approx({"Edema": 0.8, "Cardiomegaly": 0.9})  # not the macro column
    assert generators.unpaired_label_auroc(_comparison(), cfg.replace(guidance=5.0)) is None


def test_flip_figure_and_parameter_check():
    flips = pd.DataFrame({"label": ["Edema", "Cardiomegaly"], "auroc": [0.9, 0.55], "ci_low": [0.85, 0.49], "ci_high": [0.95, 0.6]})
    fig = generators.plot_flip_effects(flips, unpaired=pd.Series({"Edema": 0.8, "Cardiomegaly": 0.5}))
    ax = fig.axes[0]
    assert {t.get_text() for t in ax.get_yticklabels()} == {"Edema", "Cardiomegaly"}
    crosses = [c for c in ax.collections if c.get_offsets().shape == (2, 2)]
    assert crosses and sorted(crosses[-1].get_offsets()[:, 0].tolist()) == [0.5, 0.8]  # unpaired AUROC per label
    assert np.isclose(ax.lines[-1].get_xdata()[0], 0.5)  # the chance line
    with pytest.raises(ConfigError, match="n_flip"):
        generators.Config.from_params(profile="smoke", n_flip=1)
    with pytest.raises(ConfigError, match=r"'n_timing': must be between 1 and n_eval \(48\)"):  # checked before any sampling
        generators.Config.from_params(profile="smoke", n_timing=49)


def test_nfe_tradeoff_reads_fd_against_evaluations_relative_to_the_ancestral_reference():
    from cxrlib.experiments import generators as GX

    comp = pd.DataFrame({"comparison": ["sampler"] * 4 + ["guidance"],
                         "sampler": ["ddpm", "ddim", "dpm++", "ddpm", "ddim"], "steps": [1000, 10, 10, 50, 15],
                         "guidance": [2.0, 2.0, 2.0, 2.0, 0.0], "fd": [1.0, 1.30, 1.05, 1.2, 9.0]})
    trade = GX.nfe_tradeoff(comp)
    assert trade.sampler.tolist() == ["ddim", "dpm++", "ddpm", "ddpm"] and trade.nfe.tolist() == [20, 20, 100, 2000]
    assert trade.fd_ratio.tolist() == pytest.approx([1.30, 1.05, 1.2, 1.0])  # the reference: the ddpm row with most steps
    assert trade.meets_target.tolist() == [False, True, False, False]  # <= 25 evaluations at <= 1.10x
    assert trade.reference.tolist() == [False, False, False, True]
    assert "dpm++-10 meets the target" in GX.nfe_tradeoff_text(trade)
    worse = GX.nfe_tradeoff(comp.assign(fd=[1.0, 1.30, 1.25, 1.2, 9.0]))
    assert not worse.meets_target.any() and "no sampler meets the target" in GX.nfe_tradeoff_text(worse)
    assert "dpm++-10 at 1.25x" in GX.nfe_tradeoff_text(worse)  # the best trade-off is named
    none = GX.nfe_tradeoff(comp[comp.sampler != "ddpm"])
    assert none.empty and "No ancestral reference" in GX.nfe_tradeoff_text(none)
