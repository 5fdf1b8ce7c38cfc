"""Experiment 8 (image-to-image minority synthesis): config, sources and conditions, the minority table
and the reproduction verdict, on tiny inputs (the pipeline itself runs in the smoke book build)."""

import numpy as np
import pandas as pd
import pytest

from cxrlib.config import ConfigError
from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.experiments import img2img as I
from cxrlib.experiments.common import RealSets


def dataset(n=30, seed=0):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M", None], n), "age": rng.uniform(20, 90, n)})
    for lab in CHEXPERT_LABELS:
        meta[lab] = rng.choice([1.0, 0.0, 0.0, np.nan], n)
    return ArrayDataset(rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), meta)


def test_config_validation():
    cfg = I.Config.from_params(profile="smoke")
    assert cfg.minority_label in cfg.labels
    with pytest.raises(ConfigError, match="minority_label"):
        I.Config.from_params(profile="smoke", minority_label="Consolidation")  # not a smoke label
    with pytest.raises(ConfigError, match="strengths"):
        I.Config.from_params(strengths=(0.0, 0.5))
    with pytest.raises(ConfigError, match="strengths"):
        I.Config.from_params(arm_strengths=(1.2,))


def test_sources_are_normal_and_conditions_target_the_minority():
    cfg = I.Config.from_params(profile="smoke", n_translate=5)
    ds = dataset()
    sets = RealSets(pool=ds, train=ds, val=ds, test=ds, external={})
    src = I.normal_sources(cfg, sets)
    y, m = src.targets()
    cols = [list(src.label_names).index(l) for l in cfg.labels]
    assert len(src) <= 5 and ((y[:, cols] == 0) & m[:, cols]).all()
    assert src.meta["image_id"].tolist() == I.normal_sources(cfg, sets).meta["image_id"].tolist()  # seeded
    cond = I.translation_conditions(cfg, src)
    j = list(cfg.labels).index(cfg.minority_label)
    assert (cond[cfg.minority_label] == 1).all()
    assert (cond[[l for l in cfg.labels if l != cfg.minority_label]] == 0).all().all()
    assert cond["source_row"].tolist() == list(range(len(src)))
    assert cond["age"].to_numpy() == pytest.approx(src.meta["age"].to_numpy())
    ctrl = I.translation_conditions(cfg, src, to_minority=False)
    assert (ctrl[list(cfg.labels)] == 0).all().all() and j >= 0


def results(youden_gain, p_seed, seeds=(0, 1), minority="Cardiomegaly"):
    rows = []
    for k, seed in enumerate(seeds):
        for arm, est, p in (("real", 0.30, np.nan), (I.arm_name(0.5), 0.30 + youden_gain[k], p_seed[k])):
            for metric in I.REPORTED_METRICS:
                rows.append(dict(arm=arm, label=minority, metric=metric, seed=seed, estimate=est, ci_low=est - 0.05,
                                 ci_high=est + 0.05, p_value=p, p_adj=p, test="bootstrap", n=100, n_pos=10, n_seeds=1,
                                 threshold=0.5, reference_arm="real"))
    return pd.DataFrame(rows)


def test_minority_table_and_reproduction():
    cfg = I.Config.from_params(profile="smoke")
    res = results([0.10, 0.08], [0.01, 0.02])
    mt = I.minority_table(cfg, res)
    assert list(mt["metric"].astype(str).unique()) == list(I.REPORTED_METRICS)
    rep = I.reproduction(cfg, res)[I.arm_name(0.5)]
    assert rep["youden_gain"] == pytest.approx(0.09) and rep["seeds_significant_gain"] == 2 and rep["reproduces"]
    rep = I.reproduction(cfg, results([0.10, -0.02], [0.01, 0.6]))[I.arm_name(0.5)]
    assert rep["seeds_significant_gain"] == 1 and not rep["reproduces"]
    # pooled rows (several seeds) decide when present
    res = results([0.10, 0.08], [0.2, 0.3])
    pooled = res[res.seed == 0].assign(seed="pooled", p_value=lambda d: np.where(d.arm == "real", np.nan, 0.01))
    rep = I.reproduction(cfg, pd.concat([res, pooled]))[I.arm_name(0.5)]
    assert rep["p_pooled"] == 0.01 and rep["reproduces"]
    assert (I.minority_table(cfg, pd.concat([res, pooled]))["estimate"].notna()).all()
