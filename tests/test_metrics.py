"""cxrlib.metrics against scikit-learn on random and edge-case inputs."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from cxrlib import metrics as M


def _sklearn_metrics(y, s, thr):
    """Every metric by scikit-learn (the reference)."""
    p = (s >= thr).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "auroc": skm.roc_auc_score(y, s),
            "auprc": skm.average_precision_score(y, s),
            "sensitivity": skm.recall_score(y, p, zero_division=np.nan),
            "specificity": skm.recall_score(y, p, pos_label=0, zero_division=np.nan),
            "ppv": skm.precision_score(y, p, zero_division=np.nan),
            "npv": skm.precision_score(y, p, pos_label=0, zero_division=np.nan),
            "accuracy": skm.accuracy_score(y, p),
            "balanced_accuracy": skm.balanced_accuracy_score(y, p),
            "f1": skm.f1_score(y, p, zero_division=np.nan),
            "mcc": skm.matthews_corrcoef(y, p),
            "kappa": skm.cohen_kappa_score(y, p),
            "youden": skm.balanced_accuracy_score(y, p, adjusted=True),  # 2 BA - 1 = sens + spec - 1
            "brier": skm.brier_score_loss(y, s),
        }


def _ece_from_sklearn(y, s, n_bins=10, strategy="uniform"):
    prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy=strategy)
    edges = np.linspace(0, 1, n_bins + 1) if strategy == "uniform" else np.percentile(s, np.linspace(0, 100, n_bins + 1))
    counts = np.bincount(np.searchsorted(edges[1:-1], s), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(s) * np.abs(prob_true - prob_pred)))


def _cases():
    rng = np.random.default_rng(0)
    out = []
    for seed, n, prev in [(1, 200, 0.3), (2, 57, 0.1), (3, 500, 0.6)]:
        r = np.random.default_rng(seed)
        y = (r.random(n) < prev).astype(int)
        out.append((f"random{seed}", y, np.clip(0.3 * y + 0.7 * r.random(n), 0, 1), 0.5))
    y = rng.integers(0, 2, 300)
    out.append(("ties", y, np.round(rng.random(300) * 4) / 4, 0.5))  # 5 distinct values, thresholds on ties
    out.append(("all-tied", y, np.full(300, 0.5), 0.5))
    out.append(("perfect", np.r_[np.zeros(20), np.ones(10)].astype(int), np.r_[np.linspace(0, 0.4, 20), np.linspace(0.6, 1, 10)], 0.5))
    out.append(("inverted", np.r_[np.zeros(20), np.ones(10)].astype(int), np.r_[np.linspace(0.6, 1, 20), np.linspace(0, 0.4, 10)], 0.5))
    out.append(("all-predicted-negative", y, rng.random(300) * 0.4, 0.5))
    out.append(("all-predicted-positive", y, 0.6 + rng.random(300) * 0.4, 0.5))
    return out


@pytest.mark.parametrize("name,y,s,thr", _cases(), ids=[c[0] for c in _cases()])
def test_binary_metrics_equal_sklearn(name, y, s, thr):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.UndefinedMetricWarning)  # ppv/npv of constant predictions
        ours = M.binary_metrics(y, s, thr)
    ref = _sklearn_metrics(y, s, thr)
    for k, v in ref.items():
        if np.isnan(v):
            assert np.isnan(ours[k]), (name, k)
        else:
            assert ours[k] == pytest.approx(v, abs=1e-12), (name, k, ours[k], v)
    assert ours["ece"] == pytest.approx(_ece_from_sklearn(y, s), abs=1e-12)
    assert ours["n"] == len(y) and ours["n_pos"] == y.sum()
    assert set(M.METRICS) <= set(ours)


def test_perfect_separation_values():
    y = np.r_[np.zeros(20), np.ones(10)].astype(int)
    s = np.r_[np.linspace(0, 0.4, 20), np.linspace(0.6, 1, 10)]
    r = M.binary_metrics(y, s, 0.5)
    for k in ("auroc", "auprc", "sensitivity", "specificity", "mcc", "kappa", "youden", "f1"):
        assert r[k] == 1.0, k


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_is_nan_with_warning(cls):
    rng = np.random.default_rng(1)
    y = np.full(50, cls)
    s = rng.random(50)
    with pytest.warns(M.UndefinedMetricWarning, match="'Edema'"):
        r = M.binary_metrics(y, s, 0.5, name="Edema")
    undefined = {"auroc", "balanced_accuracy", "mcc", "kappa", "youden"}
    undefined |= {"auprc", "sensitivity", "f1"} if cls == 0 else {"specificity"}
    for k in M.METRICS:
        assert np.isnan(r[k]) == (k in undefined), k
    # the defined ones still equal scikit-learn
    ref = _sklearn_metrics(y, s, 0.5)
    for k in ("accuracy", "ppv", "npv", "brier"):
        if not np.isnan(ref[k]):
            assert r[k] == pytest.approx(ref[k])


def test_metric_subset_and_nan_threshold():
    rng = np.random.default_rng(2)
    y, s = rng.integers(0, 2, 100), rng.random(100)
    r = M.binary_metrics(y, s, 0.5, metrics=["auroc", "mcc"])
    assert r["auroc"] == pytest.approx(skm.roc_auc_score(y, s))
    with pytest.warns(M.UndefinedMetricWarning, match="threshold NaN"):
        r = M.binary_metrics(y, s, float("nan"))
    assert all(np.isnan(r[k]) for k in M.THRESHOLD_METRICS) and not np.isnan(r["auroc"])
    with pytest.raises(ValueError, match="unknown metrics"):
        M.binary_metrics(y, s, metrics=["aucroc"])


def test_input_errors():
    with pytest.raises(ValueError, match="0/1"):
        M.binary_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.binary_metrics([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.binary_metrics([0, 1], [0.1, 1.5])


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_calibration_curve(strategy):
    rng = np.random.default_rng(3)
    s = np.r_[rng.random(300), [0.1, 0.2, 0.5, 0.9, 1.0, 0.0]]  # include scores on bin edges
    y = (rng.random(len(s)) < s).astype(int)
    rc = M.reliability_curve(y, s, 10, strategy)
    pt, pp = calibration_curve(y, s, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(rc["frac_positive"], pt, atol=1e-12)
    np.testing.assert_allclose(rc["mean_score"], pp, atol=1e-12)
    assert rc["count"].sum() == len(s)
    assert M.expected_calibration_error(y, s, 10, strategy) == pytest.approx(_ece_from_sklearn(y, s, 10, strategy))


def test_ece_known_values():
    # perfectly calibrated bins -> 0; all scores 0.9 but no positives -> 0.9
    assert M.expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    assert M.expected_calibration_error([0, 0, 0], [0.9, 0.9, 0.9]) == pytest.approx(0.9)


def test_label_metrics_macro_micro_and_mask():
    rng = np.random.default_rng(4)
    n, L = 400, 3
    y = (rng.random((n, L)) < [0.4, 0.2, 0.1]).astype(int)
    s = np.clip(0.25 * y + 0.75 * rng.random((n, L)), 0, 1)
    mask = rng.random((n, L)) > 0.15
    thr = np.array([0.4, 0.5, 0.6])
    # garbage in the masked entries must not matter
    y2 = y.copy()
    y2[~mask] = 1 - y2[~mask]
    df = M.label_metrics(y, s, mask, thr, ["a", "b", "c"])
    df2 = M.label_metrics(y2, s, mask, thr, ["a", "b", "c"])
    np.testing.assert_allclose(df["estimate"], df2["estimate"])
    tab = df.set_index(["label", "metric"])["estimate"]
    for j, name in enumerate("abc"):
        m = mask[:, j]
        assert tab[(name, "auroc")] == pytest.approx(skm.roc_auc_score(y[m, j], s[m, j]))
        assert tab[(name, "mcc")] == pytest.approx(skm.matthews_corrcoef(y[m, j], s[m, j] >= thr[j]))
    for k in M.METRICS:
        assert tab[("macro", k)] == pytest.approx(np.mean([tab[(c, k)] for c in "abc"]))
    pooled_y, pooled_s = y[mask], s[mask]
    pooled_p = (s >= thr)[mask]
    assert tab[("micro", "auroc")] == pytest.approx(skm.roc_auc_score(pooled_y, pooled_s))
    assert tab[("micro", "f1")] == pytest.approx(skm.f1_score(pooled_y, pooled_p))
    assert tab[("micro", "sensitivity")] == pytest.approx(skm.recall_score(pooled_y, pooled_p))
    # without the mask the same data are not the same metrics (the mask really selects)
    assert not np.allclose(M.label_metrics(y2, s, None, thr)["estimate"], df2["estimate"], equal_nan=True)


def test_label_metrics_undefined_label_excluded_from_macro():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (100, 2))
    y[:, 1] = 0
    s = rng.random((100, 2))
    with pytest.warns(M.UndefinedMetricWarning, match="'b'"):
        df = M.label_metrics(y, s, label_names=["a", "b"])
    tab = df.set_index(["label", "metric"])
    assert np.isnan(tab.loc[("b", "auroc"), "estimate"])
    assert tab.loc[("macro", "auroc"), "estimate"] == pytest.approx(tab.loc[("a", "auroc"), "estimate"])
    assert tab.loc[("macro", "auroc"), "n_labels"] == 1
    assert M.macro_auroc(y, s) == pytest.approx(tab.loc[("a", "auroc"), "estimate"])


# --- threshold policies ---------------------------------------------------------------------------
def _val(seed=6, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < [0.3, 0.1]).astype(int)
    s = np.clip(0.3 * y + 0.7 * rng.random((n, 2)), 0, 1)
    s[:40, 0] = np.round(s[:40, 0], 1)  # some ties
    return y, s


def _sens_spec(y, s, t):
    p = s >= t
    return p[y == 1].mean(), (~p[y == 0]).mean()


def test_youden_policy_maximizes_j():
    y, s = _val()
    thr = M.choose_thresholds(y, s, "youden")
    for j in range(2):
        fpr, tpr, cand = skm.roc_curve(y[:, j], s[:, j])
        best = np.max(tpr - fpr)
        se, sp = _sens_spec(y[:, j], s[:, j], thr[j])
        assert se + sp - 1 == pytest.approx(best)


def test_sensitivity_policy_is_highest_threshold_reaching_target():
    y, s = _val()
    thr = M.choose_thresholds(y, s, "sensitivity", target_sensitivity=0.8)
    for j in range(2):
        se, _ = _sens_spec(y[:, j], s[:, j], thr[j])
        assert se >= 0.8
        higher = np.unique(s[:, j])[np.unique(s[:, j]) > thr[j]]
        if len(higher):
            assert _sens_spec(y[:, j], s[:, j], higher.min())[0] < 0.8


def test_prevalence_policy_matches_prevalence():
    y, s = _val()
    thr = M.choose_thresholds(y, s, "prevalence")
    for j in range(2):
        n_pred = int((s[:, j] >= thr[j]).sum())
        assert n_pred >= y[:, j].sum()
        assert (s[:, j] > thr[j]).sum() < y[:, j].sum()  # only ties at the threshold can add more
    y1 = np.r_[np.ones(10), np.zeros(90)].astype(int)
    s1 = np.random.default_rng(0).random(100)  # no ties -> exactly the prevalence
    t1 = M.choose_thresholds(y1, s1, "prevalence")
    assert (s1 >= t1[0]).sum() == 10


def test_fixed_policy_and_errors():
    y, s = _val()
    np.testing.assert_array_equal(M.choose_thresholds(y, s, "fixed"), [0.5, 0.5])
    np.testing.assert_array_equal(M.choose_thresholds(y, s, "fixed", threshold=0.3), [0.3, 0.3])
    with pytest.raises(ValueError, match="unknown threshold policy 'yoden'"):
        M.choose_thresholds(y, s, "yoden")
    y[:, 1] = 0
    with pytest.warns(M.UndefinedMetricWarning, match="label_1"):
        thr = M.choose_thresholds(y, s, "youden")
    assert np.isnan(thr[1]) and not np.isnan(thr[0])
    np.testing.assert_array_equal(M.apply_thresholds(s, thr)[:, 1], np.zeros(len(s), bool))
