"""The reproduction paragraphs of chapters 4, 6 and 7: each a pure function of the chapter's tables
(so each outcome a reader can see is reached by a test), rather than logic in a notebook cell.

* :func:`pretraining_text`: chapter 4's contrasts (pretrained + fine-tuned vs from scratch at equal
  labels; each fraction vs all labels, non-inferiority at ``margin``);
* :func:`fidelity_utility_text`: chapter 6's rank correlations between fidelity and utility;
* :func:`comparison_text`: chapter 7's three findings of Schaudt et al.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd


def _contrast_line(r, s: pd.DataFrame, margin: float) -> str:
    a, b = r.arm.removeprefix("synthetic: "), r.reference.removeprefix("synthetic: ")
    verdict = "better" if r.superior else "worse" if r.ci_high < 0 else "not distinguishable"
    return (f"* **{r.question}** — {a} minus {b}: ΔAUROC = **{r.auroc_diff:+.3f}** (95 % CI {r.ci_low:+.3f} to "
            f"{r.ci_high:+.3f}, p = {r.p_value:.3g}, {r.test}, {r.n_seeds} seed(s)): {verdict}"
            + (f"; non-inferior at margin {margin}" if r.noninferior else f"; not shown non-inferior at margin {margin}")
            + f". Label consistency (oracle AUROC): {s.loc[a, 'label_auroc']:.3f} vs {s.loc[b, 'label_auroc']:.3f}.")


def pretraining_compute_note(cfg, gens: pd.DataFrame) -> str:
    """Chapter 4's note under its generator table: the compute each recipe has taken, or, with no
    ``ft_fractions`` (the ``cpu`` profile), that nothing was pretrained and which profile runs the design."""
    if not cfg.ft_fractions:
        return ("**No generator is pretrained at this profile.** The pretraining chain (the unconditional DDPM on the "
                "pool and its fine-tunings) does not fit the `cpu` book's hour on 2 cores beside the other chapters' "
                "primary contrasts, so `ft_fractions` is empty and only the study's main generator (from scratch on R) "
                "is shown. Huijben's claim is *not tested* here (the scorecard says so); the `cpu-full` profile runs the "
                "full design (10/25/50/100 % for both recipes): `cxr run notebooks/04_pretraining.ipynb --profile cpu-full`.")
    return (f"Compute is **not** matched: each pretrained + fine-tuned generator has taken "
            f"{int(gens.unlabeled_steps.max()):,} unlabeled and {cfg.ft_steps:,} labeled optimizer steps (batch "
            f"{cfg.gen_batch_size}), each scratch generator {cfg.gen_steps:,} labeled steps. The fine-tuning is "
            f"{cfg.ft_steps / cfg.gen_steps:.0%} of a from-scratch run.")


def pretraining_text(contrasts: pd.DataFrame, summary: pd.DataFrame, margin: float) -> str:
    """Chapter 4: one line per contrast, then whether pretraining helped at equal labels and whether
    Huijben's claim (a fraction of the labels suffices) holds. With no contrast of a kind, it says the
    question was not asked rather than giving a verdict (``all()`` of an empty table is True)."""
    s = summary.set_index("generator")
    lines = [_contrast_line(r, s, margin) for r in contrasts.itertuples()]
    same = contrasts[contrasts.question == "pretraining vs scratch, same labels"]
    suff = contrasts[contrasts.question.str.endswith("vs all labels")]
    if suff.noninferior.any():
        claim = "**holds here** for " + ", ".join(suff[suff.noninferior].arm.str.removeprefix("synthetic: "))
    elif len(suff):
        claim = "**is not supported here**: no fine-tuned generator was non-inferior to the all-labels one"
    else:
        claim = ("**cannot be tested at this profile**: the design has no generator trained on all labels "
                 "(add 1.0 to `ft_fractions` or `scratch_fractions`)")
    if not len(same):
        helps = "Pretraining was not compared with training from scratch at equal labels."
    else:
        effect = ("**helped**" if same.superior.all() else "**hurt**" if (same.ci_high < 0).all()
                  else "made **no detectable difference**")
        helps = f"Pretraining {effect} at equal labels ({len(same)} fraction(s))."
    claim = ("Huijben's claim — that with unconditional pretraining a fraction of the labels suffices — "
             + claim + ".")
    return "\n".join(lines) + "\n\n" + helps + " " + claim


def fidelity_utility_text(v: Mapping[str, Mapping], utilities: Mapping[str, str]) -> str:
    """Chapter 6: ``v`` is :func:`cxrlib.experiments.fidelity_utility.verdict`'s output, ``utilities``
    the names of the utilities (``fidelity_utility.UTILITIES``)."""
    lines = []
    for util, d in v.items():
        lines.append(
            f"* **{utilities[util]}** ({d['n_variants']} variants): {d['n_agree']} of {d['n_metrics']} fidelity metrics "
            f"rank the variants in the same direction as utility, {d['n_disagree']} in the opposite one; "
            + (f"the 95 % CI excludes 0 only for {', '.join(d['metrics_ci_excludes_0'])}" if d["metrics_ci_excludes_0"]
               else "no CI excludes 0")
            + f". The best predictor is `{d['best_metric']}` (signed ρ = {d['best_agreement']:+.2f}). "
            f"Image quality by FD: signed ρ = {d['fd_agreement']:+.2f} (CI {d['fd_ci'][0]:+.2f} to {d['fd_ci'][1]:+.2f}).")
    g = v.get("gain", {})
    if g.get("fd_ci", (0, 0))[1] < 0:
        schaudt = "**reproduces**: better FD goes with *less* gain, and the CI excludes 0"
    elif g.get("fd_agreement", 0) < 0:
        schaudt = "points the same way (better FD, less gain) but its CI includes 0"
    else:
        schaudt = ("**does not reproduce**: better FD goes with more gain"
                   + (" (CI excludes 0)" if g.get("fd_ci", (0, 0))[0] > 0 else ", though the CI includes 0"))
    opposite = [f"`{m}` ({utilities[u].split(' of ')[0]})" for u, d in v.items() for m in d["metrics_disagree"]]
    opposite_sig = [f"`{m}`" for d in v.values() for m in d["metrics_disagree_ci_excludes_0"]]
    if opposite:
        huijben = ("**reproduces**: some fidelity metrics rank the variants opposite to utility — " + ", ".join(opposite)
                   + (f"; for {', '.join(opposite_sig)} the CI excludes 0" if opposite_sig else
                      "; none of these opposite correlations has a CI excluding 0, so with this few variants each could be noise"))
    else:
        huijben = ("**does not reproduce**: every fidelity metric ranks the variants in the same direction as both utilities "
                   f"({sum(d['n_ci_excludes_0'] for d in v.values())} of {sum(d['n_metrics'] for d in v.values())} correlations "
                   "with a CI excluding 0)")
    return ("\n".join(lines) + f"\n\nSchaudt's negative correlation between image quality and downstream gain {schaudt}. "
            f"Huijben's observation that fidelity and classification metrics disagree {huijben}.")


def comparison_text(rep: Mapping, quality: pd.DataFrame) -> str:
    """Chapter 7: ``rep`` is :func:`cxrlib.experiments.comparison.reproduction`'s output, ``quality``
    its quality table (one row per generator, column ``fd``)."""
    qual = quality.set_index("generator")
    mg = rep["mean_gain"]
    best_q, best_g = rep["best_quality"], rep["best_gain"]
    lines = [
        f"1. **Best quality ≠ best gain.** The generator with the lowest FD is **{best_q}** "
        f"(FD {qual.loc[best_q, 'fd']:.3g}); the one with the largest mean macro-AUROC gain is "
        f"**{best_g}** ({mg[best_g]:+.4f}). "
        + ("This **reproduces** Schaudt's finding." if rep["finding1"] else "They coincide: this finding **does not reproduce** here.")
        + (" (Schaudt's best-quality model was the GAN; here it is " + ("also the GAN)." if best_q == "gan" else f"the {best_q})).")),
        f"2. **Quality vs gain.** Spearman's ρ between quality (−FD) and mean gain over the {len(mg)} generators is "
        f"**{rep['spearman_quality_gain']:+.2f}** (a direction only with so few points); Schaudt reported a negative "
        f"correlation: " + ("**reproduced** in sign." if rep["finding2"] else "**not reproduced**." if rep["finding2"] is False
                           else "undefined here."),
        "3. **Only the few-shot model improves.** Generators with a significant positive gain (Holm-adjusted p < 0.05) in "
        f"at least one cell: **{', '.join(rep['improving']) or 'none'}**. "
        + ("Exactly the few-shot model, as Schaudt's DreamBooth: **reproduced**." if rep["finding3"] else
           "Schaudt found only DreamBooth improving overall accuracy: **not reproduced** here."),
    ]
    return ("\n".join(lines) + "\n\nMean macro-AUROC gain per generator (over architectures and amounts): "
            + ", ".join(f"{g} {x:+.4f}" for g, x in mg.items()) + ".")
