"""The statistics of the study: DeLong, cluster bootstrap, McNemar, multiplicity, multi-seed summaries,
and the one results-table format every experiment writes.

Results table
-------------
Every experiment reports its numbers as one tidy table (:data:`RESULT_COLUMNS`), **one row per
arm × label × metric × seed**:

================= ==================================================================================
``arm``           the training arm (e.g. ``"real"``, ``"real+synthetic 200%"``)
``label``         a label name, ``"macro"`` (mean over labels) or ``"micro"``
``metric``        a :data:`cxrlib.metrics.METRICS` name, or ``"auroc_diff"`` (AUROC of the arm minus
                  that of ``reference_arm`` on the same test images)
``seed``          the training seed of the run, or ``"pooled"`` for a summary over seeds
``estimate``      the point estimate on the full test set (pooled: the mean over seeds; mixed model:
                  the fitted coefficient)
``ci_low``,       the ``1 − alpha`` confidence interval (``ci_method`` says how)
``ci_high``
``p_value``       the test of this arm against ``reference_arm`` for this label and metric (``test``
                  says which); NaN for the reference arm itself
``p_adj``         ``p_value`` adjusted for multiplicity (Holm by default) within one metric across
                  all non-reference arms and labels (``"macro"`` included) of the table
``reference_arm`` the arm the p-value compares against
``n``             test images behind the estimate (pooled rows: the mean over seeds)
``n_pos``         positives among them (NaN for ``"macro"``)
``n_seeds``       1, or the number of seeds a pooled row summarizes
``threshold``     the decision threshold of a threshold metric (NaN otherwise)
``threshold_policy`` the policy that chose it (``fixed``/``youden``/``prevalence``/``sensitivity``)
``ci_method``     ``bootstrap-percentile``, ``bootstrap-bca``, ``t`` or ``mixedlm``
``test``          ``delong``, ``mcnemar``, ``bootstrap``, ``paired_t``, ``wilcoxon``, ``mixedlm`` or ``""``
================= ==================================================================================

:func:`compare_arms` (:mod:`.table`) produces it from per-arm test predictions; :func:`summarize_seeds` and
:func:`mixed_model_arms` (:mod:`.seeds`) turn several seeds' tables into ``"pooled"`` rows. The tests and
intervals are in :mod:`.inference`.

Statistical choices (and their limits)
--------------------------------------
* **AUROC p-values**: the paired DeLong test (DeLong et al. 1988) by the fast algorithm of Sun & Xu
  (2014) with midranks for ties. **Sensitivity / specificity / accuracy**: McNemar's test on the
  positives / negatives / all images (exact binomial when fewer than 25 discordant pairs). **Other
  metrics** (AUPRC, PPV, NPV, BA, F1, MCC, κ, Youden, Brier, ECE, and every ``"macro"`` value): the
  two-sided paired-bootstrap Wald test ``p = 2 Φ(−|Δ| / sd(Δ*))`` of the observed difference Δ
  with the standard deviation of the ``B`` resampled differences Δ* as its standard error
  (Efron & Tibshirani 1993, §16). The percentile p-value
  ``min(1, 2 (1 + min(#{Δ* ≤ 0}, #{Δ* ≥ 0})) / (B + 1))`` (:func:`bootstrap_pvalue`) cannot go below
  ``2 / (B + 1)`` (0.0066 at B = 300), which no multiplicity correction over many labels survives.
* **Multiplicity**: one family per metric for the per-label rows and a separate one for the
  ``"macro"`` rows (the primary endpoint is not diluted by the labels).
* **CIs**: a patient-level (cluster) bootstrap: patients, not images, are resampled, so follow-up
  studies of one patient stay together; per label it is stratified by whether the patient has a
  positive image, so every resample keeps the label's positives (as pROC's stratified bootstrap).
  The ``"macro"`` rows resample patients without stratification and drop resamples in which a
  label has no positives (``n_boot`` counts the kept ones in the log).
* DeLong and McNemar treat images as independent; with several studies per patient they are
  slightly liberal, and the patient-level bootstrap CIs are the cluster-aware quantities.
"""

from .seeds import SIGNED_METRICS, metric_range, mixed_model_arms, paired_seed_test, seed_summary, summarize_seeds
from .table import RESULT_COLUMNS, check_results_table, compare_arms
from .inference import (P_ADJUST_METHODS, BootstrapResult, ClusterResampler, DeLongResult, adjust_pvalues, bootstrap_ci,
                    bootstrap_pvalue, bootstrap_wald_pvalue, delong_ci, delong_covariance, delong_test, mcnemar_test)

__all__ = [
    "RESULT_COLUMNS", "P_ADJUST_METHODS", "DeLongResult", "BootstrapResult", "ClusterResampler", "adjust_pvalues",
    "bootstrap_ci", "bootstrap_pvalue", "bootstrap_wald_pvalue", "check_results_table", "compare_arms", "delong_ci",
    "delong_covariance", "delong_test", "mcnemar_test", "metric_range", "mixed_model_arms", "paired_seed_test",
    "seed_summary", "summarize_seeds", "SIGNED_METRICS",
]
