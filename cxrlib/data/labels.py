"""CheXpert's 14 observations and the policy that turns raw label values into training targets.

Raw label values follow CheXpert (and torchxrayvision): ``1`` positive, ``0`` negative, ``-1``
uncertain, ``NaN`` not mentioned / not annotated. A :class:`LabelPolicy` declares what each becomes:

* ``uncertain``: ``"zeros"`` (U-Zeros), ``"ones"`` (U-Ones) or ``"ignore"`` (masked out of the loss
  and of the metrics);
* ``missing``: ``"zeros"`` (CheXpert's convention: an unmentioned finding is taken as absent) or
  ``"ignore"`` (the right choice for a label a site does not annotate at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five CheXpert competition labels (Irvin et al. 2019), a common evaluation subset.
COMPETITION_LABELS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


@dataclass(frozen=True)
class LabelPolicy:
    uncertain: Literal["zeros", "ones", "ignore"] = "zeros"
    missing: Literal["zeros", "ignore"] = "zeros"

    def __post_init__(self):
        if self.uncertain not in ("zeros", "ones", "ignore"):
            raise ValueError(f"LabelPolicy.uncertain={self.uncertain!r}: expected 'zeros', 'ones' or 'ignore'")
        if self.missing not in ("zeros", "ignore"):
            raise ValueError(f"LabelPolicy.missing={self.missing!r}: expected 'zeros' or 'ignore'")

    def apply(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map raw values (1, 0, -1, NaN) to ``(targets float32, mask bool)`` of the same shape."""
        raw = np.asarray(raw, dtype=np.float64)
        bad = ~(np.isnan(raw) | np.isin(raw, (1.0, 0.0, -1.0)))
        if bad.any():
            vals = sorted(set(raw[bad].tolist()))[:5]
            raise ValueError(f"label values must be 1, 0, -1 or empty (NaN); found {vals}")
        y = np.where(raw == 1.0, 1.0, 0.0)
        mask = np.ones(raw.shape, dtype=bool)
        unc = raw == -1.0
        if self.uncertain == "ones":
            y[unc] = 1.0
        elif self.uncertain == "ignore":
            mask[unc] = False
        if self.missing == "ignore":
            mask[np.isnan(raw)] = False
        return y.astype(np.float32), mask

    def describe(self) -> str:
        return f"uncertain (-1) -> {self.uncertain}; missing (NaN) -> {self.missing}"


def check_label_names(names, allowed=CHEXPERT_LABELS, where: str = "labels") -> tuple[str, ...]:
    """Validate a list of label names, naming the unknown one and listing the valid ones."""
    import difflib

    names = tuple(names)
    for n in names:
        if n not in allowed:
            close = difflib.get_close_matches(n, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown label {n!r}.{hint} Valid labels: {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: duplicate label names in {list(names)}")
    return names
