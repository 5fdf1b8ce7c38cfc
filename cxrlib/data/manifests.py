"""Frozen, patient-level data splits ("manifests") with nested labeled subsets and checksummed sidecars.

A manifest is a CSV with one row per image::

    image_id,patient_id,split,labeled_frac
    train/patient00001/study1/view1_frontal.jpg,00001,train,0.25
    ...

* ``split`` is ``train``, ``val`` or ``test``; no patient appears in two splits.
* ``labeled_frac`` is the smallest labeled subset of *train* that holds the image: an image is in the
  ``p``-subset iff ``labeled_frac <= p`` (so the 10 % subset is inside the 25 % subset, inside the
  50 %, inside all of train). Subsets are drawn at patient level: all images of a patient share one
  value. It is empty (NaN) for ``val`` and ``test``.

Next to ``<name>.csv`` (or ``<name>.csv.gz``) lies the sidecar ``<name>.json`` with the sha256 of the
CSV text, the source metadata file and its sha256, the seed, the label policy, the counts per split
and subset, and the cxrlib version. :func:`read_manifest` refuses a manifest whose CSV does not match
its sidecar. Notebooks read splits only through :func:`read_manifest` (via
:func:`cxrlib.data.load_dataset`).

How the splits are drawn (:func:`build_splits`): a *weighted iterative stratification at patient
level* -- the algorithm of Sechidis, Tsoumakas & Vlahavas (2011, "On the stratification of multi-label
data", ECML PKDD), applied to patients instead of images, with each patient weighted by its number of
images and of positive images per label. Labels are visited from the rarest to the most common (the
order is recomputed after each label, as in the paper); each not-yet-placed patient who has a positive
image for that label goes to the part whose remaining demand for the label is largest (ties: largest
remaining image demand, then a seeded random choice); patients without any positive go to the part
with the largest remaining image demand. Grouping by patient keeps every patient in one part; the
stratification is exact only as far as this grouping allows. The nested labeled subsets are drawn the
same way inside train, as the increments 10 %, 15 %, 25 %, 50 % of train.

Why not a library: scikit-learn's ``StratifiedGroupKFold`` stratifies a single class label (a derived
key would drop most of the 14 labels), and multi-label iterative stratification packages work per
sample, not per weighted patient group.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..io import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from .labels import LabelPolicy

MANIFEST_COLUMNS = ("image_id", "patient_id", "split", "labeled_frac")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_SUBSETS = (0.1, 0.25, 0.5)


class ManifestError(ValueError):
    """A manifest is malformed, inconsistent, or does not match its sidecar."""


def manifest_dir() -> Path:
    """The folder of the committed manifests: ``$CXR_MANIFEST_DIR`` or the repository's ``data_manifests/``."""
    env = os.environ.get("CXR_MANIFEST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data_manifests"


def find_manifest(name: str) -> Path:
    """``data_manifests/<name>.csv`` or ``<name>.csv.gz``; a clear error if neither exists."""
    d = manifest_dir()
    for p in (d / f"{name}.csv", d / f"{name}.csv.gz"):
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no manifest for {name!r}: expected {d / (name + '.csv')} or {d / (name + '.csv.gz')} "
        "(build it with `cxr data manifests`, or pass manifest=PATH)"
    )


def sidecar_path(path: str | os.PathLike) -> Path:
    """``chexpert.csv.gz`` -> ``chexpert.json``; ``phantom.csv`` -> ``phantom.json``."""
    path = Path(path)
    name = path.name
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    raise ManifestError(f"manifest file name {str(path)!r} must end with .csv or .csv.gz")


# --- building ------------------------------------------------------------------------------------
def _iterative_stratify(n_img: np.ndarray, pos: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Assign groups (patients) to ``len(fractions)`` parts; returns the part index per group.

    ``n_img[g]`` images and ``pos[g, l]`` positive images of label ``l`` for group ``g``. Demand of
    part ``k``: ``f_k * sum(n_img)`` images and ``f_k * sum(pos[:, l])`` positives of label ``l``.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    n_groups, n_labels = pos.shape
    need_img = fr * n_img.sum()
    need_pos = fr[:, None] * pos.sum(axis=0)[None, :]  # [K, L]
    part = np.full(n_groups, -1, dtype=np.int64)

    def place(g: int, label: int | None) -> None:
        if label is None:
            score = need_img
        else:
            score = need_pos[:, label]
        best = np.flatnonzero(score == score.max())
        if len(best) > 1:  # tie: the part that still needs more images, then a seeded random one
            sub = need_img[best]
            best = best[sub == sub.max()]
        k = int(best[0] if len(best) == 1 else rng.choice(best))
        part[g] = k
        need_img[k] -= n_img[g]
        need_pos[k] -= pos[g]

    remaining = pos > 0
    while True:
        unplaced = part < 0
        counts = (remaining & unplaced[:, None]).sum(axis=0)
        live = np.flatnonzero(counts > 0)
        if len(live) == 0:
            break
        label = int(live[np.argmin(counts[live])])  # the rarest label among unplaced groups
        groups = np.flatnonzero(unplaced & remaining[:, label])
        for g in rng.permutation(groups):
            place(int(g), label)
    for g in rng.permutation(np.flatnonzero(part < 0)):
        place(int(g), None)
    return part


def build_splits(
    meta: pd.DataFrame,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int,
    stratify: Sequence[str] | None = None,
    subsets: Sequence[float] = DEFAULT_SUBSETS,
) -> pd.DataFrame:
    """Patient-level, label-stratified train/val/test splits with nested labeled subsets of train.

    Args:
        meta: one row per image with ``image_id``, ``patient_id`` and the ``stratify`` label columns
            (raw values; a value of 1 counts as positive, everything else does not).
        fractions: image fractions of (train, val, test); they must sum to 1.
        seed: seeds the tie-breaking and the order in which patients are placed.
        stratify: label columns to balance across the parts (``None``: only sizes are balanced).
        subsets: labeled fractions of train below 100 %, strictly increasing in (0, 1).

    Returns:
        ``DataFrame[image_id, patient_id, split, labeled_frac]`` in the row order of ``meta``.
        The result depends only on (the set of rows, seed), not on the row order.
    """
    # 1. validate
    missing = [c for c in ("image_id", "patient_id", *(stratify or ())) if c not in meta.columns]
    if missing:
        raise ValueError(f"build_splits: meta lacks columns {missing}; it has {list(meta.columns)}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"build_splits: fractions={fractions!r}; expected three non-negative numbers (train, val, test) summing to 1")
    subs = tuple(float(s) for s in subsets)
    if any(not 0 < s < 1 for s in subs) or list(subs) != sorted(set(subs)):
        raise ValueError(f"build_splits: subsets={subsets!r}; expected strictly increasing fractions in (0, 1)")
    if meta["image_id"].duplicated().any():
        dup = meta.loc[meta["image_id"].duplicated(), "image_id"].iloc[:3].tolist()
        raise ValueError(f"build_splits: duplicate image_id values, e.g. {dup}")
    if meta["patient_id"].isna().any():
        raise ValueError(f"build_splits: {int(meta['patient_id'].isna().sum())} rows have no patient_id")

    # 2. aggregate per patient (sorted ids: the result does not depend on the row order of meta)
    pid = meta["patient_id"].astype(str)
    patients, inverse = np.unique(pid.to_numpy(), return_inverse=True)
    n_img = np.bincount(inverse, minlength=len(patients)).astype(np.float64)
    cols = list(stratify or ())
    pos = np.zeros((len(patients), len(cols)))
    for j, c in enumerate(cols):
        is_pos = pd.to_numeric(meta[c], errors="coerce").to_numpy() == 1
        pos[:, j] = np.bincount(inverse, weights=is_pos.astype(np.float64), minlength=len(patients))

    # 3. train / val / test at patient level
    rng = np.random.default_rng(seed)
    part = _iterative_stratify(n_img, pos, fr, rng)
    split_of_patient = np.asarray(SPLITS)[part]

    # 4. nested labeled subsets of train: increments 10, 15, 25, 50 % -> cumulative 0.1, 0.25, 0.5, 1
    levels = (*subs, 1.0)
    increments = np.diff((0.0, *levels))
    train_p = np.flatnonzero(part == 0)
    frac_of_patient = np.full(len(patients), np.nan)
    if len(train_p):
        tier = _iterative_stratify(n_img[train_p], pos[train_p], increments, rng)
        frac_of_patient[train_p] = np.asarray(levels)[tier]

    return pd.DataFrame(
        {
            "image_id": meta["image_id"].astype(str).to_numpy(),
            "patient_id": pid.to_numpy(),
            "split": split_of_patient[inverse],
            "labeled_frac": frac_of_patient[inverse],
        }
    )


# --- checking ------------------------------------------------------------------------------------
def check_manifest(df: pd.DataFrame, *, where: str = "manifest") -> None:
    """Raise :class:`ManifestError` unless: the columns are there, image ids are unique, splits are
    train/val/test, no patient is in two splits, and labeled subsets are nested at patient level
    (train rows have ``labeled_frac`` in (0, 1], constant per patient; val/test rows have none)."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: missing columns {missing}; expected {list(MANIFEST_COLUMNS)}, found {list(df.columns)}")
    if df["image_id"].isna().any() or df["patient_id"].isna().any():
        raise ManifestError(f"{where}: empty image_id or patient_id in {int(df['image_id'].isna().sum() + df['patient_id'].isna().sum())} rows")
    dup = df["image_id"].duplicated(keep=False)
    if dup.any():
        ex = df.loc[dup, "image_id"].drop_duplicates().iloc[:3].tolist()
        raise ManifestError(f"{where}: {int(df['image_id'].duplicated().sum())} duplicate image_id rows, e.g. {ex}")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        vals = sorted(df.loc[bad_split, "split"].astype(str).unique().tolist())[:5]
        raise ManifestError(f"{where}: split values {vals}; expected one of {list(SPLITS)}")
    n_splits = df.groupby("patient_id")["split"].nunique()
    leak = n_splits[n_splits > 1]
    if len(leak):
        ex = leak.index[:5].tolist()
        raise ManifestError(f"{where}: {len(leak)} patient(s) appear in more than one split, e.g. patient_id {ex}")
    frac = pd.to_numeric(df["labeled_frac"], errors="coerce")
    is_train = df["split"] == "train"
    bad = is_train & ~((frac > 0) & (frac <= 1))
    if bad.any():
        raise ManifestError(f"{where}: {int(bad.sum())} train rows have labeled_frac outside (0, 1], e.g. image_id {df.loc[bad, 'image_id'].iloc[0]!r}")
    bad = ~is_train & frac.notna()
    if bad.any():
        raise ManifestError(f"{where}: {int(bad.sum())} val/test rows have a labeled_frac (subsets are of train only)")
    per_patient = frac[is_train].groupby(df.loc[is_train, "patient_id"]).nunique()
    if (per_patient > 1).any():
        ex = per_patient[per_patient > 1].index[:3].tolist()
        raise ManifestError(f"{where}: labeled subsets are not patient-level: patients {ex} have images with different labeled_frac")


def subset_counts(df: pd.DataFrame) -> dict:
    """Images and patients per split and per nested labeled subset of train."""
    out: dict = {"splits": {}, "labeled_subsets": {}}
    for s in SPLITS:
        part = df[df["split"] == s]
        out["splits"][s] = {"images": int(len(part)), "patients": int(part["patient_id"].nunique())}
    train = df[df["split"] == "train"]
    frac = pd.to_numeric(train["labeled_frac"], errors="coerce")
    for p in sorted(frac.dropna().unique()):
        part = train[frac <= p]
        out["labeled_subsets"][f"{p:g}"] = {"images": int(len(part)), "patients": int(part["patient_id"].nunique())}
    return out


# --- writing and reading --------------------------------------------------------------------------
def manifest_csv_bytes(df: pd.DataFrame) -> bytes:
    """The canonical CSV text: fixed columns, ``\\n`` line ends, ``%g`` fractions, UTF-8."""
    out = df.loc[:, list(MANIFEST_COLUMNS)].copy()
    out["labeled_frac"] = [("" if pd.isna(v) else f"{float(v):g}") for v in out["labeled_frac"]]
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def _describe_source(source) -> dict | None:
    """Path of the source metadata file (relative to the torchxrayvision package when inside it) + sha256."""
    if source is None:
        return None
    src = Path(source)
    if not src.is_file():
        raise FileNotFoundError(f"write_manifest: source file {str(src)!r} does not exist")
    info = {"path": str(source), "sha256": sha256_file(src)}
    from importlib.metadata import PackageNotFoundError, version

    from .real import xrv_package_dir

    try:
        rel = src.resolve().relative_to(xrv_package_dir())
        info.update(path=rel.as_posix(), package="torchxrayvision", package_version=version("torchxrayvision"))
    except (ImportError, ValueError, PackageNotFoundError):
        pass
    return info


def write_manifest(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    seed: int,
    label_policy: LabelPolicy | str,
    notes: str = "",
    stratify: Sequence[str] | None = None,
) -> Path:
    """Write ``df`` (checked with :func:`check_manifest`) as ``path`` (``.csv`` or ``.csv.gz``) plus the
    sidecar ``<name>.json``. Same ``df`` -> same bytes (gzip without time stamp or file name)."""
    path = Path(path)
    side = sidecar_path(path)
    check_manifest(df, where=str(path))
    data = manifest_csv_bytes(df)
    if path.name.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        stored = buf.getvalue()
    else:
        stored = data
    from .. import __version__

    policy = label_policy.describe() if isinstance(label_policy, LabelPolicy) else str(label_policy)
    sidecar = {
        "manifest": path.name,
        "sha256": sha256_bytes(data),  # of the (uncompressed) CSV text: what read_manifest verifies
        "file_sha256": sha256_bytes(stored),  # of the file as stored (informative; depends on zlib)
        "rows": int(len(df)),
        "source": _describe_source(source),
        "seed": int(seed),
        "label_policy": policy,
        "stratify": list(stratify) if stratify is not None else None,
        "counts": subset_counts(df),
        "cxrlib_version": __version__,
        "notes": notes,
    }
    atomic_write_bytes(path, stored)
    atomic_write_json(side, sidecar)
    return path


def read_manifest_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        raise ManifestError(f"manifest {str(path)!r} has no sidecar {str(side)!r} (written by write_manifest)")
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"sidecar {str(side)!r} is not valid JSON: {e}") from None


def _manifest_text(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ManifestError(f"manifest {str(path)!r} is not a valid gzip file: {e}") from None
    return raw


def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> pd.DataFrame:
    """Read a manifest, verify the CSV text against the sidecar's sha256 and run :func:`check_manifest`.

    A mismatch (an edited or corrupted manifest) is a :class:`ManifestError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    data = _manifest_text(path)
    if verify:
        side = read_manifest_sidecar(path)
        got = sha256_bytes(data)
        if side.get("sha256") != got:
            raise ManifestError(
                f"manifest {str(path)!r} does not match its sidecar {str(sidecar_path(path))!r}: "
                f"sha256 of the CSV is {got[:12]}..., the sidecar records {str(side.get('sha256'))[:12]}... "
                "(edited or corrupted; rebuild it with `cxr data manifests`)"
            )
    try:
        df = pd.read_csv(io.BytesIO(data), dtype={"image_id": str, "patient_id": str, "split": str}, keep_default_na=False, na_values={"labeled_frac": [""]})
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ManifestError(f"manifest {str(path)!r} is not a readable CSV: {e}") from None
    check_manifest(df, where=str(path))
    return df


def select(df: pd.DataFrame, split: str | None = None, labeled_fraction: float = 1.0, *, where: str = "manifest") -> pd.DataFrame:
    """Rows of one split (``None``: all) and, for train, of the nested labeled subset ``labeled_fraction``."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {list(SPLITS)} or None")
    out = df if split is None else df[df["split"] == split]
    if labeled_fraction != 1.0:
        if split != "train":
            raise ValueError(f"labeled_fraction={labeled_fraction} applies to split='train' only (got split={split!r})")
        levels = sorted(pd.to_numeric(out["labeled_frac"], errors="coerce").dropna().unique().tolist())
        if not any(abs(labeled_fraction - v) < 1e-9 for v in levels):
            raise ValueError(f"labeled_fraction={labeled_fraction}: {where} has the nested subsets {[float(v) for v in levels]}")
        out = out[pd.to_numeric(out["labeled_frac"], errors="coerce") <= labeled_fraction + 1e-9]
    return out


# --- checking files against a manifest -----------------------------------------------------------
def verify_files(manifest: pd.DataFrame | str | os.PathLike, root: str | os.PathLike, *, decode: bool = True, progress: bool = False) -> pd.DataFrame:
    """Check an image folder against a manifest: missing files, unreadable images, and (when the
    manifest has a ``sha256`` column, as synthetic sets do) checksum mismatches.

    The manifest is a split manifest (``image_id``) or any CSV with an ``image_id``, ``path`` or
    ``file`` column of paths relative to ``root``. Returns ``DataFrame[image_id, problem]`` (empty = all
    good)."""
    from ..utils import tqdm
    from .files import ImageReadError, check_image_file, show_path
    from .real import locate_files

    if not isinstance(manifest, pd.DataFrame):
        mpath = Path(manifest)
        if not mpath.is_file():
            raise FileNotFoundError(f"manifest {str(mpath)!r} does not exist")
        if sidecar_path(mpath).is_file():
            manifest = read_manifest(mpath)
        else:
            try:
                manifest = pd.read_csv(mpath, dtype=str, keep_default_na=False)
            except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
                raise ManifestError(f"manifest {str(mpath)!r} is not a readable CSV: {e}") from None
    col = next((c for c in ("image_id", "path", "file") if c in manifest.columns), None)
    if col is None:
        raise ManifestError(f"manifest has none of the columns image_id, path, file (found {list(manifest.columns)})")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {show_path(root)!r} does not exist or is not a folder")
    ids = manifest[col].astype(str).tolist()
    paths = locate_files(root, ids)
    sums = manifest["sha256"].astype(str).str.strip().str.lower().tolist() if "sha256" in manifest.columns else None
    problems = []
    for i in tqdm(range(len(ids)), desc="verifying", unit="file", **({} if progress else {"disable": True})):
        p = paths[i]
        if p is None:
            problems.append((ids[i], "missing"))
            continue
        if sums is not None and sums[i]:
            got = sha256_file(p)
            if got != sums[i]:
                problems.append((ids[i], f"sha256 mismatch: file {got[:12]}..., manifest {sums[i][:12]}..."))
                continue
        try:
            check_image_file(p, decode=decode)
        except ImageReadError as e:
            problems.append((ids[i], e.problem))
    return pd.DataFrame(problems, columns=["image_id", "problem"])


# --- the committed manifests ---------------------------------------------------------------------
MANIFEST_SEED = 0
_STRATIFY_NOTE = "stratified on raw value 1 = positive (uncertain -1 and empty count as not positive); the loader's LabelPolicy applies at load time"


def _build_real_manifest(name: str, out_dir, *, seed: int) -> Path:
    """Build the frozen split of a real dataset from the metadata CSV torchxrayvision ships: frontal
    (PA, AP) images, split by patient 70/10/20, stratified on the dataset's labels."""
    from .labels import CHEXPERT_LABELS
    from .real import FRONTAL_VIEWS, NIH_ALL_LABELS, chexpert_meta, nih_meta, xrv_data_file

    meta_fn, labels, source, notes = {
        "chexpert": (chexpert_meta, CHEXPERT_LABELS, "chexpert_train.csv.gz",
                     "CheXpert v1.0 train.csv, frontal PA/AP images; image_id = Path without the 'CheXpert-v1.0[-small]/' "
                     "prefix; patient_id = the digits of 'patientNNNNN'. The official valid set (200 patients) is not included."),
        "nih": (nih_meta, NIH_ALL_LABELS, "Data_Entry_2017_v2020.csv.gz",
                "NIH ChestX-ray14 Data_Entry_2017_v2020.csv, all images; image_id = 'Image Index'; patient_id = 'Patient ID'. "
                "This is a study split, not NIH's official train_val/test list."),
    }[name]
    meta, _ = meta_fn(None, views=FRONTAL_VIEWS)
    df = build_splits(meta, seed=seed, stratify=labels)
    return write_manifest(df, Path(out_dir) / f"{name}.csv.gz", source=xrv_data_file(source), seed=seed,
                          label_policy=_STRATIFY_NOTE, stratify=labels, notes=notes)


def build_chexpert_manifest(out_dir: str | os.PathLike, *, seed: int = MANIFEST_SEED) -> Path:
    """``chexpert.csv.gz``: CheXpert's frontal (PA, AP) training images from the ``train.csv`` shipped
    in torchxrayvision, split by patient 70/10/20, stratified on the 14 CheXpert labels."""
    return _build_real_manifest("chexpert", out_dir, seed=seed)


def build_nih_manifest(out_dir: str | os.PathLike, *, seed: int = MANIFEST_SEED) -> Path:
    """``nih.csv.gz``: all NIH ChestX-ray14 images (PA, AP) of ``Data_Entry_2017_v2020.csv`` shipped in
    torchxrayvision, split by patient 70/10/20, stratified on No Finding + the 14 findings."""
    return _build_real_manifest("nih", out_dir, seed=seed)


# Name -> builder(out_dir, seed=...) for `cxr data manifests`; the phantom's builder lives with the phantom.
MANIFEST_BUILDERS = {"chexpert": build_chexpert_manifest, "nih": build_nih_manifest}
