"""The verdict rules reach each of their outcomes, and cannot be met by chance alone."""

import math

import numpy as np
import pandas as pd
import pytest

from cxrlib import verdicts as V
from cxrlib.verdicts import Evidence, Rule, decide

UP = Rule("directional", "gain", +1)
DOWN = Rule("directional", "loss", -1)
EQ = Rule("equivalence", "difference", margin=0.02)
CORR = Rule("correlation", "rho", -1, min_n=5)
ORDER = Rule("ordering", "FD difference", -1)


@pytest.mark.parametrize("rule, ev, p_adj, verdict", [
    (UP, Evidence(0.03, 0.01, 0.05, 0.01, 5), 0.01, "reproduces"),
    (UP, Evidence(-0.03, -0.05, -0.01, 0.01, 5), 0.01, "does not reproduce"),  # significant, wrong direction
    (UP, Evidence(0.0, -0.01, 0.0, 0.9, 5), 0.9, "does not reproduce"),  # CI excludes any gain
    (UP, Evidence(0.01, -0.01, 0.03, 0.2, 5), 0.2, "inconclusive"),
    (UP, Evidence(0.03, 0.01, 0.05, 0.01, 5), 0.2, "inconclusive"),  # unadjusted p < α is not enough
    (UP, Evidence(0.3, math.nan, math.nan, math.nan, 1), math.nan, "inconclusive"),  # one seed: never a verdict
    (DOWN, Evidence(-0.3, -0.4, -0.2, 0.001, 3), 0.003, "reproduces"),
    (DOWN, Evidence(0.3, 0.2, 0.4, 0.001, 3), 0.003, "does not reproduce"),
    (EQ, Evidence(0.001, -0.01, 0.012, 0.01, 5), 0.01, "reproduces"),
    (EQ, Evidence(0.05, 0.03, 0.07, 0.9, 5), 0.9, "does not reproduce"),
    (EQ, Evidence(0.01, -0.02, 0.04, 0.3, 5), 0.3, "inconclusive"),
    (CORR, Evidence(-0.9, -1.0, -0.5, 0.01, 6), 0.01, "reproduces"),
    (CORR, Evidence(0.8, 0.3, 1.0, 0.02, 6), 0.02, "does not reproduce"),
    (CORR, Evidence(-0.8, math.nan, math.nan, 0.08, 4), 0.08, "inconclusive"),  # too few generators
    (ORDER, Evidence(-0.2, -0.3, -0.1, math.nan, 4), math.nan, "reproduces"),
    (ORDER, Evidence(0.2, 0.1, 0.3, math.nan, 4), math.nan, "does not reproduce"),
    (ORDER, Evidence(0.0, -0.1, 0.1, math.nan, 4), math.nan, "inconclusive"),
])
def test_each_rule_reaches_each_outcome(rule, ev, p_adj, verdict):
    assert decide(rule, ev, p_adj)[0] == verdict
    assert verdict in V.VERDICTS


def test_not_measured_is_inconclusive_and_rules_validate():
    assert decide(UP, None) == ("inconclusive", "not measured")
    with pytest.raises(ValueError, match="margin"):
        Rule("equivalence", "x")
    with pytest.raises(ValueError, match="kind"):
        Rule("any of 16 correlations", "x")
    assert "TOST" in EQ.text() and "±0.02" in EQ.text() and "adjusted p < 0.05" in UP.text()


def _results(a_minus_b, metric="auroc", base=0.7, arm="real+synthetic 100%", ref="real"):
    rows = []
    for seed, d in enumerate(a_minus_b):
        rows.append(dict(arm=ref, label="macro", metric=metric, seed=seed, estimate=base + 0.01 * seed, test_set="internal"))
        rows.append(dict(arm=arm, label="macro", metric=metric, seed=seed, estimate=base + 0.01 * seed + d, test_set="internal"))
        rows.append(dict(arm=arm, label="macro", metric=metric, seed="pooled", estimate=9.0, test_set="internal"))
    return pd.DataFrame(rows)


def test_paired_contrast_over_seeds():
    ev = V.paired_contrast(_results([0.02, 0.03, 0.025, 0.022, 0.028]), "real+synthetic 100%", "real", "auroc")
    assert ev.n == 5 and ev.estimate == pytest.approx(0.025) and ev.ci_low > 0 and ev.p < 0.001
    assert decide(UP, ev, ev.p)[0] == "reproduces"
    noisy = V.paired_contrast(_results([0.05, -0.04, 0.01]), "real+synthetic 100%", "real", "auroc")
    assert decide(UP, noisy, noisy.p)[0] == "inconclusive"
    one = V.paired_contrast(_results([0.5]), "real+synthetic 100%", "real", "auroc")
    assert one.n == 1 and decide(UP, one, one.p)[0] == "inconclusive"


def test_equivalence_by_tost():
    same = V.paired_equivalence(_results([0.001, -0.002, 0.0015, -0.001, 0.0005], arm="synthetic 200%"),
                                "synthetic 200%", "real", "auroc", margin=0.02)
    assert same.p < 0.05 and decide(EQ, same, same.p)[0] == "reproduces"
    far = V.paired_equivalence(_results([-0.10, -0.12, -0.11, -0.09], arm="synthetic 200%"), "synthetic 200%", "real",
                               "auroc", margin=0.02)
    assert decide(EQ, far, far.p)[0] == "does not reproduce"


def test_holm_within_a_family_can_turn_a_verdict():
    """Two claims of one family, each p = 0.03: unadjusted both < 0.05, Holm-adjusted both 0.06."""
    ev = Evidence(0.02, 0.001, 0.04, 0.03, 5)
    claims = [V.Claim(f"c{i}", "s", "x", "", "ch", "", Rule("directional", "d", +1, family="ch"), lambda t, e=ev: e)
              for i in range(2)]
    card = V.evaluate(claims, {"ch": {}})
    assert card["p_adj"].tolist() == [0.06, 0.06] and set(card["verdict"]) == {"inconclusive"}
    alone = V.evaluate(claims[:1], {"ch": {}})
    assert alone["verdict"].tolist() == ["reproduces"]


def test_register_and_scorecard_on_missing_chapters(tmp_path):
    assert len(V.CLAIMS) >= 10 and len({c.claim_id for c in V.CLAIMS}) == len(V.CLAIMS)
    studies = {c.study.split()[0] for c in V.CLAIMS}
    assert {"Huijben", "Khosravi", "Schaudt", "Rajaraman"} <= studies
    card = V.scorecard({})
    assert list(card.columns) == list(V.SCORECARD_COLUMNS) and set(card["verdict"]) == {"inconclusive"}
    assert card["reason"].str.contains("has not run").all()
    page = V.scorecard_markdown(card, "smoke")
    assert page.count("\n| ") >= 11 and "## The rules" in page
    assert "cpu-full" not in page and "measured by `cpu-full`" in V.scorecard_markdown(card, "cpu")  # the hour book says where the rest is
    assert "Verdict rules, fixed before the results" in V.rules_markdown("05_supplementation")


def _ch5_arms(sources=("R-only 1", "R-only 2", "pool-pretrained")):
    rows = [dict(arm="real", kind="real", source="", source_kind="", percent=0),
            dict(arm="real+duplicates 100%", kind="real+duplicates", source="", source_kind="", percent=100)]
    for src in sources:
        kind = "pool-pretrained" if src == "pool-pretrained" else "R-only"
        rows += [dict(arm=f"real+synthetic 100% [{src}]", kind="real+synthetic", source=src, source_kind=kind, percent=100),
                 dict(arm=f"synthetic 200% [{src}]", kind="synthetic", source=src, source_kind=kind, percent=200)]
    return pd.DataFrame(rows)


def _ch5_results(gains, dup=(0.0, 0.001, -0.001, 0.0005, -0.0005), syn_only=(-0.1, -0.12, -0.11, -0.1, -0.1)):
    """Chapter 5's results table: ``gains[source]`` = per-seed AUROC of real+synthetic 100 % − real."""
    parts = [_results(dup, arm="real+duplicates 100%")]
    for src, g in gains.items():
        parts.append(_results(g, arm=f"real+synthetic 100% [{src}]").query("arm != 'real'"))
        parts.append(_results(syn_only, arm=f"synthetic 200% [{src}]").query("arm != 'real'"))
    return pd.concat(parts)


def test_chapter_evidence_from_a_run_folder(tmp_path):
    """Chapter 5's claims from the tables a run saves (arms.csv, results.csv, the mixing tables): the
    R-only contrasts average, per seed, over the R-only generators; the pool-pretrained one is its own."""
    res = _ch5_results({"R-only 1": [0.02, 0.03, 0.025, 0.02, 0.03], "R-only 2": [0.0, 0.01, 0.005, 0.0, 0.01],
                        "pool-pretrained": [-0.02, -0.03, -0.025, -0.02, -0.03]})
    res.to_csv(tmp_path / "results.csv", index=False)
    _ch5_arms().to_csv(tmp_path / "arms.csv", index=False)
    (tmp_path / "config.json").write_text("{}")
    card = V.chapter_verdicts("05_supplementation", tmp_path).set_index("claim_id")
    assert card.loc["khosravi-supplement-gain", "estimate"] == pytest.approx(0.015)  # mean of 0.025 and 0.005
    assert card.loc["khosravi-supplement-gain", "verdict"] == "reproduces" and card.loc["khosravi-supplement-gain", "n"] == 5
    assert card.loc["khosravi-synthetic-vs-duplicates", "estimate"] == pytest.approx(0.015)
    assert card.loc["khosravi-synthetic-only", "verdict"] == "does not reproduce"
    assert card.loc["pool-synthetic-vs-duplicates", "verdict"] == "does not reproduce"  # the pool source alone, below
    assert card.loc["pool-synthetic-vs-duplicates", "estimate"] == pytest.approx(-0.025)
    assert card.loc["khosravi-mixing-sources", "verdict"] == "inconclusive"
    assert "mixing" in card.loc["khosravi-mixing-sources", "reason"]
    # the mixing arms: each outcome of the rule
    mix_arms = pd.DataFrame({"kind": ["site real", "site real+synthetic", "site real+duplicates"],
                             "arm": ["nih real", "nih real + internal synthetic 100%", "nih real + duplicates 100%"]})
    mix_arms.to_csv(tmp_path / "mixing_arms.csv", index=False)
    for diffs, verdict in (([0.04, 0.05, 0.045, 0.04, 0.05], "reproduces"), ([-0.04, -0.05, -0.045, -0.04, -0.05], "does not reproduce"),
                           ([0.05, -0.04, 0.01, -0.02, 0.0], "inconclusive")):
        _results(diffs, arm="nih real + internal synthetic 100%", ref="nih real").to_csv(tmp_path / "mixing.csv", index=False)
        card = V.chapter_verdicts("05_supplementation", tmp_path).set_index("claim_id")
        assert card.loc["khosravi-mixing-sources", "verdict"] == verdict, diffs


def test_mean_arm_needs_every_generator_in_a_seed():
    res = pd.concat([_results([0.02, 0.04], arm="a"), _results([0.0], arm="b").query("arm != 'real'")])
    mean, name = V.with_mean_arm(res, ["a", "b"], "mean")
    got = mean[mean.arm == "mean"]
    assert got["seed"].tolist() == [0] and got["estimate"].iloc[0] == pytest.approx(0.71)  # seed 1 lacks b
    with pytest.raises(ValueError, match="no arms"):
        V.with_mean_arm(res, [], "mean")


def test_ch5_claims_without_their_arms_are_inconclusive():
    res = _ch5_results({"R-only 1": [0.02, 0.03, 0.025]})
    card = V.evaluate(V.claims_of("05_supplementation"), {"05_supplementation": {
        "results": res, "arms": _ch5_arms(("R-only 1",)), "config": {}}}).set_index("claim_id")
    assert card.loc["pool-synthetic-vs-duplicates", "verdict"] == "inconclusive"
    assert "no pool-pretrained synthetic and duplicate arm" in card.loc["pool-synthetic-vs-duplicates", "reason"]
    assert card.loc["khosravi-supplement-gain", "verdict"] == "reproduces"


def test_a_table_without_what_a_rule_reads_is_inconclusive_not_a_crash():
    """The book's scorecard must not die on one chapter's unexpected table (e.g. a run at another
    profile without the column a rule reads): that claim is inconclusive and says why."""
    broken = {"results": pd.DataFrame({"arm": ["real"]}), "arms": pd.DataFrame({"arm": ["real"]}),
              "mixing": pd.DataFrame({"arm": ["x"]}), "mixing_arms": pd.DataFrame({"arm": ["x"]})}
    card = V.evaluate(V.claims_of("05_supplementation"), {"05_supplementation": {**broken, "config": {}}})
    assert set(card["verdict"]) == {"inconclusive"}
    assert card["reason"].str.contains("could not be read").sum() == len(card) == 5


def test_ch8_claims_against_real_and_against_the_control_translations():
    def table(gain_vs_real, gain_vs_control):
        rows = []
        for seed, (g, c) in enumerate(zip(gain_vs_real, gain_vs_control)):
            base = 0.3 + 0.01 * seed
            for arm, est in (("real", base), ("real + img2img s=0.9", base + g), ("real + control s=0.9", base + g - c),
                             ("real + img2img s=0.5", base)):
                rows.append(dict(arm=arm, label="Consolidation", metric="youden", seed=seed, estimate=est, test_set="internal"))
        return {"results": pd.DataFrame(rows), "config": {"minority_label": "Consolidation"}}

    up = [0.05, 0.06, 0.055, 0.05, 0.06]
    card = V.evaluate(V.claims_of("08_img2img"), {"08_img2img": table(up, up)}).set_index("claim_id")
    assert card.loc["rajaraman-minority-youden", "verdict"] == "reproduces"  # the strongest strength, 0.9, is read
    assert card.loc["control-img2img-vs-control", "verdict"] == "reproduces"
    card = V.evaluate(V.claims_of("08_img2img"), {"08_img2img": table(up, [-0.05, -0.06, -0.055, -0.05, -0.06])}).set_index("claim_id")
    assert card.loc["control-img2img-vs-control", "verdict"] == "does not reproduce"  # the control helps more
    card = V.evaluate(V.claims_of("08_img2img"), {"08_img2img": table(up, [0.05, -0.04, 0.0, 0.01, -0.02])}).set_index("claim_id")
    assert card.loc["control-img2img-vs-control", "verdict"] == "inconclusive"
    no_control = table(up, up)
    no_control["results"] = no_control["results"][~no_control["results"].arm.str.contains("control")]
    card = V.evaluate(V.claims_of("08_img2img"), {"08_img2img": no_control}).set_index("claim_id")
    assert "no 'real + control s=0.9' arm" in card.loc["control-img2img-vs-control", "reason"]
