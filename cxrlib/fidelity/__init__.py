"""Fidelity, diversity, memorisation and label-consistency audits of synthetic image sets.

Huijben 2024 and Schaudt 2023 found that image-quality metrics do not predict downstream benefit;
this package measures fidelity carefully (sound Fréchet computation, unbiased KID, bootstrap CIs, an
n on every number, warnings below a documented minimum) so the fidelity-vs-utility experiment means
something.

============================== =================================================================
module                         contents
============================== =================================================================
:mod:`.features`               ``extract_features`` and the feature spaces (``study`` default,
                               ``xrv`` = FXD, ``inception`` = FID; no silent substitutes)
:mod:`.metrics`                FD, KID, bootstrap CIs, precision/recall/density/coverage, ``MIN_N``
:mod:`.diversity`              mean pairwise MS-SSIM (small-image settings documented)
:mod:`.memorization`           nearest training image, held-out-calibrated replica flags, figure
:mod:`.labels`                 oracle label consistency (per-label AUROC), paired label
                               effects (counterfactual twins) and filtering
:mod:`.report`                 ``fidelity_report``: one tidy table of everything
============================== =================================================================
"""

from .diversity import mean_pairwise_ms_ssim, ms_ssim_settings
from .features import (
    EXTRACTOR_NAMES,
    FeatureExtractor,
    FeatureWeightsUnavailable,
    PenultimateFeatures,
    extract_features,
    get_extractor,
    inception_extractor,
    study_extractor,
    xrv_extractor,
)
from .labels import label_consistency, oracle_agreement_mask, paired_label_effect
from .distances import nearest_neighbors, pairwise_distances
from .memorization import ReplicaAudit, memorization_audit, pixel_vectors, plot_closest_pairs, replica_audit
from .metrics import (
    MIN_N,
    SmallSampleWarning,
    bootstrap_ci,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_distance,
    precision_recall_density_coverage,
)
from .report import METRIC_DESCRIPTIONS, REPORT_COLUMNS, fidelity_report

__all__ = [
    "EXTRACTOR_NAMES",
    "METRIC_DESCRIPTIONS",
    "MIN_N",
    "REPORT_COLUMNS",
    "FeatureExtractor",
    "FeatureWeightsUnavailable",
    "PenultimateFeatures",
    "ReplicaAudit",
    "SmallSampleWarning",
    "bootstrap_ci",
    "extract_features",
    "fidelity_report",
    "frechet_distance",
    "frechet_distance_from_stats",
    "get_extractor",
    "inception_extractor",
    "kernel_distance",
    "label_consistency",
    "mean_pairwise_ms_ssim",
    "memorization_audit",
    "ms_ssim_settings",
    "nearest_neighbors",
    "pairwise_distances",
    "oracle_agreement_mask",
    "paired_label_effect",
    "pixel_vectors",
    "plot_closest_pairs",
    "precision_recall_density_coverage",
    "replica_audit",
    "study_extractor",
    "xrv_extractor",
]
