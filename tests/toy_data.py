"""A random in-memory dataset for tests that need training data but no particular content."""

import numpy as np
import pandas as pd

from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import CHEXPERT_LABELS


def toy_set(n: int, seed: int, size: int = 16) -> ArrayDataset:
    """``n`` random uint8 images of ``size`` px with random CheXpert labels, patients ``p<seed>-<i>``."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"patient_id": [f"p{seed}-{i}" for i in range(n)], "sex": "F", "age": 50.0})
    for lab in CHEXPERT_LABELS:
        meta[lab] = rng.integers(0, 2, n).astype(float)
    return ArrayDataset(rng.integers(0, 256, (n, size, size), dtype=np.uint8), meta, name=f"toy{seed}-{n}")
