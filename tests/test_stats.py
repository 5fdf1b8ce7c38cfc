"""cxrlib.stats: DeLong (hand-computed case + O(n²) reference), cluster bootstrap (structure, coverage),
McNemar, multiplicity, the results table, multi-seed summaries."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from cxrlib import metrics as M
from cxrlib import stats as S
from cxrlib.stats.table import _adjust_by_metric as adjust_by_metric


# --- DeLong ---------------------------------------------------------------------------------------
def delong_reference(y, a, b):
    """DeLong 1988 from its definition, O(m·n): psi(X, Y) = 1 if X > Y, ½ if X = Y, 0 otherwise;
    V10(X_i) = mean_j psi(X_i, Y_j), V01(Y_j) = mean_i psi(X_i, Y_j); Cov = S10/m + S01/n."""
    y = np.asarray(y).astype(bool)
    v10, v01, aucs = [], [], []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(1))
        v01.append(psi.mean(0))
        aucs.append(psi.mean())
    cov = np.cov(np.stack(v10)) / y.sum() + np.cov(np.stack(v01)) / (~y).sum()
    return np.array(aucs), cov


def test_delong_hand_computed_case():
    # positives X, negatives Y; classifier b has a tie (0.5 vs 0.5)
    y = [1, 1, 1, 0, 0]
    a = [0.9, 0.6, 0.4, 0.5, 0.2]
    b = [0.7, 0.3, 0.5, 0.5, 0.4]
    # a: V10 = (1, 1, ½)  -> AUC 5/6;  V01 = (2/3, 1)
    # b: V10 = (1, 0, ¾)  -> AUC 7/12; V01 = (½, 2/3)
    # S10 (ddof 1): aa = 1/12, bb = 13/48, ab = -1/24;  S01: aa = 1/18, bb = 1/72, ab = 1/36
    # Cov = S10/3 + S01/2: var_a = 1/36 + 1/36 = 1/18, var_b = 13/144 + 1/144 = 7/72, cov = -1/72 + 1/72 = 0
    r = S.delong_test(y, a, b)
    assert r.auc_a == pytest.approx(5 / 6) and r.auc_b == pytest.approx(7 / 12)
    np.testing.assert_allclose(r.covariance, [[1 / 18, 0], [0, 7 / 72]], atol=1e-15)
    z = (5 / 6 - 7 / 12) / np.sqrt(1 / 18 + 7 / 72)
    assert r.z == pytest.approx(z)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(z))
    assert r["p_value"] == r.p_value and r.n_pos == 3 and r.n_neg == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y = (rng.random(n) < 0.35).astype(int)
    a = np.round(y * 0.8 + rng.normal(size=n), 1)  # rounding -> many ties
    b = np.round(0.7 * a + y * 0.3 + rng.normal(size=n) * 0.7, 1)
    r = S.delong_test(y, a, b)
    aucs, cov = delong_reference(y, a, b)
    np.testing.assert_allclose([r.auc_a, r.auc_b], aucs, rtol=1e-12)
    np.testing.assert_allclose(r.covariance, cov, rtol=1e-10, atol=1e-15)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert r.p_value == pytest.approx(2 * sps.norm.sf(abs(aucs[0] - aucs[1]) / np.sqrt(var)))


def test_delong_degenerate_cases():
    y = np.r_[np.ones(10), np.zeros(10)]
    s = np.random.default_rng(0).random(20)
    r = S.delong_test(y, s, s)
    assert r.z == 0 and r.p_value == 1.0
    with pytest.raises(ValueError, match="at least 2 positives"):
        S.delong_test([1, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    auc, lo, hi = S.delong_ci(y, s)
    assert lo < auc < hi and 0 <= lo and hi <= 1


# --- bootstrap ------------------------------------------------------------------------------------
def test_cluster_resampler_keeps_patients_whole_and_strata_sizes():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4", "p5"])
    strata = np.array([1, 1, 0, 1, 1, 1, 0, 0])  # p1, p3 positive; p2, p4, p5 negative
    r1 = list(S.ClusterResampler(len(groups), groups, strata, seed=3).draw(50))
    r2 = list(S.ClusterResampler(len(groups), groups, strata, seed=3).draw(50))
    for idx, idx2 in zip(r1, r2):
        np.testing.assert_array_equal(idx, idx2)  # seeded
        counts = pd.Series(groups[idx]).value_counts()
        size = pd.Series(groups).value_counts()
        for g, c in counts.items():
            assert c % size[g] == 0  # a drawn patient brings all of its images
        drawn = counts / size[counts.index]
        assert drawn[[g for g in drawn.index if g in ("p1", "p3")]].sum() == 2  # 2 positive patients per resample
        assert drawn[[g for g in drawn.index if g in ("p2", "p4", "p5")]].sum() == 3
    with pytest.raises(ValueError, match="constant within each cluster"):
        S.ClusterResampler(3, ["a", "a", "b"], [0, 1, 0])


def _coverage(n_sims, n_boot, cluster, seed=0):
    """Share of 95 % intervals that contain the true mean 0 of clustered data (patient effect sd 1,
    image noise sd 0.5, 1-6 images per patient)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for k in range(n_sims):
        sizes = rng.integers(1, 7, 30)
        groups = np.repeat(np.arange(30), sizes)
        x = np.repeat(rng.normal(size=30), sizes) + rng.normal(scale=0.5, size=len(groups))
        r = S.bootstrap_ci(np.mean, x, groups=groups if cluster else None, n_boot=n_boot, seed=k)
        hits += r.ci_low <= 0 <= r.ci_high
    return hits / n_sims


def test_cluster_bootstrap_coverage_fast():
    cov_cluster = _coverage(120, 200, cluster=True)
    cov_naive = _coverage(120, 200, cluster=False)
    assert 0.86 <= cov_cluster <= 0.99  # nominal 0.95 (percentile bootstrap, 30 clusters: a bit below)
    assert cov_naive < cov_cluster - 0.1  # ignoring the patients under-covers badly


@pytest.mark.slow
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_auroc_bootstrap_coverage_slow(method):
    """Binormal scores (positives N(d, 1), negatives N(0, 1)): true AUROC = Φ(d / √2)."""
    d = 1.0
    true_auc = sps.norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(1)
    hits, n_sims = 0, 200
    for k in range(n_sims):
        y = (rng.random(150) < 0.3).astype(int)
        s = rng.normal(size=150) + d * y
        r = S.bootstrap_ci(M.auroc, y, s, strata=y, n_boot=300, method=method, seed=k)
        hits += r.ci_low <= true_auc <= r.ci_high
    assert 0.90 <= hits / n_sims <= 0.99


def test_bca_agrees_with_scipy():
    x = np.random.default_rng(2).exponential(size=60)  # skewed: BCa differs from percentile
    ours = S.bootstrap_ci(np.mean, x, n_boot=4000, method="bca", seed=0)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="BCa", random_state=0).confidence_interval
    width = ref.high - ref.low
    assert abs(ours.ci_low - ref.low) < 0.08 * width and abs(ours.ci_high - ref.high) < 0.08 * width
    perc = S.bootstrap_ci(np.mean, x, n_boot=4000, seed=0)
    assert ours.ci_high > perc.ci_high  # right-skewed statistic: BCa shifts the interval up
    assert ours.estimate == pytest.approx(x.mean()) and ours.n_valid == 4000


def test_bootstrap_undefined_resamples_dropped_with_warning():
    y = np.r_[1, np.zeros(29)].astype(int)
    s = np.random.default_rng(0).random(30)
    with pytest.warns(M.UndefinedMetricWarning, match="undefined in"):
        r = S.bootstrap_ci(M.auroc, y, s, n_boot=100)
    assert r.n_valid < 100
    r = S.bootstrap_ci(M.auroc, y, s, strata=y, n_boot=100)  # stratified: always one positive
    assert r.n_valid == 100


def test_bootstrap_pvalue():
    assert S.bootstrap_pvalue(np.ones(99)) == pytest.approx(2 / 100)  # never 0
    assert S.bootstrap_pvalue(np.r_[-np.ones(50), np.ones(50)]) == 1.0
    assert np.isnan(S.bootstrap_pvalue([np.nan]))


# --- McNemar, multiplicity ------------------------------------------------------------------------
def test_mcnemar_counts_and_pvalues():
    y = np.array([1] * 40 + [0] * 40)
    rng = np.random.default_rng(3)
    pa = np.where(rng.random(80) < 0.85, y, 1 - y)
    pb = np.where(rng.random(80) < 0.65, y, 1 - y)
    r = S.mcnemar_test(y, pa, pb)
    ra, rb = pa == y, pb == y
    assert r["b"] == np.sum(ra & ~rb) and r["c"] == np.sum(~ra & rb)
    table = [[np.sum(ra & rb), r["b"]], [r["c"], np.sum(~ra & ~rb)]]
    ref = mcnemar(table, exact=r["b"] + r["c"] < 25, correction=True)
    assert r["p_value"] == pytest.approx(ref.pvalue)
    # exact: two-sided binomial
    r = S.mcnemar_test(y[:10], pa[:10], pb[:10], exact=True)
    k, n = min(r["b"], r["c"]), r["b"] + r["c"]
    assert r["p_value"] == pytest.approx(min(1.0, 2 * sps.binom.cdf(k, n, 0.5)))
    assert S.mcnemar_test(y, pa, pa)["p_value"] == 1.0


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_adjust_pvalues_equal_statsmodels(method):
    p = np.random.default_rng(4).random(25) ** 3
    p[[3, 7]] = p[5]  # ties
    np.testing.assert_allclose(S.adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12)
    q = np.r_[p[:5], np.nan]
    out = S.adjust_pvalues(q, method)
    assert np.isnan(out[-1])
    np.testing.assert_allclose(out[:5], multipletests(p[:5], method=method)[1])
    with pytest.raises(ValueError, match="expected one of"):
        S.adjust_pvalues(p, "holmes")


# --- the results table ----------------------------------------------------------------------------
def _arms(seed=0, n_patients=120):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_patients)
    pid = np.repeat([f"p{i}" for i in range(n_patients)], sizes)
    n = len(pid)
    y = (rng.random((n, 3)) < [0.35, 0.2, 0.12]).astype(int)
    noise = rng.normal(size=(n, 3))
    good = 1 / (1 + np.exp(-(2.0 * y - 1 + noise)))
    weak = 1 / (1 + np.exp(-(0.8 * y - 0.4 + noise + 0.8 * rng.normal(size=(n, 3)))))
    return y, {"real": weak, "real+synthetic": good}, pid


def test_compare_arms_table():
    y, scores, pid = _arms()
    yv, sv, _ = _arms(1)
    mask = np.ones_like(y, bool)
    mask[:5, 2] = False
    df = S.compare_arms(y, scores, pid, label_names=["a", "b", "c"], reference_arm="real", mask=mask,
                        y_val=yv, val_scores=sv, threshold_policy="youden", n_boot=60, seed=7)
    assert list(df.columns[: len(S.RESULT_COLUMNS)]) == list(S.RESULT_COLUMNS)
    assert set(df["label"]) == {"a", "b", "c", "macro"} and set(df["seed"]) == {7}
    ref = df[df.arm == "real"]
    assert ref["p_value"].isna().all() and "auroc_diff" not in set(ref["metric"])
    new = df[df.arm == "real+synthetic"].set_index(["label", "metric"])
    for j, name in enumerate("abc"):
        m = mask[:, j]
        d = S.delong_test(y[m, j], scores["real+synthetic"][m, j], scores["real"][m, j])
        assert new.loc[(name, "auroc"), "p_value"] == pytest.approx(d.p_value)
        assert new.loc[(name, "auroc"), "test"] == "delong"
        assert new.loc[(name, "auroc_diff"), "estimate"] == pytest.approx(d.auc_a - d.auc_b)
        assert new.loc[(name, "auroc"), "n"] == m.sum()
        assert new.loc[(name, "sensitivity"), "test"] == "mcnemar"
        assert new.loc[(name, "mcc"), "test"] == "bootstrap"
    # thresholds are the validation ones; Holm within each metric across the non-reference rows
    thr = M.choose_thresholds(yv, sv["real+synthetic"], "youden")
    np.testing.assert_allclose(new.loc[[("a", "mcc"), ("b", "mcc"), ("c", "mcc")], "threshold"], thr)
    fam = df[(df.metric == "auroc") & (df.arm != "real") & (df.label != "macro")]
    np.testing.assert_allclose(fam["p_adj"], S.adjust_pvalues(fam["p_value"], "holm"))
    macro = df[(df.metric == "auroc") & (df.arm != "real") & (df.label == "macro")]
    np.testing.assert_allclose(macro["p_adj"], S.adjust_pvalues(macro["p_value"], "holm"))
    ok = df.dropna(subset=["estimate", "ci_low"])
    assert (ok.ci_low <= ok.estimate + 1e-12).all() and (ok.estimate <= ok.ci_high + 1e-12).all()
    # paired resamples: re-running gives the same table
    df2 = S.compare_arms(y, scores, pid, label_names=["a", "b", "c"], reference_arm="real", mask=mask,
                         y_val=yv, val_scores=sv, threshold_policy="youden", n_boot=60, seed=7)
    pd.testing.assert_frame_equal(df, df2)
    with pytest.raises(ValueError, match="needs y_val"):
        S.compare_arms(y, scores, pid, label_names="abc", reference_arm="real", threshold_policy="youden")
    with pytest.raises(ValueError, match="reference_arm 'none'"):
        S.compare_arms(y, scores, pid, label_names="abc", reference_arm="none")


def test_compare_arms_bca_runs():
    y, scores, pid = _arms(n_patients=40)
    df = S.compare_arms(y, scores, pid, label_names="abc", reference_arm="real", n_boot=40, ci_method="bca",
                        metrics=["auroc", "sensitivity"])
    assert set(df["ci_method"]) == {"bootstrap-bca"} and df["ci_low"].notna().all()


def _multi_seed_table(effect=0.03, seeds=(0, 1, 2, 3), labels="abcde"):
    rng = np.random.default_rng(5)
    base = dict(zip(labels, rng.uniform(0.7, 0.9, len(labels))))
    rows = []
    for sd in seeds:
        luck = rng.normal(scale=0.01)
        for lab in labels:
            for arm, eff in (("real", 0.0), ("real+syn", effect)):
                rows.append({"arm": arm, "label": lab, "metric": "auroc", "seed": sd,
                             "estimate": base[lab] + luck + eff + rng.normal(scale=0.005), "ci_low": np.nan,
                             "ci_high": np.nan, "p_value": np.nan, "p_adj": np.nan, "reference_arm": "real",
                             "n": 500, "n_pos": 50, "n_seeds": 1, "threshold": np.nan, "threshold_policy": "",
                             "ci_method": "", "test": ""})
    return pd.DataFrame(rows)


def test_summarize_seeds():
    df = _multi_seed_table()
    out = S.summarize_seeds(df)
    row = out[(out.arm == "real+syn") & (out.label == "a")].iloc[0]
    a = df[(df.arm == "real+syn") & (df.label == "a")].sort_values("seed")["estimate"].to_numpy()
    r = df[(df.arm == "real") & (df.label == "a")].sort_values("seed")["estimate"].to_numpy()
    lo, hi = sps.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sps.sem(a))
    assert row.estimate == pytest.approx(a.mean()) and row.ci_low == pytest.approx(lo) and row.ci_high == pytest.approx(hi)
    assert row.p_value == pytest.approx(sps.ttest_rel(a, r).pvalue) and row.seed == "pooled" and row.n_seeds == 4
    w = S.summarize_seeds(df, test="wilcoxon")
    assert w[(w.arm == "real+syn") & (w.label == "a")].iloc[0].p_value == pytest.approx(sps.wilcoxon(a, r).pvalue)
    assert out[out.arm == "real"]["p_value"].isna().all()


def test_mixed_model_recovers_arm_effect():
    df = _multi_seed_table(effect=0.03)
    out = S.mixed_model_arms(df, metric="auroc")
    row = out.iloc[0]
    assert row.metric == "auroc_diff" and row.arm == "real+syn" and row.test == "mixedlm"
    diff = df[df.arm == "real+syn"]["estimate"].mean() - df[df.arm == "real"]["estimate"].mean()
    assert row.estimate == pytest.approx(diff, abs=1e-6)  # balanced design: coefficient = mean difference
    assert row.ci_low < 0.03 < row.ci_high and row.p_value < 1e-3
    with pytest.raises(ValueError, match="at least 2 seeds"):
        S.mixed_model_arms(df[df.seed == 0])


def test_check_results_table():
    df = _multi_seed_table()
    with pytest.raises(ValueError, match="lacks columns"):
        S.check_results_table(df.drop(columns=["p_adj"]))
    with pytest.raises(ValueError, match="repeats"):
        S.check_results_table(pd.concat([df, df.iloc[:1]]))


def test_bootstrap_wald_pvalue_is_not_floored_and_matches_the_normal_test():
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    d = rng.normal(0.0, 0.01, 300)  # resampled differences with SE 0.01
    se = np.std(d, ddof=1)
    assert S.bootstrap_wald_pvalue(0.05, d) == pytest.approx(2 * norm.sf(0.05 / se))
    assert S.bootstrap_wald_pvalue(0.05, d) < 1e-5 < 2 / 301  # far below the percentile floor
    assert S.bootstrap_wald_pvalue(0.0, d) == pytest.approx(1.0)
    assert np.isnan(S.bootstrap_wald_pvalue(np.nan, d)) and np.isnan(S.bootstrap_wald_pvalue(0.1, [np.nan]))


def test_macro_rows_are_their_own_multiplicity_family():
    df = pd.DataFrame({"metric": ["auroc"] * 4, "label": ["A", "B", "C", "macro"], "p_value": [0.01, 0.02, 0.03, 0.01]})
    out = adjust_by_metric(df, "holm")
    assert out.loc[3, "p_adj"] == pytest.approx(0.01)  # alone in its family
    assert out.loc[0, "p_adj"] == pytest.approx(0.03)  # Holm over the three labels


def test_pooled_seed_intervals_stay_in_the_metric_range():
    rows = [{"arm": "real", "label": "a", "metric": m, "seed": str(sd), "estimate": v, "ci_low": v, "ci_high": v,
             "p_value": np.nan, "p_adj": np.nan, "reference_arm": "real", "n": 100, "n_pos": 10, "n_seeds": 1,
             "threshold": np.nan, "threshold_policy": "", "ci_method": "", "test": ""}
            for m, vals in (("auroc", (0.99, 0.90)), ("mcc", (-0.95, -0.5))) for sd, v in enumerate(vals)]
    out = S.summarize_seeds(pd.DataFrame(rows)).set_index("metric")
    assert out.loc["auroc", "ci_high"] == 1.0 and 0 <= out.loc["auroc", "ci_low"] < 0.9
    assert out.loc["mcc", "ci_low"] == -1.0
