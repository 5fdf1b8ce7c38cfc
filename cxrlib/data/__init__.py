"""Datasets: the embedded phantom and the real CXR datasets, one interface (:class:`CXRDataset`).

    from cxrlib.data import load_dataset
    train = load_dataset("phantom", split="train", size=64)                 # embedded default
    train = load_dataset("chexpert", root="/data/CheXpert-v1.0-small", split="train",
                         labeled_fraction=0.25, policy=LabelPolicy(uncertain="ignore"))

Splits come only from the frozen manifests in ``data_manifests/`` (:mod:`cxrlib.data.manifests`),
except where the dataset ships its own (Kermany's published folders, MedMNIST's ``.npz`` splits,
MIMIC's official ``split.csv`` when no manifest is given). Label mapping and image decoding:
:mod:`cxrlib.data.real` (and :mod:`.files`, :mod:`.kermany`, :mod:`.medmnist`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from .base import ArrayDataset, CXRDataset, concat
from .labels import CHEXPERT_LABELS, COMPETITION_LABELS, LabelPolicy, check_label_names
from .manifests import build_splits, check_manifest, find_manifest, read_manifest, select, verify_files, write_manifest
from .files import NO_SKIPS, DataError, ImageReadError, read_image
from .medmnist import MEDMNIST_LABELS, NpzDataset
from .real import FRONTAL_VIEWS, KERMANY_LABELS, NIH_ALL_LABELS, NIH_LABELS, FileDataset

DATASETS = ("phantom", "chexpert", "mimic", "nih", "kermany", "pneumoniamnist", "chestmnist")
# The labels a dataset gives by default, and every label it can give (NIH can be asked for CheXpert names).
DEFAULT_LABELS: dict[str, tuple[str, ...]] = {
    "phantom": CHEXPERT_LABELS,
    "chexpert": CHEXPERT_LABELS,
    "mimic": CHEXPERT_LABELS,
    "nih": NIH_LABELS,
    "kermany": KERMANY_LABELS,
    **MEDMNIST_LABELS,
}
AVAILABLE_LABELS: dict[str, tuple[str, ...]] = {
    **DEFAULT_LABELS,
    "nih": (*NIH_ALL_LABELS, *(n for n in CHEXPERT_LABELS if n not in NIH_ALL_LABELS)),
}

__all__ = [
    "ArrayDataset", "CXRDataset", "concat", "CHEXPERT_LABELS", "COMPETITION_LABELS", "LabelPolicy",
    "DATASETS", "DEFAULT_LABELS", "DataError", "check_data_params", "ImageReadError", "load_dataset", "load_meta",
    "build_splits", "check_manifest", "read_manifest", "write_manifest", "verify_files", "read_image",
]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Expected one of {', '.join(DATASETS)}")


def check_data_params(dataset: str, labels: Sequence[str]) -> None:
    """Check an experiment config's ``dataset`` and ``labels`` together, before anything runs: a
    :class:`~cxrlib.config.ConfigError` names the parameter and lists the valid values."""
    from ..config import ConfigError

    try:
        _check_name(dataset)
    except ValueError as e:
        raise ConfigError(f"parameter 'dataset': {e}") from None
    try:
        check_label_names(labels, allowed=AVAILABLE_LABELS[dataset], where=f"parameter 'labels' (dataset {dataset!r})")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _labels(name: str, labels: Sequence[str] | None) -> tuple[str, ...]:
    if labels is None:
        return DEFAULT_LABELS[name]
    return check_label_names(labels, allowed=AVAILABLE_LABELS[name], where=f"labels for dataset {name!r}")


def _apply_manifest(meta: pd.DataFrame, mdf: pd.DataFrame, *, split, labeled_fraction, where: str, on_error: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of ``meta`` selected by the manifest (its split, its labeled subset), in manifest order.

    Manifest rows absent from the metadata are an error (or, skip, counted); metadata rows absent
    from the manifest are simply not part of the study's dataset (e.g. lateral views)."""
    from .files import skips_table

    sel = select(mdf, split, labeled_fraction, where=where)[["image_id", "patient_id", "split", "labeled_frac"]]
    meta = meta.drop(columns=[c for c in ("split", "labeled_frac") if c in meta.columns])
    merged = sel.merge(meta, on="image_id", how="left", suffixes=("", "_meta"), indicator=True)
    absent = merged["_merge"] == "left_only"
    skipped = NO_SKIPS
    if absent.any():
        ex = merged.loc[absent, "image_id"].iloc[:3].tolist()
        msg = f"{int(absent.sum())} of {len(merged)} images of {where} (split={split!r}) are not in the metadata CSV, e.g. {ex}"
        if on_error == "raise":
            raise DataError(msg + " (is this the dataset the manifest was built for? on_error='skip' leaves them out)")
        skipped = skips_table(merged.loc[absent, "image_id"], merged.loc[absent, "image_id"], ["in the manifest but not in the metadata CSV"] * int(absent.sum()))
        merged = merged[~absent]
    wrong = merged["patient_id"].astype(str) != merged["patient_id_meta"].astype(str)
    if wrong.any():
        r = merged[wrong].iloc[0]
        raise DataError(f"{where}: image {r['image_id']!r} belongs to patient {r['patient_id']!r} in the manifest but {r['patient_id_meta']!r} in the metadata")
    return merged.drop(columns=["patient_id_meta", "_merge"]).reset_index(drop=True), skipped


def load_meta(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    manifest: str | os.PathLike | None = None,
    labeled_fraction: float = 1.0,
    n_max: int | None = None,
    views: Sequence[str] = FRONTAL_VIEWS,
    site: str = "internal",
    seed: int = 0,
    on_error: str = "raise",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metadata of a dataset split without reading any image: ``(meta, skipped)``.

    ``meta`` has the :mod:`~cxrlib.data.base` columns, the raw label columns, ``split`` and
    ``labeled_frac`` (and ``path`` when ``root`` is given). For CheXpert and NIH without a ``root`` the
    label CSVs shipped in torchxrayvision are used (labels and splits only: no images)."""
    from . import kermany, real
    from .files import root_dir

    _check_name(name)
    if n_max is not None and (not isinstance(n_max, int) or n_max < 1):
        raise ValueError(f"n_max={n_max!r}; expected a positive integer or None")
    if name == "phantom":
        return _phantom_meta(split=split, manifest=manifest, labeled_fraction=labeled_fraction, n_max=n_max, site=site, seed=seed), NO_SKIPS
    if name in MEDMNIST_LABELS:
        if manifest is not None or labeled_fraction != 1.0:
            raise ValueError(f"{name}: splits are the .npz file's own; manifest= and labeled_fraction= are not supported")
        parts = [NpzDataset(root, name, s, n_max=n_max).meta for s in ([split] if split else kermany.KERMANY_SPLITS)]
        meta = pd.concat(parts, ignore_index=True)
        meta["labeled_frac"] = float("nan")
        return (meta.head(n_max) if n_max else meta), NO_SKIPS

    if root is not None and name in ("chexpert", "nih", "mimic"):
        real.require_images(root_dir(root, name), name)
    all_views = ["*"]  # views are filtered after the manifest join (the manifest defines the images)
    if name == "chexpert":
        meta, skipped = real.chexpert_meta(root, views=all_views, on_error=on_error)
    elif name == "nih":
        meta, skipped = real.nih_meta(root, views=all_views, on_error=on_error)
    elif name == "mimic":
        meta, skipped = real.mimic_meta(root, views=all_views, on_error=on_error)
    else:  # kermany
        meta, skipped = kermany.kermany_meta(root, on_error=on_error)

    if manifest is None and name in ("chexpert", "nih"):
        manifest = find_manifest(name)
    if manifest is not None:
        meta, more = _apply_manifest(meta, read_manifest(manifest), split=split, labeled_fraction=labeled_fraction, where=f"manifest {os.fspath(manifest)!r}", on_error=on_error)
        skipped = pd.concat([s for s in (skipped, more) if len(s)], ignore_index=True) if len(more) else skipped
    else:
        if name == "mimic":
            if "official_split" not in meta.columns:
                raise FileNotFoundError(
                    f"MIMIC-CXR-JPG: no split: {os.fspath(root)!r} has no mimic-cxr-2.0.0-split.csv.gz; pass manifest= "
                    "(a manifest built with cxrlib.data.manifests.build_splits)"
                )
            meta = meta.rename(columns={"official_split": "split"})
        if labeled_fraction != 1.0:
            raise ValueError(f"{name}: labeled_fraction={labeled_fraction} needs a manifest with nested labeled subsets (manifest=...)")
        meta["labeled_frac"] = float("nan")
        if split is not None:
            if split not in ("train", "val", "test"):
                raise ValueError(f"split={split!r}; expected 'train', 'val', 'test' or None")
            if not (meta["split"] == split).any():
                raise DataError(f"{name}: no images in split {split!r} under {os.fspath(root)!r} (found splits {sorted(meta['split'].dropna().unique().tolist())})")
            meta = meta[meta["split"] == split].reset_index(drop=True)
    if "view" in meta.columns and name in ("chexpert", "nih", "mimic") and "*" not in views:
        meta = meta[meta["view"].isin(list(views))].reset_index(drop=True)
    if n_max is not None:
        meta = meta.head(n_max).reset_index(drop=True)
    return meta, skipped


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    size: int = 64,
    manifest: str | os.PathLike | None = None,
    labeled_fraction: float = 1.0,
    policy: LabelPolicy = LabelPolicy(),
    n_max: int | None = None,
    labels: Sequence[str] | None = None,
    views: Sequence[str] = FRONTAL_VIEWS,
    site: str = "internal",
    seed: int = 0,
    verify: str = "exists",
    on_error: str = "raise",
    progress: bool = False,
) -> CXRDataset:
    """One split of a dataset as a :class:`CXRDataset` (images float in [0, 1] at ``size`` x ``size``).

    Args:
        name: one of :data:`DATASETS`.
        root: the dataset folder (real datasets; for MedMNIST the ``.npz`` file or its folder).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (all images of the manifest).
        size: image side in pixels.
        manifest: a manifest CSV; default ``data_manifests/<name>.csv[.gz]`` (phantom, CheXpert, NIH).
        labeled_fraction: the nested labeled subset of train (0.1, 0.25, 0.5 or 1.0).
        policy: what uncertain (-1) and missing (NaN) labels become.
        n_max: keep the first ``n_max`` images (in manifest order) -- for quick runs.
        labels: label names (default :data:`DEFAULT_LABELS`; NIH also accepts CheXpert names).
        views: views kept (CheXpert, NIH, MIMIC); default frontal ``PA`` and ``AP``.
        site, seed: the phantom's site and seed (a site absent from the phantom manifest is an
            external test-only site: ``split="test"``, ``n_max`` images).
        verify: ``"exists"`` checks every file is there; ``"decode"`` decodes each image up front.
        on_error: ``"raise"`` or ``"skip"`` (bad files/rows left out, counted in ``.skipped``).
    """
    _check_name(name)
    label_names = _labels(name, labels)
    if name == "phantom":
        return _phantom_dataset(split=split, size=size, manifest=manifest, labeled_fraction=labeled_fraction, policy=policy, n_max=n_max, labels=label_names, site=site, seed=seed, progress=progress)
    if name in MEDMNIST_LABELS:
        if split is None:
            raise ValueError(f"{name}: pass split='train', 'val' or 'test' (the .npz holds three arrays)")
        if manifest is not None or labeled_fraction != 1.0:
            raise ValueError(f"{name}: splits are the .npz file's own; manifest= and labeled_fraction= are not supported")
        return NpzDataset(root, name, split, size=size, labels=label_names, policy=policy, n_max=n_max)
    if root is None:
        raise FileNotFoundError(f"{name}: root=None; pass the folder with the images (root=... / --root PATH)")
    meta, skipped = load_meta(name, root=root, split=split, manifest=manifest, labeled_fraction=labeled_fraction, n_max=n_max, views=views, on_error=on_error)
    if name == "nih" and any(n not in NIH_ALL_LABELS for n in label_names):
        from .real import nih_as_chexpert

        meta = nih_as_chexpert(meta)
    return FileDataset(meta, size=size, label_names=label_names, policy=policy, name=name, verify=verify, on_error=on_error, skipped=skipped, root=root, progress=progress)


# --- the phantom (cxrlib.data.phantom, the lead's module) ----------------------------------------
def _phantom_rows(*, split, manifest, labeled_fraction, n_max, site) -> tuple[pd.DataFrame, int]:
    """The manifest rows of ``site`` in the split (+ their image index ``i`` from the image id
    ``<site>-<i>``) and the number of images of the site the manifest covers.

    A site without rows in the manifest (an external site) is a test-only site: ``split`` must be
    ``"test"`` or None and ``n_max`` gives its number of images."""
    mdf = read_manifest(manifest if manifest is not None else find_manifest("phantom"))
    mine = mdf[mdf["image_id"].str.startswith(f"{site}-")].copy()
    if mine.empty:
        if split not in (None, "test") or labeled_fraction != 1.0 or n_max is None:
            raise ValueError(
                f"phantom site {site!r} has no rows in the phantom manifest: it is an external test site; "
                "use split='test' (or None) with n_max=<number of images>, no labeled_fraction"
            )
        rows = pd.DataFrame({"index": range(n_max), "split": "test", "labeled_frac": float("nan")})
        return rows, n_max
    try:
        mine["index"] = mine["image_id"].str.rsplit("-", n=1).str[1].astype(int)
    except ValueError:
        raise DataError(f"phantom manifest: image ids must look like '{site}-000123', found e.g. {mine['image_id'].iloc[0]!r}") from None
    n = int(mine["index"].max()) + 1
    rows = select(mine, split, labeled_fraction, where="the phantom manifest")
    if n_max is not None:
        rows = rows.head(n_max)
    return rows.reset_index(drop=True), n


def _check_phantom_patients(meta: pd.DataFrame, rows: pd.DataFrame, seed: int) -> None:
    """The manifest's patient grouping holds only for the phantom data seed it was built from:
    another seed draws other patients, and the splits would leak patients across them."""
    if "patient_id" in rows.columns and not np.array_equal(meta["patient_id"].to_numpy(), rows["patient_id"].to_numpy()):
        raise DataError(
            f"the phantom manifest was built for another phantom data seed than seed={seed}: its patient ids do not "
            "match the phantom's, so its splits would not be patient-disjoint. Use the manifest's seed (see "
            "data_manifests/phantom.json) or build a manifest for this seed with cxrlib.data.phantom.build_manifest."
        )


def _phantom_meta(*, split, manifest, labeled_fraction, n_max, site, seed) -> pd.DataFrame:
    from .phantom import phantom_meta

    rows, n = _phantom_rows(split=split, manifest=manifest, labeled_fraction=labeled_fraction, n_max=n_max, site=site)
    meta = phantom_meta(site=site, n=n, seed=seed).iloc[rows["index"].to_numpy()].reset_index(drop=True)
    _check_phantom_patients(meta, rows, seed)
    return meta.assign(split=rows["split"].to_numpy(), labeled_frac=rows["labeled_frac"].to_numpy())


def _phantom_dataset(*, split, size, manifest, labeled_fraction, policy, n_max, labels, site, seed, progress) -> CXRDataset:
    from .phantom import PhantomDataset

    rows, _ = _phantom_rows(split=split, manifest=manifest, labeled_fraction=labeled_fraction, n_max=n_max, site=site)
    ds = PhantomDataset(site=site, size=size, seed=seed, indices=rows["index"].to_numpy(), labels=labels, policy=policy, progress=progress)
    _check_phantom_patients(ds.meta, rows, seed)
    ds.meta = ds.meta.assign(split=rows["split"].to_numpy(), labeled_frac=rows["labeled_frac"].to_numpy())
    return ds
