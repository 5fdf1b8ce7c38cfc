"""The one dataset interface every loader (phantom and real) implements.

A sample is a dict:

============== ===================================================================================
``image``      float32 tensor ``[1, S, S]`` in ``[0, 1]`` (0 = black/air, 1 = white/bone), S = ``size``
``labels``     float32 tensor ``[L]``: targets after the :class:`~cxrlib.data.labels.LabelPolicy`
``label_mask`` bool tensor ``[L]``: False where the policy says "ignore" (uncertain / not annotated)
``sex``        int: 0 female, 1 male, -1 unknown
``age``        float32: years, NaN if unknown
``patient_id`` str (splits are always grouped by patient)
``site``       str: acquisition site / source dataset
``view``       str: "PA", "AP", ... or "" if unknown
``index``      int: row in ``meta``
============== ===================================================================================

``meta`` is a DataFrame with one row per image and the columns ``image_id, patient_id, study, site,
view, sex ("F"/"M"/None), age`` plus one column per label with the *raw* values (1, 0, -1, NaN).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .labels import CHEXPERT_LABELS, LabelPolicy

META_COLUMNS = ("image_id", "patient_id", "study", "site", "view", "sex", "age")


def _sex_code(s) -> int:
    if isinstance(s, str):
        s = s.strip().upper()[:1]
        return {"F": 0, "M": 1}.get(s, -1)
    return -1


class CXRDataset(Dataset):
    """Base class: subclasses set ``meta``, ``label_names``, ``size``, ``policy``, ``name`` and
    implement :meth:`load_image` returning a 2-D uint8 (or float in [0, 1]) array already at ``size``."""

    name: str = "dataset"
    label_names: tuple[str, ...] = CHEXPERT_LABELS
    size: int = 64
    policy: LabelPolicy = LabelPolicy()
    meta: pd.DataFrame

    # -- to implement ----------------------------------------------------------------------------
    def load_image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    # -- common ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.meta)

    def raw_labels(self) -> np.ndarray:
        return self.meta[list(self.label_names)].to_numpy(dtype=np.float64)

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """All labels after the policy: ``(y float32 [N, L], mask bool [N, L])``."""
        return self.policy.apply(self.raw_labels())

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0 or i >= len(self):
            raise IndexError(f"index {i} out of range for {self.name} with {len(self)} images")
        img = np.asarray(self.load_image(i))
        if img.dtype == np.uint8:
            x = torch.from_numpy(img.astype(np.float32) / 255.0)
        else:
            x = torch.from_numpy(np.clip(img.astype(np.float32), 0.0, 1.0))
        row = self.meta.iloc[i]
        y, m = self.policy.apply(row[list(self.label_names)].to_numpy(dtype=np.float64)[None])
        return {
            "image": x[None],
            "labels": torch.from_numpy(y[0]),
            "label_mask": torch.from_numpy(m[0]),
            "sex": _sex_code(row.get("sex")),
            "age": float(row["age"]) if pd.notna(row.get("age")) else float("nan"),
            "patient_id": str(row["patient_id"]),
            "site": str(row.get("site", self.name)),
            "view": str(row.get("view") or ""),
            "index": i,
        }

    def subset(self, indices: Sequence[int]) -> "ArrayDataset":
        """An in-memory subset (images materialized), preserving meta rows and label policy."""
        idx = np.asarray(indices, dtype=np.int64)
        images = np.stack([self._uint8(i) for i in idx]) if len(idx) else np.zeros((0, self.size, self.size), np.uint8)
        return ArrayDataset(images, self.meta.iloc[idx].reset_index(drop=True), self.label_names, self.policy, name=self.name)

    def _uint8(self, i: int) -> np.ndarray:
        img = np.asarray(self.load_image(i))
        if img.dtype != np.uint8:
            img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        return img

    def to_tensors(self, progress: bool = False):
        """Materialize everything: ``(images uint8 [N,1,S,S], y float32 [N,L], mask bool [N,L])``."""
        from ..utils import tqdm

        it = range(len(self))
        if progress:
            it = tqdm(it, desc=f"loading {self.name}", unit="img")
        imgs = np.stack([self._uint8(i) for i in it]) if len(self) else np.zeros((0, self.size, self.size), np.uint8)
        y, m = self.targets()
        return torch.from_numpy(imgs)[:, None], torch.from_numpy(y), torch.from_numpy(m)

    def demographics(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sex int [N] in {0,1,-1}, age float32 [N] with NaN unknown)``."""
        sex = np.array([_sex_code(s) for s in self.meta["sex"]], dtype=np.int64)
        age = pd.to_numeric(self.meta["age"], errors="coerce").to_numpy(dtype=np.float32)
        return sex, age


class ArrayDataset(CXRDataset):
    """A dataset held in memory: ``images`` uint8 ``[N, S, S]`` (or ``[N, 1, S, S]``) plus ``meta``."""

    def __init__(self, images, meta: pd.DataFrame, label_names=CHEXPERT_LABELS, policy: LabelPolicy = LabelPolicy(), name: str = "array"):
        images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if images.ndim == 4:
            if images.shape[1] != 1:
                raise ValueError(f"ArrayDataset expects 1-channel images, got shape {images.shape}")
            images = images[:, 0]
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"ArrayDataset expects square images [N, S, S], got shape {images.shape}")
        if len(images) != len(meta):
            raise ValueError(f"ArrayDataset: {len(images)} images but {len(meta)} meta rows")
        missing = [c for c in ("patient_id", *label_names) if c not in meta.columns]
        if missing:
            raise ValueError(f"ArrayDataset meta lacks columns {missing}")
        self.images = images
        self.meta = meta.reset_index(drop=True)
        self.label_names = tuple(label_names)
        self.policy = policy
        self.size = int(images.shape[-1])
        self.name = name

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def subset(self, indices: Sequence[int]) -> "ArrayDataset":
        """:meth:`CXRDataset.subset` in one indexing of the image array (the same bytes, without a Python
        loop over images: a plan's million-image stand-ins are subset in milliseconds)."""
        if type(self).load_image is not ArrayDataset.load_image:  # a subclass that transforms images: the generic path
            return super().subset(indices)
        idx = np.asarray(indices, dtype=np.int64)
        imgs = self.images[idx]
        if imgs.dtype != np.uint8:
            imgs = np.round(np.clip(imgs, 0, 1) * 255).astype(np.uint8)
        return ArrayDataset(imgs, self.meta.iloc[idx].reset_index(drop=True), self.label_names, self.policy, name=self.name)

    def to_tensors(self, progress: bool = False):
        y, m = self.targets()
        imgs = self.images if self.images.dtype == np.uint8 else np.round(np.clip(self.images, 0, 1) * 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(imgs))[:, None], torch.from_numpy(y), torch.from_numpy(m)


def concat(datasets: Sequence[CXRDataset], name: str = "concat") -> ArrayDataset:
    """Concatenate datasets (materialized) that share size and label names."""
    if not datasets:
        raise ValueError("concat() needs at least one dataset")
    sizes = {d.size for d in datasets}
    names = {tuple(d.label_names) for d in datasets}
    if len(sizes) != 1 or len(names) != 1:
        raise ValueError(f"concat(): datasets differ in size {sizes} or label names")
    imgs, metas = [], []
    for d in datasets:
        t, _, _ = d.to_tensors()
        imgs.append(t[:, 0].numpy())
        metas.append(d.meta)
    return ArrayDataset(np.concatenate(imgs), pd.concat(metas, ignore_index=True), datasets[0].label_names, datasets[0].policy, name=name)
