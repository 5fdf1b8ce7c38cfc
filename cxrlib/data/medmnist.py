"""MedMNIST ``.npz`` files (``pneumoniamnist.npz``, ``chestmnist.npz``: keys ``{train,val,test}_{images,labels}``),
read without pickles. MedMNIST ships no patient ids: each image is its own patient; its splits are MedMNIST's.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .base import CXRDataset
from .files import NO_SKIPS, DataError, show_path, to_square
from .kermany import KERMANY_SPLITS
from .labels import LabelPolicy
from .real import CHESTMNIST_LABELS, PNEUMONIAMNIST_LABELS

# --- MedMNIST -------------------------------------------------------------------------------------
MEDMNIST_LABELS = {"pneumoniamnist": PNEUMONIAMNIST_LABELS, "chestmnist": CHESTMNIST_LABELS}


def medmnist_file(path, flavor: str) -> Path:
    """``path`` itself if a file, else ``path/<flavor>.npz`` or ``path/<flavor>_<N>.npz`` (MedMNIST+)."""
    if path is None:
        raise FileNotFoundError(f"{flavor}: root=None; pass the .npz file or its folder (the medmnist package downloads it as ~/.medmnist/{flavor}.npz)")
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"{flavor} file {show_path(p)!r} does not exist; expected {flavor}.npz or its folder")
    cands = sorted(p.glob(f"{flavor}.npz")) + sorted(p.glob(f"{flavor}_*.npz"))
    if not cands:
        raise FileNotFoundError(f"no {flavor}.npz (or {flavor}_<size>.npz) in {show_path(p)!r}")
    return cands[0]


def medmnist_arrays(path, flavor: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, H, W], labels [N, L])`` of one split of a MedMNIST ``.npz`` (no pickles)."""
    if flavor not in MEDMNIST_LABELS:
        raise ValueError(f"MedMNIST flavor {flavor!r}; expected one of {list(MEDMNIST_LABELS)}")
    if split not in KERMANY_SPLITS:
        raise ValueError(f"split={split!r}; MedMNIST files hold {list(KERMANY_SPLITS)}")
    f = medmnist_file(path, flavor)
    n_labels = len(MEDMNIST_LABELS[flavor])
    try:
        with np.load(f, allow_pickle=False) as z:
            keys = set(z.files)
            need = {f"{split}_images", f"{split}_labels"}
            if not need <= keys:
                raise DataError(f"{show_path(f)!r} lacks the arrays {sorted(need - keys)}; expected a MedMNIST .npz with {{train,val,test}}_{{images,labels}} (found {sorted(keys)})")
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{show_path(f)!r} is not a readable .npz file: {e}") from None
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{show_path(f)!r}: cannot read arrays without pickle ({e})") from None
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.mean(axis=-1).round().astype(np.uint8) if images.shape[-1] == 3 else images[..., 0]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{show_path(f)!r}: {split}_images has shape {images.shape} dtype {images.dtype}; expected uint8 [N, H, W]")
    labels = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
    if labels.shape != (len(images), n_labels):
        raise DataError(f"{show_path(f)!r}: {split}_labels has shape {labels.shape}; expected ({len(images)}, {n_labels}) for {flavor} (is this the right file?)")
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{show_path(f)!r}: {split}_labels holds values {sorted(np.unique(labels).tolist())[:5]}; expected 0/1")
    return images, labels.astype(np.float64)


class NpzDataset(CXRDataset):
    """One split of a MedMNIST ``.npz``, resized on the fly (MedMNIST ships no patient ids: each image
    is its own ``patient_id``; its splits are MedMNIST's own)."""

    def __init__(self, path, flavor: str, split: str, *, size: int = 64, labels: Sequence[str] | None = None, policy: LabelPolicy = LabelPolicy(), n_max: int | None = None):
        images, y = medmnist_arrays(path, flavor, split)
        if n_max is not None:
            images, y = images[:n_max], y[:n_max]
        names = MEDMNIST_LABELS[flavor]
        self.images = images
        meta = pd.DataFrame(
            {
                "image_id": [f"{split}/{i}" for i in range(len(images))],
                "patient_id": [f"{split}{i}" for i in range(len(images))],
                "study": "",
                "site": flavor,
                "view": "",
                "sex": None,
                "age": np.nan,
                "split": split,
            }
        )
        self.meta = pd.concat([meta, pd.DataFrame(y, columns=list(names))], axis=1)
        self.label_names = tuple(labels) if labels is not None else names
        self.policy = policy
        self.size = int(size)
        self.name = flavor
        self.skipped = NO_SKIPS

    def load_image(self, i: int) -> np.ndarray:
        return np.asarray(to_square(Image.fromarray(self.images[i], mode="L"), self.size), dtype=np.uint8)
