"""The reproduction paragraphs of chapters 4, 6 and 7 reach each of their outcomes."""

import pandas as pd
import pytest

from cxrlib.experiments import reports

SUMMARY = pd.DataFrame({"generator": ["ft-25%", "scratch-25%", "scratch-100%"], "label_auroc": [0.7, 0.6, 0.8]})


def _contrast(question, arm, ref, diff, lo, hi, superior, noninferior):
    return dict(question=question, arm=f"synthetic: {arm}", reference=f"synthetic: {ref}", auroc_diff=diff, ci_low=lo,
                ci_high=hi, p_value=0.01, test="paired t over seeds", n_seeds=3, superior=superior, noninferior=noninferior)


SAME = "pretraining vs scratch, same labels"
ALL = "25 % vs all labels"


@pytest.mark.parametrize("rows, expected", [
    ([_contrast(SAME, "ft-25%", "scratch-25%", 0.05, 0.01, 0.09, True, True)], ["Pretraining **helped**", "cannot be tested"]),
    ([_contrast(SAME, "ft-25%", "scratch-25%", -0.05, -0.09, -0.01, False, False)], ["Pretraining **hurt**"]),
    ([_contrast(SAME, "ft-25%", "scratch-25%", 0.0, -0.02, 0.02, False, True)], ["**no detectable difference**"]),
    # no same-label contrast: no verdict on it (all() of an empty table is True; it must not say "helped")
    ([_contrast(ALL, "ft-25%", "scratch-100%", 0.0, -0.01, 0.01, False, True)],
     ["was not compared with training from scratch", "**holds here** for ft-25%"]),
    ([_contrast(ALL, "ft-25%", "scratch-100%", -0.1, -0.2, -0.05, False, False)], ["**is not supported here**"]),
])
def test_pretraining_text_reaches_each_outcome(rows, expected):
    text = reports.pretraining_text(pd.DataFrame(rows), SUMMARY, margin=0.02)
    for e in expected:
        assert e in text
    if not any(r["question"] == SAME for r in rows):
        assert "helped" not in text and "hurt" not in text


def test_pretraining_text_on_no_contrast_at_all():
    empty = pd.DataFrame(columns=list(_contrast(SAME, "a", "b", 0, 0, 0, False, False)))
    text = reports.pretraining_text(empty, SUMMARY, margin=0.02)
    assert "was not compared" in text and "cannot be tested" in text and "helped" not in text


def _fu(fd_agreement, fd_ci, disagree=(), disagree_sig=()):
    return {"n_variants": 8, "n_agree": 5, "n_disagree": len(disagree), "n_metrics": 8, "metrics_ci_excludes_0": list(disagree_sig),
            "best_metric": "fd", "best_agreement": 0.5, "fd_agreement": fd_agreement, "fd_ci": fd_ci,
            "metrics_disagree": list(disagree), "metrics_disagree_ci_excludes_0": list(disagree_sig), "n_ci_excludes_0": len(disagree_sig)}


@pytest.mark.parametrize("gain, expected", [
    (_fu(-0.6, (-0.9, -0.2)), ["quality and downstream gain **reproduces**", "disagree **does not reproduce**"]),
    (_fu(-0.3, (-0.8, 0.3), disagree=["kid"]), ["points the same way", "disagree **reproduces**", "could be noise"]),
    (_fu(0.6, (0.2, 0.9), disagree=["kid"], disagree_sig=["kid"]), ["(CI excludes 0)", "for `kid` the CI excludes 0"]),
    (_fu(0.2, (-0.3, 0.6)), ["though the CI includes 0"]),
])
def test_fidelity_utility_text_reaches_each_outcome(gain, expected):
    text = reports.fidelity_utility_text({"gain": gain}, {"gain": "gain of R + synthetic over R"})
    for e in expected:
        assert e in text, (e, text)


@pytest.mark.parametrize("rep, expected", [
    (dict(best_quality="gan", best_gain="fewshot", finding1=True, spearman_quality_gain=-0.4, finding2=True,
          improving=["fewshot"], finding3=True), ["This **reproduces**", "also the GAN", "**reproduced** in sign", "DreamBooth: **reproduced**"]),
    (dict(best_quality="ddpm", best_gain="ddpm", finding1=False, spearman_quality_gain=0.8, finding2=False,
          improving=[], finding3=False), ["**does not reproduce**", "the ddpm)", "**not reproduced**.", "**none**"]),
    (dict(best_quality="ddpm", best_gain="ddpm", finding1=False, spearman_quality_gain=float("nan"), finding2=None,
          improving=[], finding3=False), ["undefined here"]),
])
def test_comparison_text_reaches_each_outcome(rep, expected):
    rep = {**rep, "mean_gain": pd.Series({"gan": 0.001, "ddpm": 0.002, "fewshot": 0.003})}
    quality = pd.DataFrame({"generator": ["gan", "ddpm", "fewshot"], "fd": [1.0, 2.0, 3.0]})
    text = reports.comparison_text(rep, quality)
    for e in expected:
        assert e in text, (e, text)
