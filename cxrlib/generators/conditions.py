"""Condition tables: which image a generator is asked for, one row per image.

A *conditions table* has one row per image, one column per label (1 present, 0 absent, NaN unknown
= the label's null embedding), ``sex`` ("F"/"M"/None) and ``age`` (years, NaN unknown), plus
``source_row`` when drawn from a dataset:

* :func:`explicit_conditions` — given label vectors / demographics;
* :func:`prevalence_conditions` — rows of a dataset drawn jointly (labels *and* demographics), so the
  training prevalence and the co-occurrence of findings are preserved;
* :func:`balanced_conditions` — an equal number of images positive for each label;
* :func:`minority_conditions` — images positive for one (minority) label;
* :func:`flipped_conditions` — counterfactual twins: the same rows with one label switched off.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..data.base import CXRDataset
from ..data.labels import check_label_names
from ..utils import derive_seed, torch_generator

# --- condition specs -----------------------------------------------------------------------------
def _table(y: np.ndarray, label_names: Sequence[str], sex, age, source_row=None) -> pd.DataFrame:
    t = pd.DataFrame(np.asarray(y, dtype=np.float64), columns=list(label_names))
    t["sex"] = list(sex)
    t["age"] = np.asarray(age, dtype=np.float64)
    if source_row is not None:
        t["source_row"] = np.asarray(source_row, dtype=np.int64)
    return t


def explicit_conditions(labels, *, label_names: Sequence[str], sex=None, age=None) -> pd.DataFrame:
    """Conditions from label vectors ``labels`` [N, L] (1 / 0 / NaN unknown) and optional ``sex``
    ("F"/"M"/None per image, or one value for all) and ``age`` (years or NaN)."""
    label_names = check_label_names(label_names, where="label_names")
    y = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    if y.shape[1] != len(label_names):
        raise ValueError(f"labels have {y.shape[1]} columns but label_names has {len(label_names)}: {list(label_names)}")
    n = len(y)
    sex = [sex] * n if sex is None or isinstance(sex, str) else list(sex)
    age = np.full(n, np.nan if age is None else age, dtype=np.float64) if age is None or np.isscalar(age) else np.asarray(age, np.float64)
    if len(sex) != n or len(age) != n:
        raise ValueError(f"{n} label vectors but {len(sex)} sex and {len(age)} age values")
    bad = [s for s in sex if s not in ("F", "M", None)]
    if bad:
        raise ValueError(f"sex values must be 'F', 'M' or None; got {bad[:3]}")
    return _table(y, label_names, sex, age)


def _source_arrays(source: CXRDataset, label_names: Sequence[str]):
    """Labels of ``source`` after its policy (NaN where masked), and its sex/age as table values."""
    label_names = check_label_names(label_names, allowed=tuple(source.label_names), where="label_names")
    y, mask = source.targets()
    col = [list(source.label_names).index(n) for n in label_names]
    y = np.where(mask[:, col], y[:, col], np.nan)
    sex_code, age = source.demographics()
    sex = np.array([{0: "F", 1: "M"}.get(int(s)) for s in sex_code], dtype=object)
    return label_names, y, sex, age


def prevalence_conditions(source: CXRDataset, n: int, *, label_names: Sequence[str], seed: int) -> pd.DataFrame:
    """``n`` rows of ``source`` drawn uniformly with replacement: labels and demographics jointly."""
    label_names, y, sex, age = _source_arrays(source, label_names)
    if len(y) == 0:
        raise ValueError(f"prevalence_conditions: source {source.name} is empty")
    rows = torch.randint(len(y), (n,), generator=torch_generator(derive_seed(seed, "prevalence"))).numpy()
    return _table(y[rows], label_names, sex[rows], age[rows], rows)


def _positive_rows(y: np.ndarray, j: int, label: str, source: CXRDataset) -> np.ndarray:
    rows = np.flatnonzero(y[:, j] == 1.0)
    if len(rows) == 0:
        raise ValueError(f"label {label!r} has no positive image in {source.name}; cannot sample conditions for it")
    return rows


def balanced_conditions(source: CXRDataset, n: int, *, label_names: Sequence[str], seed: int) -> pd.DataFrame:
    """``n`` rows, image k positive for ``label_names[k % L]``: each drawn from the source rows positive
    for that label (labels and demographics jointly, so co-occurring findings stay realistic)."""
    label_names, y, sex, age = _source_arrays(source, label_names)
    g = torch_generator(derive_seed(seed, "balanced"))
    pools = [_positive_rows(y, j, name, source) for j, name in enumerate(label_names)]
    rows = np.array([pools[k % len(pools)][torch.randint(len(pools[k % len(pools)]), (1,), generator=g).item()] for k in range(n)], dtype=np.int64)
    return _table(y[rows], label_names, sex[rows], age[rows], rows)


def minority_conditions(source: CXRDataset, label: str, n: int, *, label_names: Sequence[str], seed: int, others: str = "joint") -> pd.DataFrame:
    """``n`` images positive for ``label``. ``others="joint"``: the other labels and demographics come
    from a source row positive for ``label`` (realistic co-occurrence); ``"absent"``: only ``label``
    is present, the others 0 (demographics still from such a row)."""
    label_names, y, sex, age = _source_arrays(source, label_names)
    if label not in label_names:
        raise ValueError(f"label {label!r} is not among label_names {list(label_names)}")
    if others not in ("joint", "absent"):
        raise ValueError(f"others={others!r}: expected 'joint' or 'absent'")
    j = list(label_names).index(label)
    pool = _positive_rows(y, j, label, source)
    rows = pool[torch.randint(len(pool), (n,), generator=torch_generator(derive_seed(seed, "minority", label))).numpy()]
    yy = y[rows].copy()
    if others == "absent":
        yy[:] = 0.0
        yy[:, j] = 1.0
    return _table(yy, label_names, sex[rows], age[rows], rows)


def flipped_conditions(source: CXRDataset, label: str, n: int, *, label_names: Sequence[str], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counterfactual twins for ``label``: ``(on, off)``, ``n`` rows each. ``on`` is
    :func:`minority_conditions` (rows of ``source`` positive for ``label``, the other labels and the
    demographics jointly); ``off`` is the same table with only ``label`` set to 0. Sampled with the same
    seed, twin *i* of both sets shares its noise, so the pair differs only by that label
    (:func:`cxrlib.fidelity.paired_label_effect`)."""
    on = minority_conditions(source, label, n, label_names=label_names, seed=seed)
    off = on.copy()
    off[label] = 0.0
    return on, off
