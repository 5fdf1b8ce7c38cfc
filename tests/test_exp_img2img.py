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


def test_minority_table():
    cfg = I.Config.from_params(profile="smoke")
    res = results([0.10, 0.08], [0.01, 0.02])
    mt = I.minority_table(cfg, res)
    assert list(mt["metric"].astype(str).unique()) == list(I.REPORTED_METRICS)
    assert set(mt["arm"]) == {"real", I.arm_name(0.5)} and mt["estimate"].notna().all()
    assert I.arm_name(0.5, control=True) == "real + control s=0.5"


def test_binary_task_keeps_normal_and_minority_images():
    cfg = I.Config.from_params(profile="smoke")
    assert cfg.task == "binary"
    with pytest.raises(ConfigError, match="'task'"):
        I.Config.from_params(profile="smoke", task="multiclass")
    ds = dataset(60)
    sets = RealSets(pool=ds, train=ds, val=ds, test=ds, external={})
    tcfg, tsets = I.task_sets(cfg, sets)
    assert tcfg.labels == (cfg.minority_label,) and tsets.external == {}
    y, m = tsets.train.targets()
    cols = [list(ds.label_names).index(l) for l in cfg.labels]
    j = list(ds.label_names).index(cfg.minority_label)
    normal = ((y[:, cols] == 0) & m[:, cols]).all(axis=1)
    positive = (y[:, j] == 1) & m[:, j]
    assert (normal | positive).all() and positive.any() and normal.any()
    # every image of ds that is normal or minority-positive is kept
    y0, m0 = ds.targets()
    expected = (((y0[:, cols] == 0) & m0[:, cols]).all(axis=1) | ((y0[:, j] == 1) & m0[:, j])).sum()
    assert len(tsets.train) == len(tsets.test) == expected < len(ds)
    same_cfg, same = I.task_sets(cfg.replace(task="multilabel"), sets)
    assert same is sets and same_cfg.labels == cfg.labels
