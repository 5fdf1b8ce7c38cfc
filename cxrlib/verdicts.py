"""The seed studies' claims, each with a verdict rule fixed before any result is seen.

A :class:`Claim` is one published finding: its id, study, the claim in words, the paper's number,
the chapter that tests it, and a :class:`Rule` — the statistic, the claimed direction, the margin,
α and the multiplicity family. :func:`decide` turns the :class:`Evidence` a chapter's tables give
(estimate, CI, p-value, how many independent replicates) into one of

* ``reproduces``: the data show the claimed effect at the stated α (after Holm adjustment within the
  chapter's family), in the claimed direction;
* ``does not reproduce``: the data exclude it (the CI lies on the other side of the claim, or, for
  an equivalence claim, outside the margin);
* ``inconclusive``: neither — too few replicates, an interval that covers both, or the claim was
  not measured at this profile (the reason says which).

The rules cannot be met by chance alone: a directional claim needs the adjusted p < α *and* the
estimate in the claimed direction; a "comparable" claim needs an equivalence test (TOST) within a
margin stated here, before the run; a correlation claim needs a CI (or an exact p) excluding 0 in
the claimed direction over independent units; inference is across training seeds (paired by seed),
never across test images alone, so one seed is always ``inconclusive``.

:data:`CLAIMS` is the register; :func:`scorecard` evaluates every claim whose chapter has run from
the chapters' run folders (``cxr book`` writes it to ``runs/scorecard-<profile>.csv`` and the book's
scorecard page).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .seed_contrasts import Evidence, paired_contrast, paired_equivalence, seed_values, with_mean_arm  # noqa: F401 (re-exported)

VERDICTS = ("reproduces", "does not reproduce", "inconclusive")
KINDS = ("directional", "equivalence", "correlation", "ordering")
SCORECARD_COLUMNS = ("claim_id", "study", "claim", "paper_value", "rule", "estimate", "ci_low", "ci_high", "p_adj",
                     "n", "verdict", "reason", "chapter", "figure")


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a claim is judged. ``kind``:

    * ``directional``: the effect (``statistic``) is nonzero with sign ``direction``: reproduces if the
      Holm-adjusted p < ``alpha`` and the estimate has that sign; does not reproduce if the 95 % CI
      lies entirely on the other side of 0 (or at 0);
    * ``equivalence``: |effect| < ``margin``: reproduces if the TOST p (adjusted) < ``alpha``; does not
      reproduce if the CI lies entirely outside (-margin, margin);
    * ``correlation``: the correlation has sign ``direction``: reproduces if the adjusted p < ``alpha``
      with the estimate of that sign; does not reproduce if the CI excludes 0 on the other side;
    * ``ordering``: the difference has sign ``direction`` (no p-value: e.g. FD of one generator minus the
      best other's): reproduces if its conservative 95 % CI excludes 0 on the claimed side, does not
      reproduce if it excludes 0 on the other side.

    ``min_n``: the independent replicates (training seeds, generators) below which the verdict is
    ``inconclusive`` whatever the numbers."""

    kind: str
    statistic: str
    direction: int = 1
    margin: float = 0.0
    alpha: float = 0.05
    family: str = ""
    min_n: int = 2

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"rule kind {self.kind!r} is not one of {list(KINDS)}")
        if self.direction not in (1, -1):
            raise ValueError(f"rule direction must be +1 or -1, got {self.direction!r}")
        if self.kind == "equivalence" and not self.margin > 0:
            raise ValueError("an equivalence rule needs a margin > 0, stated before the run")

    def text(self) -> str:
        side = "positive" if self.direction > 0 else "negative"
        family = f" (Holm within {self.family})" if self.family else ""
        need = f"; fewer than {self.min_n} independent replicates is inconclusive"
        if self.kind == "directional":
            return (f"{self.statistic}: reproduces if {side} with adjusted p < {self.alpha}{family}; does not reproduce "
                    f"if the 95 % CI excludes a {side} effect{need}.")
        if self.kind == "equivalence":
            return (f"{self.statistic}: reproduces if equivalent within ±{self.margin} (TOST, adjusted p < {self.alpha}"
                    f"{family}); does not reproduce if the CI lies outside ±{self.margin}{need}.")
        if self.kind == "correlation":
            return (f"{self.statistic}: reproduces if {side} with adjusted p < {self.alpha}{family}; does not reproduce "
                    f"if the CI excludes 0 on the other side{need}.")
        return (f"{self.statistic}: reproduces if the 95 % CI of the difference is {side}; does not reproduce if it "
                f"excludes 0 on the other side{need}.")


@dataclasses.dataclass(frozen=True)
class Claim:
    claim_id: str
    study: str
    claim: str
    paper_value: str
    chapter: str  # notebook stem whose run folder holds the tables
    figure: str
    rule: Rule
    # tables of the chapter's run folder ({csv stem: DataFrame}, plus "config": dict) -> Evidence, or
    # the reason (a str) when the claim was not measured
    evidence: Callable[[Mapping], "Evidence | str"]


def decide(rule: Rule, ev: Evidence | None, p_adj: float = math.nan) -> tuple[str, str]:
    """``(verdict, reason)`` of ``rule`` on ``ev`` (``p_adj``: ``ev.p`` adjusted in its family)."""
    if ev is None:
        return "inconclusive", "not measured"
    if not np.isfinite(ev.estimate):
        return "inconclusive", "no estimate"
    if ev.n < rule.min_n:
        return "inconclusive", f"{ev.n} independent replicate(s); the rule needs at least {rule.min_n}"
    d, lo, hi = rule.direction, ev.ci_low, ev.ci_high
    claimed_side = (lo > 0) if d > 0 else (hi < 0)
    other_side = (hi <= 0) if d > 0 else (lo >= 0)
    if rule.kind in ("directional", "correlation"):
        if np.isfinite(p_adj) and p_adj < rule.alpha and np.sign(ev.estimate) == d:
            return "reproduces", f"adjusted p = {p_adj:.3g} < {rule.alpha}, in the claimed direction"
        if np.isfinite(lo) and np.isfinite(hi) and other_side:
            return "does not reproduce", "the 95 % CI excludes the claimed direction"
        return "inconclusive", "neither the claimed effect nor its absence is shown"
    if rule.kind == "equivalence":
        if np.isfinite(p_adj) and p_adj < rule.alpha:
            return "reproduces", f"equivalent within ±{rule.margin} (TOST adjusted p = {p_adj:.3g})"
        if np.isfinite(lo) and np.isfinite(hi) and (lo >= rule.margin or hi <= -rule.margin):
            return "does not reproduce", f"the CI lies outside ±{rule.margin}"
        return "inconclusive", f"the CI neither lies within nor outside ±{rule.margin}"
    # ordering
    if np.isfinite(lo) and np.isfinite(hi) and claimed_side:
        return "reproduces", "the 95 % CI of the difference is on the claimed side"
    if np.isfinite(lo) and np.isfinite(hi) and ((lo > 0) if d < 0 else (hi < 0)):
        return "does not reproduce", "the 95 % CI of the difference is on the other side"
    return "inconclusive", "the 95 % CI of the difference covers 0"


# --- the register -------------------------------------------------------------------------------------
def _ev_balance(metric: str):
    def ev(t):
        if "results" not in t:
            return "chapter 3 has not run"
        return paired_contrast(t["results"], "synthetic-balanced", "synthetic-natural", metric, test_set="internal",
                               policy="fixed")
    return ev


def _ev_minority_vs_oversampling(t):
    if "results" not in t:
        return "chapter 3 has not run"
    arms = set(t["results"]["arm"])
    if not {"real+minority", "real-oversampled"} <= arms:
        return "real+minority or real-oversampled was not trained"
    return paired_contrast(t["results"], "real+minority", "real-oversampled", "youden", test_set="internal",
                           policy="youden")


def _ev_minority_youden(t, reference: str | None = None):
    """Youden's J of the minority label, the strongest img2img arm − ``reference`` (None: ``real``; "control":
    the control translations at the same strength), paired over seeds."""
    if "results" not in t:
        return "chapter 8 has not run"
    res, label = t["results"], t["config"].get("minority_label")
    arms = [a for a in res["arm"].unique() if a.startswith("real + img2img")]
    if not arms:
        return "chapter 8 has no image-to-image arm"
    strongest = sorted(arms, key=lambda a: float(a.rsplit("=", 1)[-1]))[-1]
    ref = "real" if reference is None else strongest.replace("img2img", "control")
    if ref not in set(res["arm"]):
        return f"chapter 8 has no {ref!r} arm"
    return paired_contrast(res, strongest, ref, "youden", label=label, test_set="internal")


def _ev_pretraining(t):
    if "results" not in t:
        return "chapter 4 has not run"
    res = t["results"]
    arms = set(res["arm"])
    ft25 = next((a for a in arms if a == "synthetic: pretrained+FT 25%"), None)
    full = next((a for a in ("synthetic: scratch 100%", "synthetic: pretrained+FT 100%") if a in arms), None)
    if ft25 is None or full is None:
        return "no 25 % fine-tuned generator or no 100 % reference at this profile"
    return paired_equivalence(res, ft25, full, "auroc", margin=0.02)


def _correlation_from_table(corr: pd.DataFrame, utility: str, metric: str) -> Evidence:
    """Spearman ρ between *quality* (the metric, oriented so that higher = better) and utility."""
    row = corr[(corr["utility"] == utility) & (corr["metric"] == metric)]
    if row.empty:
        return Evidence(math.nan, math.nan, math.nan, math.nan, 0, "Spearman")
    r = row.iloc[0]
    sign = -1.0 if r.get("better", "higher") == "lower" else 1.0
    lo, hi = sorted((sign * r["spearman_ci_low"], sign * r["spearman_ci_high"]))
    return Evidence(sign * r["spearman"], lo, hi, float(r["spearman_p"]), int(r["n"]), "Spearman, bootstrap CI over variants")


def _ev_fidelity_utility(t):
    if "correlations" not in t:
        return "chapter 6 has not run"
    return _correlation_from_table(t["correlations"], "syn_only", "fd")


def _ev_gan_quality(t):
    if "quality_summary" not in t:
        return "chapter 7 has not run"
    q = t["quality_summary"].set_index("generator")
    if "gan" not in q.index or len(q) < 2:
        return "no GAN or no other generator"
    others = q.drop(index="gan")
    best = others["fd"].idxmin()
    g, o = q.loc["gan"], others.loc[best]
    return Evidence(float(g.fd - o.fd), float(g.fd_ci_low - o.fd_ci_high), float(g.fd_ci_high - o.fd_ci_low), math.nan,
                    len(q), f"FD(gan) − FD({best}), conservative interval from the bootstrap CIs")


def _ev_quality_gain(t):
    from scipy import stats as sps

    if "quality_summary" not in t or "gains" not in t:
        return "chapter 7 has not run"
    gain = t["gains"].groupby("generator")["gain"].mean()
    q = t["quality_summary"].set_index("generator")["fd"].reindex(gain.index)
    if len(gain) < 3:
        return Evidence(math.nan, math.nan, math.nan, math.nan, len(gain), "Spearman")
    r = sps.spearmanr(-q.to_numpy(), gain.to_numpy())
    # exact permutation p over generators; with 4 generators the smallest two-sided p is 1/12
    perm = sps.permutation_test((-q.to_numpy(),), lambda x: sps.spearmanr(x, gain.to_numpy()).statistic,
                                permutation_type="pairings", n_resamples=math.inf)
    return Evidence(float(r.statistic), math.nan, math.nan, float(perm.pvalue), len(gain),
                    "Spearman over generators, exact permutation p")


def _ev_fewshot(t):
    if "results" not in t:
        return "chapter 7 has not run"
    res = t["results"]
    arms = sorted((a for a in res["arm"].unique() if a.startswith("fewshot +")), key=lambda a: int(a.split("+")[1].split("/")[0]))
    if not arms:
        return "no few-shot arm"
    arch = res["arch"].iloc[0] if "arch" in res else None
    return paired_contrast(res, arms[-1], "real", "auroc", test_set="internal", **({"arch": arch} if arch else {}))


def _ch5_arms(t, kind: str, percent: int, source_kind: str) -> list[str]:
    a = t["arms"]
    return list(a[(a["kind"] == kind) & (a["percent"] == percent) & (a["source_kind"] == source_kind)]["arm"])


def _ev_supplement(kind: str, source_kind: str = "R-only"):
    """Chapter 5's claims from its ``arms`` and ``results`` tables. Each contrast averages, per seed,
    over the independently trained generators of ``source_kind`` (R-only: Khosravi's setting)."""
    def ev(t):
        if "results" not in t or "arms" not in t:
            return "chapter 5 has not run"
        res, arms = t["results"], t["arms"]
        syn = arms[(arms["kind"] == "real+synthetic") & (arms["source_kind"] == source_kind)]
        if kind in ("gain", "duplicates"):
            percents = set(syn["percent"])
            if kind == "duplicates":
                percents &= set(arms.loc[arms["kind"] == "real+duplicates", "percent"])
            if not percents:
                return (f"no {source_kind} supplementation arm" if kind == "gain" else
                        f"no {source_kind} synthetic and duplicate arm of the same size")
            p = max(percents)
            mean, name = with_mean_arm(res, _ch5_arms(t, "real+synthetic", p, source_kind), f"real+synthetic {p}% (mean)")
            ref = "real" if kind == "gain" else arms.loc[(arms["kind"] == "real+duplicates") & (arms["percent"] == p), "arm"].iloc[0]
            return paired_contrast(mean, name, ref, "auroc", test_set="internal")
        only = arms[(arms["kind"] == "synthetic") & (arms["source_kind"] == source_kind) & arms["percent"].between(200, 300)]
        if only.empty:
            return "no synthetic-only arm at 200-300 % at this profile"
        p = int(only["percent"].max())
        mean, name = with_mean_arm(res, _ch5_arms(t, "synthetic", p, source_kind), f"synthetic {p}% (mean)")
        return paired_equivalence(mean, name, "real", "auroc", margin=0.02, test_set="internal")
    return ev


def _ev_mixing(t):
    if "mixing" not in t or "mixing_arms" not in t:
        return "no mixing-sources arm in this run (mixing_site is '')" if "results" in t else "chapter 5 has not run"
    names = t["mixing_arms"].set_index("kind")["arm"]
    return paired_contrast(t["mixing"], names["site real+synthetic"], names["site real"], "auroc", test_set="internal")


CLAIMS: tuple[Claim, ...] = (
    Claim("huijben-balance-sensitivity", "Huijben 2024", "Balancing the synthetic training set raises overall sensitivity",
          "0.02 → 0.59", "03_imbalance", "policy_shift",
          Rule("directional", "macro sensitivity at the fixed 0.5 threshold, synthetic-balanced − synthetic-natural, "
               "paired over seeds", +1, family="chapter 3"),
          evidence=_ev_balance("sensitivity")),
    Claim("huijben-balance-specificity", "Huijben 2024", "Balancing the synthetic training set lowers overall specificity",
          "0.99 → 0.71", "03_imbalance", "policy_shift",
          Rule("directional", "macro specificity at the fixed 0.5 threshold, synthetic-balanced − synthetic-natural, "
               "paired over seeds", -1, family="chapter 3"),
          evidence=_ev_balance("specificity")),
    Claim("control-minority-vs-oversampling", "Rajaraman 2024 (control added here)", "Synthetic minority images help "
          "more than rebalancing R by sampling", "not tested in the paper", "03_imbalance", "per_label_fixed",
          Rule("directional", "macro Youden's J at the Youden threshold, real+minority − real-oversampled (balanced "
               "sampling of R), paired over seeds", +1, family="chapter 3"),
          evidence=_ev_minority_vs_oversampling),
    Claim("huijben-pretraining-25", "Huijben 2024", "With unconditional pretraining, 25 % of the labels give synthetic "
          "data as useful as 100 %", "comparable AUROC", "04_pretraining", "utility",
          Rule("equivalence", "macro AUROC of synthetic-only training, pretrained + fine-tuned on 25 % − trained on 100 %",
               margin=0.02, family="chapter 4"),
          evidence=_ev_pretraining),
    Claim("huijben-fidelity-utility", "Huijben 2024", "Image fidelity does not predict classification utility",
          "metrics disagree", "06_fidelity_utility", "scatter",
          Rule("correlation", "Spearman ρ between quality (−FD) and synthetic-only AUROC over independently trained "
               "generators (not snapshots or samplers of one run); the claim is refuted by a positive ρ", -1,
               family="chapter 6", min_n=5),
          evidence=_ev_fidelity_utility),
    Claim("schaudt-gan-quality", "Schaudt 2023", "The GAN has the best image quality (lowest FD)", "GAN best FD",
          "07_comparison", "quality_vs_gain", Rule("ordering", "FD of the GAN − FD of the best other generator", -1, min_n=2),
          evidence=_ev_gan_quality),
    Claim("schaudt-quality-gain", "Schaudt 2023", "Image quality anti-correlates with downstream gain",
          "negative correlation", "07_comparison", "quality_vs_gain",
          Rule("correlation", "Spearman ρ between quality (−FD) and mean macro-AUROC gain over generators (with 4 "
               "generators the smallest exact p is 1/12, so at least 5 are needed)", -1, family="chapter 7", min_n=5),
          evidence=_ev_quality_gain),
    Claim("schaudt-fewshot-gain", "Schaudt 2023", "The fine-tuned (DreamBooth-like) model raises accuracy",
          "+0.52 points", "07_comparison", "gain_by_amount",
          Rule("directional", "macro AUROC, R + few-shot synthetic (largest amount) − R, paired over seeds", +1,
               family="chapter 7"),
          evidence=_ev_fewshot),
    Claim("rajaraman-minority-youden", "Rajaraman 2024", "Synthetic minority-class images raise the minority class's "
          "Youden's index", "p < 0.05", "08_img2img", "minority_metrics",
          Rule("directional", "Youden's J of the minority label, R + image-to-image minority set (strongest) − R, paired "
               "over seeds", +1, family="chapter 8"),
          evidence=_ev_minority_youden),
    Claim("control-img2img-vs-control", "Rajaraman 2024 (control added here)", "The translations help through the finding "
          "they carry, not through more images passed through the generator", "not tested in the paper", "08_img2img",
          "minority_metrics",
          Rule("directional", "Youden's J of the minority label, R + image-to-image minority set (strongest) − R + the control "
               "translations (same sources, strength and noise, normal condition), paired over seeds", +1,
               family="chapter 8"),
          evidence=lambda t: _ev_minority_youden(t, "control")),
    Claim("khosravi-supplement-gain", "Khosravi 2024", "Supplementing R with synthetic images raises AUROC",
          "up to +0.02 at 1000 %", "05_supplementation", "auroc_vs_percent",
          Rule("directional", "macro AUROC, R + synthetic at the largest percent − R, internal test, per seed the mean over "
               "the independently trained R-only generators, paired over seeds", +1,
               family="chapter 5"),
          evidence=_ev_supplement("gain")),
    Claim("khosravi-synthetic-vs-duplicates", "Khosravi 2024 (control added here)", "The gain comes from the generator, "
          "not from a larger (longer) training set", "not tested in the paper", "05_supplementation", "gain_vs_duplicates",
          Rule("directional", "macro AUROC, R + synthetic p % − R + duplicates p % (same count; largest p with both), "
               "internal test, per seed the mean over the R-only generators, paired over seeds", +1,
               family="chapter 5"),
          evidence=_ev_supplement("duplicates")),
    Claim("khosravi-synthetic-only", "Khosravi 2024", "Synthetic images alone match real ones at 200-300 %",
          "≈ real at 200-300 %", "05_supplementation", "auroc_vs_percent",
          Rule("equivalence", "macro AUROC, synthetic only (200-300 %) − R, internal test, per seed the mean over the "
               "R-only generators, paired over seeds", margin=0.02,
               family="chapter 5"),
          evidence=_ev_supplement("synthetic-only")),
    Claim("pool-synthetic-vs-duplicates", "Huijben 2024 × Khosravi 2024 (combined here)", "A generator pretrained on the "
          "unlabeled pool adds what duplicates of R do not", "not tested in either paper", "05_supplementation",
          "gain_vs_duplicates",
          Rule("directional", "macro AUROC, R + pool-pretrained synthetic p % − R + duplicates p % (largest p with both), "
               "internal test, paired over seeds", +1, family="chapter 5"),
          evidence=_ev_supplement("duplicates", "pool-pretrained")),
    Claim("khosravi-mixing-sources", "Khosravi 2024", "Real data of one source plus synthetic data conditioned on another "
          "source lifts the test on that other source", "0.76 → 0.80", "05_supplementation", "mixing",
          Rule("directional", "macro AUROC on the internal test set, (external site's real images + internal synthetic) − "
               "the site's real images alone, paired over seeds", +1, family="chapter 5"),
          evidence=_ev_mixing),
)


def claims_of(chapter: str) -> list[Claim]:
    return [c for c in CLAIMS if c.chapter == chapter]


def rules_markdown(chapter: str) -> str:
    """The rules of a chapter's claims, as printed in the chapter *before* its results."""
    lines = [f"* **{c.claim}** ({c.study}; paper: {c.paper_value}). Rule: {c.rule.text()}" for c in claims_of(chapter)]
    return "**Verdict rules, fixed before the results** (`cxrlib.verdicts`):\n\n" + "\n".join(lines)


def read_tables(run_dir: str | Path) -> dict:
    """A run folder's CSV tables by stem, and its ``config`` (config.json)."""
    d = Path(run_dir)
    tables: dict = {p.stem: pd.read_csv(p) for p in sorted(d.glob("*.csv"))}
    cfg = d / "config.json"
    tables["config"] = json.loads(cfg.read_text()) if cfg.is_file() else {}
    return tables


def evaluate(claims, tables_by_chapter: Mapping[str, Mapping]) -> pd.DataFrame:
    """Evaluate ``claims`` on ``{chapter: tables}`` (a chapter absent: its claims are inconclusive, not
    measured). p-values are Holm-adjusted within each rule family. Returns the scorecard table."""
    from .stats import adjust_pvalues

    rows, evidence = [], []
    for c in claims:
        tables = tables_by_chapter.get(c.chapter)
        try:
            ev = c.evidence(tables) if tables is not None else f"chapter {c.chapter} has not run"
        except (KeyError, ValueError, IndexError, TypeError) as e:  # a table without what the rule reads
            ev = f"the evidence could not be read from {c.chapter}'s tables ({type(e).__name__}: {e})"
        evidence.append(ev if isinstance(ev, Evidence) else None)
        rows.append({"claim_id": c.claim_id, "study": c.study, "claim": c.claim, "paper_value": c.paper_value,
                     "rule": c.rule.text(), "chapter": c.chapter, "figure": c.figure,
                     "reason": ev if isinstance(ev, str) else ""})
    p_adj = [math.nan] * len(rows)
    families: dict[str, list[int]] = {}
    for i, (c, ev) in enumerate(zip(claims, evidence)):
        if ev is not None and np.isfinite(ev.p) and ev.n >= c.rule.min_n:
            families.setdefault(c.rule.family or c.claim_id, []).append(i)
    for idx in families.values():
        for i, p in zip(idx, adjust_pvalues([evidence[i].p for i in idx], method="holm")):
            p_adj[i] = float(p)
    for row, c, ev, p in zip(rows, claims, evidence, p_adj):
        verdict, reason = decide(c.rule, ev, p)
        row.update(estimate=ev.estimate if ev else math.nan, ci_low=ev.ci_low if ev else math.nan,
                   ci_high=ev.ci_high if ev else math.nan, p_adj=p, n=ev.n if ev else 0, verdict=verdict,
                   reason=row["reason"] or (f"{reason} ({ev.test})" if ev and ev.test else reason))
    return pd.DataFrame(rows, columns=list(SCORECARD_COLUMNS))


def chapter_verdicts(chapter: str, run_dir: str | Path) -> pd.DataFrame:
    """The scorecard rows of one chapter, from the tables it saved in ``run_dir``."""
    return evaluate(claims_of(chapter), {chapter: read_tables(run_dir)})


def scorecard(run_dirs: Mapping[str, str | Path]) -> pd.DataFrame:
    """Every claim of :data:`CLAIMS`, from ``{chapter stem: run folder}`` (the chapters of one build)."""
    return evaluate(CLAIMS, {ch: read_tables(d) for ch, d in run_dirs.items()})


def scorecard_markdown(card: pd.DataFrame, profile: str, built: set[str] | frozenset = frozenset()) -> str:
    """The book's scorecard page (``built``: the chapter stems in the book, linked)."""
    def num(x):
        return "" if not np.isfinite(x) else f"{x:+.3f}"

    lines = ["# Reproduction scorecard", "",
             f"One row per claim of the four seed studies, judged at profile `{profile}` by the rule written in "
             "`cxrlib.verdicts` before any result (listed under *The rules*). *inconclusive* means the data neither show "
             "the claim nor exclude it, or that it was not measured at this profile (the reason says which). "
             + ("The `cpu` profile is the book that fits an hour on 2 cores: it holds each chapter's primary contrast, and "
                "the claims it does not measure are measured by `cpu-full` (the complete grids; `cxr book --profile "
                "cpu-full`). " if profile == "cpu" else "")
             + f"The table is also `scorecard-{profile}.csv` in the runs folder.", "",
             "| claim | paper | verdict | estimate [95 % CI] | adj. p | n | chapter |",
             "|---|---|---|---|---|---|---|"]
    for r in card.itertuples():
        ci = f" [{num(r.ci_low)}, {num(r.ci_high)}]" if np.isfinite(r.ci_low) and np.isfinite(r.ci_high) else ""
        est = f"{num(r.estimate)}{ci}" if np.isfinite(r.estimate) else "—"
        p = f"{r.p_adj:.3g}" if np.isfinite(r.p_adj) else "—"
        link = f"{{doc}}`{r.chapter}`" if r.chapter in built else f"{r.chapter} (not in this build)"
        if r.figure and r.chapter in built:
            link += f", figure `{r.figure}`"
        lines.append(f"| {r.claim} ({r.study}) | {r.paper_value} | **{r.verdict}** | {est} | {p} | {r.n} | {link} |")
    lines += ["", "## Why each verdict", ""] + [f"* `{r.claim_id}` — **{r.verdict}**: {r.reason}." for r in card.itertuples()]
    lines += ["", "## The rules", ""] + [f"* `{r.claim_id}`: {r.rule}" for r in card.itertuples()]
    return "\n".join(lines) + "\n"


def verdict_markdown(card: pd.DataFrame) -> str:
    """A chapter's verdicts (rows of :func:`chapter_verdicts`) as a list, each with its numbers."""
    def num(x):
        return "—" if not np.isfinite(x) else f"{x:+.3f}"

    lines = []
    for r in card.itertuples():
        p = f", adjusted p = {r.p_adj:.3g}" if np.isfinite(r.p_adj) else ""
        lines.append(f"* **{r.claim}** ({r.study}; paper: {r.paper_value}): **{r.verdict}**. Estimate {num(r.estimate)} "
                     f"[{num(r.ci_low)}, {num(r.ci_high)}]{p}, n = {r.n}: {r.reason}.")
    return "**Verdicts by the rules above** (these rows go to the book's scorecard):\n\n" + "\n".join(lines)
