"""Experiment 3 (imbalance): the minority-synthesis rule, arm assembly, the per-policy summary (and its
"significant in every seed" p-value) and the config checks. Tiny data, CPU, seconds."""

import numpy as np
import pandas as pd
import pytest

from cxrlib.config import ConfigError
from cxrlib.data.base import ArrayDataset
from cxrlib.experiments import imbalance as I
from cxrlib.generators.conditions import balanced_conditions
LABELS = ("Cardiomegaly", "Edema", "Pleural Effusion")
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # t-test of equal fake values


def real_set(n=60, seed=0):
    """Imbalanced labels (about 10 / 25 / 45 %); Edema implies Pleural Effusion (co-occurrence)."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i // 2}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 90, n).round()})
    for lab, p in zip(LABELS, (0.1, 0.25, 0.3)):
        meta[lab] = (rng.random(n) < p).astype(float)
    meta.loc[meta["Edema"] == 1.0, "Pleural Effusion"] = 1.0
    meta.loc[0, "Cardiomegaly"] = 1.0
    return ArrayDataset(np.zeros((n, 8, 8), np.uint8), meta, label_names=LABELS, name="R")


def test_config_checks():
    assert I.Config.from_params(profile="smoke").arms == I.ARMS  # the oversampling control at every profile
    assert "real-oversampled" in I.Config.from_params(profile="paper").arms
    with pytest.raises(ConfigError, match="arms"):
        I.Config.from_params(profile="smoke", arms=("synthetic-natural",))  # no reference arm
    with pytest.raises(ConfigError, match="arms"):
        I.Config.from_params(profile="smoke", arms=("real", "synthetic-balanced", "sythetic-natural"))
    with pytest.raises(ConfigError, match="threshold_policies"):
        I.Config.from_params(profile="smoke", threshold_policies=("fixed", "f1"))
    with pytest.raises(ConfigError, match="minority_target"):
        I.Config.from_params(profile="smoke", minority_target=1.5)


def test_minority_rule_absent_reaches_the_target_exactly():
    real = real_set()
    counts = I.positive_counts(real, LABELS)
    cond, plan = I.minority_plan(real, LABELS, target=1.0, others="absent", seed=3)
    goal = counts.max()
    assert (plan["target"] == goal).all()
    # "absent": each added image is positive for its one label, so every label ends exactly at the target
    assert plan["positives_after"].tolist() == [goal] * 3
    assert plan["added"].tolist() == (goal - counts).tolist() and len(cond) == (goal - counts).sum()
    assert (cond[list(LABELS)].sum(axis=1) == 1).all()
    # rarest label first in the conditions table; same seed, same table
    assert (cond[list(LABELS)].iloc[0].to_numpy() == [1, 0, 0]).all()
    assert cond.equals(I.minority_plan(real, LABELS, target=1.0, others="absent", seed=3)[0])


def test_minority_rule_joint_counts_cooccurring_positives():
    real = real_set()
    counts = I.positive_counts(real, LABELS)
    cond, plan = I.minority_plan(real, LABELS, target=1.0, others="joint", seed=3)
    goal = counts.max()
    assert (plan["positives_after"] >= goal).all()
    # Edema images bring Pleural Effusion positives along: the joint rule never adds more than "absent"
    absent = I.minority_plan(real, LABELS, target=1.0, others="absent", seed=3)[0]
    assert len(cond) <= len(absent)
    # positives_after is R's count plus the conditioned positives of all added images
    assert plan["positives_after"].tolist() == (counts + cond[list(LABELS)].sum().to_numpy()).astype(int).tolist()
    half, half_plan = I.minority_plan(real, LABELS, target=0.5, others="joint", seed=3)
    assert len(half) < len(cond) and (half_plan["target"] == int(np.ceil(0.5 * goal))).all()


def test_build_arms_and_label_distribution():
    cfg = I.Config.from_params(profile="smoke", arms=I.ARMS)
    real = real_set()
    bal = balanced_conditions(real, 30, label_names=LABELS, seed=0)
    syn_meta = bal.assign(image_id=range(30), patient_id=[f"s{i}" for i in range(30)])
    balanced = ArrayDataset(np.zeros((30, 8, 8), np.uint8), syn_meta, label_names=LABELS, name="balanced")
    minority = ArrayDataset(np.zeros((30, 8, 8), np.uint8), syn_meta, label_names=LABELS, name="minority")
    syn = {"natural": real, "balanced": balanced, "minority": minority}
    arms = I.build_arms(cfg, real, syn)
    assert list(arms) == list(I.ARMS) and len(arms["real+minority"]) == 2 and arms["real-oversampled"] == [real]
    dist = I.label_distribution(arms, LABELS).set_index("arm")
    assert dist.loc["real+minority", "images"] == 90
    # the balanced set has every label in at least a third of its images
    assert (dist.loc["synthetic-balanced", list(LABELS)] >= 1 / 3 - 1e-9).all()
    assert dist.loc["real", "Cardiomegaly"] < 0.2
    with pytest.raises(ValueError, match="synthetic-balanced"):
        I.build_arms(cfg, real, {"natural": real})
    # the sample grid: row j holds images conditioned positive for label j
    cfg3 = I.Config.from_params(profile="smoke", n_grid=4)
    imgs, names = I.balanced_examples(cfg3, balanced)
    assert imgs.shape == (3, 4, 8, 8) and names == list(cfg3.labels)


def fake_results():
    """Per-seed and pooled rows for 2 policies x 2 arms x 2 metrics, as imbalance.run returns them."""
    rows = []
    for policy in ("fixed", "youden"):
        for seed, p in ((0, 0.01), (1, 0.2), ("pooled", 0.5)):
            for arm in ("real", "real+minority"):
                for metric, est in (("sensitivity", 0.1 if policy == "fixed" else 0.7), ("specificity", 0.9)):
                    rows.append(dict(policy=policy, comparison="vs real", arm=arm, label="macro", metric=metric, seed=seed,
                                     estimate=est + (0.1 if arm != "real" else 0), ci_low=est - 0.05, ci_high=est + 0.15,
                                     p_value=np.nan if arm == "real" else p, p_adj=np.nan if arm == "real" else p,
                                     n_seeds=2 if seed == "pooled" else 1, ci_method="t", test=""))
    return pd.DataFrame(rows)


def test_summary_takes_pooled_estimates_and_the_worst_seed_p_value():
    s = I.summary(fake_results())
    row = s[(s.policy == "fixed") & (s.arm == "real+minority") & (s.metric == "sensitivity")].iloc[0]
    assert row.estimate == pytest.approx(0.2) and row.n_seeds == 2
    assert row.p_adj_seeds == pytest.approx(0.2)  # the larger of the two seeds' 0.01 and 0.2, not the pooled 0.5
    table = I.metric_table(s, "fixed")
    assert table.loc["real+minority", "sensitivity"].startswith("0.200 [") and "*" not in table.loc["real+minority", "sensitivity"]
    v = I.verdict(s, s.iloc[:0])
    assert v["rajaraman"]["youden"]["sensitivity"]["diff"] == pytest.approx(0.1)
    assert v["policy_effect"]["real"] == {"min": 0.1, "max": 0.7, "argmin": "fixed", "argmax": "youden"}
    fig = I.plot_policy_shift(s)
    assert len(fig.axes) == 3


class FakeModel(dict):
    training_record = {"optimizer_steps": 8, "selected_step": 4}  # the smoke budget (clf_steps)


def test_evaluate_arms_policies_share_predictions(monkeypatch):
    """Threshold-free metrics once (policy ""), threshold metrics per policy, pooled rows over seeds;
    classifiers and their predictions are faked (the training itself is tested in test_classifiers)."""
    from cxrlib.experiments import common

    def dataset(n, seed):
        rng = np.random.default_rng(seed)
        meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"q{seed}-{i // 2}" for i in range(n)], "study": 0,
                             "site": "x", "view": "PA", "sex": "F", "age": 50.0})
        for lab, p in zip(LABELS, (0.2, 0.3, 0.4)):
            meta[lab] = (rng.random(n) < p).astype(float)
        return ArrayDataset(np.zeros((n, 8, 8), np.uint8), meta, label_names=LABELS, name=f"d{seed}")

    val, test = dataset(80, 1), dataset(120, 2)
    sets = common.RealSets(pool=val, train=val, val=val, test=test, external={})
    trained = []

    def fake_train(cfg, train_sets, val_set, *, seed, balanced_sampling=False, progress=True):
        trained.append((len(train_sets), seed, balanced_sampling))
        return FakeModel(strength=0.2 * len(train_sets), seed=seed)

    def fake_predict(model, ds, device="cpu", data_workers=None):
        y, _ = ds.targets()
        noise = np.random.default_rng(model["seed"] + len(ds)).random(y.shape)
        return np.clip(model["strength"] * y + (1 - model["strength"]) * noise, 0, 1)

    monkeypatch.setattr(common, "train_cached_classifier", fake_train)
    monkeypatch.setattr("cxrlib.classify.predict", fake_predict)
    cfg = I.Config.from_params(profile="smoke", labels=LABELS, n_seeds=2, n_boot=20)
    arms = {"real": [val], "real+minority": [val, val]}
    res = common.evaluate_arms(cfg, arms, sets, reference="real", metrics=I.REPORTED_METRICS, policies=("fixed", "youden"),
                               balanced=["real"], test_sets={"internal": test}, progress=False)
    assert sorted(trained) == [(1, 0, True), (1, 1, True), (2, 0, False), (2, 1, False)]
    assert set(res[res.policy == ""].metric) == {"auroc", "auroc_diff"}
    assert set(res[res.policy == "youden"].metric) == set(I.REPORTED_METRICS) - {"auroc"}
    assert set(res.seed.astype(str)) == {"0", "1", "pooled"}
    r = res[(res.policy == "youden") & (res.metric == "sensitivity") & (res.label == "macro") & (res.seed.astype(str) == "pooled")]
    assert r.set_index("arm").loc["real", "n_seeds"] == 2 and np.isnan(r.set_index("arm").loc["real", "p_value"])
    # the better-separating arm has the higher AUROC, and summary() shows it under every policy
    s = I.summary(res.assign(comparison="vs real"))
    auc = s[s.metric == "auroc"].pivot_table(index="policy", columns="arm", values="estimate")
    assert list(auc.index) == ["fixed", "youden"] and (auc["real+minority"] > auc["real"]).all()
