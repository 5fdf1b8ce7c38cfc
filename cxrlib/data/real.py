"""Loaders for the real chest X-ray datasets (the ``paper`` profile), all behind :class:`CXRDataset`.

============== ================================================================================
CheXpert       ``torchxrayvision.datasets.CheX_Dataset`` parses ``train.csv`` (views, patient ids)
MIMIC-CXR-JPG  ``torchxrayvision.datasets.MIMIC_Dataset`` joins the CheXpert-labeler CSV and the
               DICOM metadata CSV (views, image paths)
NIH ChestX-ray14 ``torchxrayvision.datasets.NIH_Dataset`` parses ``Data_Entry_2017_v2020.csv``
Kermany        the published folders ``{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``
MedMNIST       ``pneumoniamnist.npz`` / ``chestmnist.npz`` (keys ``{train,val,test}_{images,labels}``)
============== ================================================================================

Only torchxrayvision's *metadata* parsing is used: images are decoded here (:func:`read_image`)
because its loaders return ``[-1024, 1024]`` arrays without the robustness checks below; our images
are float in ``[0, 1]`` (1 = white/bone) at ``size`` x ``size``.

Label mapping (raw values in ``meta``: 1 positive, 0 negative, -1 uncertain, NaN not mentioned).
torchxrayvision's classes relabel in ways we do *not* inherit:

* its ``.labels`` turn uncertain ``-1`` into NaN, drop ``No Finding`` and rename ``Pleural Effusion``
  to ``Effusion``. We read the label *columns* of its ``.csv`` instead, keeping ``-1`` and the 14
  CheXpert names, so the :class:`~cxrlib.data.labels.LabelPolicy` decides what uncertain means.
* "No Finding = 1 => every finding 0": for a row with ``No Finding == 1`` the 12 findings that are
  empty become 0 (an explicit negative: the report found nothing). torchxrayvision does this too; we
  never touch ``Support Devices`` (a device is not a finding; xrv's MIMIC class zeroes it, turning
  real positives into negatives, so for MIMIC the label CSV is re-read and this rule re-applied).
* NIH: the 14 NIH findings are 1/0 from the ``Finding Labels`` string (text-mined, never uncertain or
  missing) and ``No Finding`` is 1 when that string is ``No Finding``. Asked for CheXpert names, NIH
  gives ``Pleural Effusion`` = Effusion, ``Lung Lesion`` = Mass or Nodule, the shared names as they
  are, and NaN (not annotated: use ``LabelPolicy(missing="ignore")``) for the rest.
* Kermany: ``Pneumonia``, ``Bacterial Pneumonia``, ``Viral Pneumonia`` from the folder and the file
  name (``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``; ``IM-0115-0001.jpeg`` is normal).
* MedMNIST: the 0/1 labels of the ``.npz`` (ChestMNIST: the 14 NIH findings in NIH's order).

Image decoding and the ``on_error`` / ``verify`` options: :mod:`cxrlib.data.files`.
"""

from __future__ import annotations

import difflib
import os
import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .base import CXRDataset
from .files import (IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE, NO_SKIPS, DataError, ImageReadError, OnError, Verify, check_image_file,
                    check_on_error, read_image, root_dir, show_path, skips_table)
from .labels import CHEXPERT_LABELS, LabelPolicy

FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")


# NIH ChestX-ray14's 14 findings in the order of Wang et al. 2017 (and of ChestMNIST's label columns).
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)


NIH_ALL_LABELS: tuple[str, ...] = ("No Finding", *NIH_LABELS)


KERMANY_LABELS: tuple[str, ...] = ("Pneumonia", "Bacterial Pneumonia", "Viral Pneumonia")


PNEUMONIAMNIST_LABELS: tuple[str, ...] = ("Pneumonia",)


CHESTMNIST_LABELS: tuple[str, ...] = NIH_LABELS


# CheXpert name -> NIH finding(s) whose "any" defines it; other CheXpert names are NaN on NIH.
NIH_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "No Finding": ("No Finding",),
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Consolidation": ("Consolidation",),
    "Edema": ("Edema",),
    "Pneumonia": ("Pneumonia",),
    "Pneumothorax": ("Pneumothorax",),
    "Pleural Effusion": ("Effusion",),
    "Lung Lesion": ("Mass", "Nodule"),
}


# Where each loader expects the image files (for errors when none is found).
LAYOUTS = {
    "chexpert": "root/train/patientNNNNN/studyN/viewN_frontal.jpg (root = the CheXpert-v1.0[-small] folder)",
    "nih": "root/images_0NN/images/*.png, root/images/*.png or root/*.png",
    "mimic": "root/files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg (root = mimic-cxr-jpg/2.0.0)",
    "kermany": "root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",
}


# Columns that must be present in each source metadata file.
CHEXPERT_CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)


NIH_CSV_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "View Position")


MIMIC_LABEL_COLUMNS = ("subject_id", "study_id", *CHEXPERT_LABELS)


MIMIC_META_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate")


MIMIC_FILES = {
    "labels": ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv"),
    "metadata": ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv"),
    "split": ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"),
}


def xrv_package_dir() -> Path:
    """The installed torchxrayvision package folder, found without importing it (the import is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.origin:
        raise ImportError("torchxrayvision is not installed (pip install torchxrayvision)")
    return Path(spec.origin).resolve().parent


def xrv_data_file(name: str) -> Path:
    """A metadata file shipped in the torchxrayvision wheel (``torchxrayvision/data/<name>``)."""
    return xrv_package_dir() / "data" / name


# --- metadata files -------------------------------------------------------------------------------
# --- metadata files -------------------------------------------------------------------------------
def read_csv_checked(path, *, required: Sequence[str], what: str, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` with errors that name the file: unreadable, not UTF-8, missing columns
    (with the closest unexpected column as a hint, e.g. ``Pleural_Effusion`` for ``Pleural Effusion``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {show_path(path)!r} does not exist")
    try:
        df = pd.read_csv(path, **kwargs)
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {show_path(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{what} {show_path(path)!r} is not a readable CSV: {e}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        extra = [c for c in df.columns if c not in required]
        hints = []
        for m in missing:
            close = difflib.get_close_matches(m, extra, n=1, cutoff=0.7)
            if close:
                hints.append(f"{close[0]!r} -> {m!r}?")
        hint = f" (unknown columns that look like renamed ones: {', '.join(hints)})" if hints else ""
        raise DataError(f"{what} {show_path(path)!r} lacks the columns {missing}{hint}; expected {list(required)}")
    return df


def check_label_values(df: pd.DataFrame, columns: Iterable[str], source) -> None:
    """Every label cell must be 1, 0, -1 or empty; otherwise a :class:`DataError` naming the file,
    the column, the CSV line and the value."""
    for c in columns:
        col = df[c]
        num = pd.to_numeric(col, errors="coerce")
        bad = (col.notna() & num.isna()) | (num.notna() & ~num.isin((1.0, 0.0, -1.0)))
        if bad.any():
            idx = bad[bad].index[:3]
            ex = ", ".join(f"line {int(i) + 2}: {col.loc[i]!r}" for i in idx)  # +2: header, 1-based
            raise DataError(f"{show_path(source)!r}: column {c!r} has {int(bad.sum())} value(s) outside {{1, 0, -1, empty}} ({ex})")


def _dedupe(meta: pd.DataFrame, source, on_error: OnError) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Duplicate image paths: an error, or (skip) keep the first and count the rest."""
    dup = meta["image_id"].duplicated()
    if not dup.any():
        return meta, NO_SKIPS
    ex = meta.loc[dup, "image_id"].iloc[:3].map(show_path).tolist()
    if on_error == "raise":
        raise DataError(f"{show_path(source)!r}: {int(dup.sum())} duplicate image path(s), e.g. {ex} (on_error='skip' keeps the first)")
    d = meta[dup]
    return meta[~dup].reset_index(drop=True), skips_table(d["image_id"], d.get("path", d["image_id"]), ["duplicate image path (first kept)"] * len(d))


def _healthy_negative(labels: pd.DataFrame) -> pd.DataFrame:
    """Rows with No Finding == 1: empty findings become 0 (Support Devices untouched). See module doc."""
    healthy = labels["No Finding"] == 1
    findings = [c for c in CHEXPERT_LABELS if c not in ("No Finding", "Support Devices")]
    labels = labels.copy()
    labels.loc[healthy, findings] = labels.loc[healthy, findings].fillna(0.0)
    return labels


def _first_file(root: Path, names: Sequence[str], what: str) -> Path:
    for n in names:
        if (root / n).is_file():
            return root / n
    raise FileNotFoundError(f"{what}: none of {list(names)} found in {show_path(root)!r}")


def _xrv_call(fn, csv, what: str, labels: Sequence[str] = ()):
    """Run a torchxrayvision constructor; its errors become a :class:`DataError` naming ``csv``
    (a bad label value is diagnosed precisely by re-reading the CSV)."""
    try:
        return fn()
    except NotImplementedError:
        raise DataError(
            f"{what} {show_path(csv)!r}: torchxrayvision derives CheXpert patient ids from the CSV path, "
            "which must contain 'train' or 'valid' (name it train.csv or valid.csv)"
        ) from None
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        if labels:
            check_label_values(read_csv_checked(csv, required=labels, what=what), labels, csv)
        raise DataError(f"torchxrayvision could not parse {what} {show_path(csv)!r}: {type(e).__name__}: {e}") from None


def locate_files(root: Path, ids: Sequence[str]) -> list[str | None]:
    """Paths of ``ids`` under ``root``: ``root/id``, else ``root/images/id``, else (for ids without a
    folder part, as NIH's ``00000001_000.png``) the file of that name anywhere below ``root`` (NIH
    ships ``images_001/images/...``). ``None`` where not found. One walk of ``root``, no stat per id."""
    by_rel: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for f in files:
            full = os.path.join(dirpath, f)
            by_rel[f if rel_dir == "." else f"{rel_dir}/{f}".replace(os.sep, "/")] = full
            by_name.setdefault(f, full)
    out: list[str | None] = []
    for i in ids:
        p = by_rel.get(i) or by_rel.get(f"images/{i}")
        if p is None and "/" not in i:
            p = by_name.get(i)
        out.append(p)
    return out


def require_images(root: Path, name: str) -> None:
    """Fail fast, naming ``root``, when it holds no image file at all (an empty or wrong folder)."""
    for _, _, files in os.walk(root):
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            return
    raise DataError(f"{name} root {show_path(root)!r} holds no .png/.jpg/.jpeg files (an empty or wrong folder); expected {LAYOUTS.get(name, 'image files')}")


# --- CheXpert -------------------------------------------------------------------------------------
# --- CheXpert -------------------------------------------------------------------------------------
def _chexpert_image_id(path: pd.Series) -> pd.Series:
    # As torchxrayvision does: the CSV paths start with the archive's folder name.
    return path.str.replace("CheXpert-v1.0-small/", "", regex=False).str.replace("CheXpert-v1.0/", "", regex=False)


def chexpert_meta(root=None, *, csv=None, views: Sequence[str] = FRONTAL_VIEWS, on_error: OnError = "raise") -> tuple[pd.DataFrame, pd.DataFrame]:
    """CheXpert metadata (one row per image of the given views) and the skipped rows.

    ``csv`` defaults to ``root/train.csv``, or, with ``root=None``, to the copy of CheXpert's
    ``train.csv`` shipped in torchxrayvision (labels only: no image paths)."""
    import torchxrayvision as xrv

    check_on_error(on_error)
    if csv is None:
        if root is None:
            csv = xrv_data_file("chexpert_train.csv.gz")
        else:
            csv = _first_file(root_dir(root, "CheXpert"), ("train.csv", "train.csv.gz"), "CheXpert (expected the CheXpert-v1.0[-small] folder)")
    header = read_csv_checked(csv, required=CHEXPERT_CSV_COLUMNS, what="CheXpert CSV", nrows=0)
    del header
    ds = _xrv_call(lambda: xrv.datasets.CheX_Dataset(imgpath=str(root or "."), csvpath=str(csv), views=list(views), unique_patients=False), csv, "CheXpert CSV", CHEXPERT_LABELS)
    c = ds.csv
    check_label_values(c, CHEXPERT_LABELS, csv)
    if c["patientid"].isna().any():
        bad = c.loc[c["patientid"].isna(), "Path"].iloc[0]
        raise DataError(f"CheXpert CSV {show_path(csv)!r}: cannot parse a patient id from Path {bad!r}; expected .../patientNNNNN/studyN/viewN_*.jpg")
    meta = pd.DataFrame(
        {
            "image_id": _chexpert_image_id(c["Path"]).to_numpy(),
            "patient_id": c["patientid"].astype(str).to_numpy(),
            "study": c["Path"].str.extract(r"(study\d+)", expand=False).fillna("").to_numpy(),
            "site": "chexpert",
            "view": c["view"].astype(str).to_numpy(),
            "sex": c["Sex"].map({"Female": "F", "Male": "M"}).to_numpy(),  # "Unknown" -> None
            "age": pd.to_numeric(c["Age"], errors="coerce").to_numpy(dtype=np.float64),  # xrv: age 0 -> NaN
        }
    )
    labels = _healthy_negative(c[list(CHEXPERT_LABELS)].apply(pd.to_numeric).reset_index(drop=True))
    meta = pd.concat([meta, labels], axis=1)
    if root is not None:
        meta["path"] = [str(Path(root) / i) for i in meta["image_id"]]
    return _dedupe(meta, csv, on_error)


# --- NIH ChestX-ray14 -----------------------------------------------------------------------------
# --- NIH ChestX-ray14 -----------------------------------------------------------------------------
def nih_meta(root=None, *, csv=None, views: Sequence[str] = FRONTAL_VIEWS, on_error: OnError = "raise") -> tuple[pd.DataFrame, pd.DataFrame]:
    """NIH ChestX-ray14 metadata: ``No Finding`` + the 14 NIH findings (1/0).

    ``csv`` defaults to ``root/Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``) or, without a
    root, to the copy shipped in torchxrayvision. Images are found as ``root/<Image Index>``,
    ``root/images/<Image Index>`` or anywhere below ``root`` (the ``images_0NN/images/`` layout)."""
    import torchxrayvision as xrv

    check_on_error(on_error)
    if root is not None:
        root = root_dir(root, "NIH ChestX-ray14")
    if csv is None:
        names = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv.gz")
        found = [root / n for n in names if root is not None and (root / n).is_file()]
        csv = found[0] if found else xrv_data_file("Data_Entry_2017_v2020.csv.gz")
    head = read_csv_checked(csv, required=NIH_CSV_COLUMNS, what="NIH CSV", nrows=0)
    if "Patient Gender" not in head.columns and "Patient Sex" not in head.columns:
        raise DataError(f"NIH CSV {show_path(csv)!r} lacks the column 'Patient Gender' (or 'Patient Sex')")
    # xrv parses findings with str.contains, which silently ignores a misspelled finding: check tokens.
    findings = read_csv_checked(csv, required=("Finding Labels",), what="NIH CSV", usecols=["Finding Labels"])["Finding Labels"]
    tokens = findings.fillna("").str.split("|").explode()
    unknown = tokens[~tokens.isin(NIH_ALL_LABELS)]
    if len(unknown):
        bad = str(unknown.iloc[0])
        close = difflib.get_close_matches(bad, NIH_ALL_LABELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"NIH CSV {show_path(csv)!r}: unknown finding {bad!r}{hint} on line {int(unknown.index[0]) + 2} "
            f"({len(unknown)} unknown in all); expected '|'-separated names from {list(NIH_ALL_LABELS)}"
        )
    imgpath = root if root is not None else xrv_data_file("")  # xrv insists on an existing folder
    ds = _xrv_call(lambda: xrv.datasets.NIH_Dataset(imgpath=str(imgpath), csvpath=str(csv), views=list(views), unique_patients=False), csv, "NIH CSV")
    c = ds.csv
    meta = pd.DataFrame(
        {
            "image_id": c["Image Index"].astype(str).to_numpy(),
            "patient_id": c["patientid"].astype(str).to_numpy(),
            "study": c["Follow-up #"].astype(str).to_numpy() if "Follow-up #" in c.columns else "",
            "site": "nih",
            "view": c["view"].astype(str).to_numpy(),
            "sex": c["Patient Gender"].where(c["Patient Gender"].isin(["F", "M"])).to_numpy(),
            "age": pd.to_numeric(c["Patient Age"], errors="coerce").to_numpy(dtype=np.float64),
            "No Finding": (c["Finding Labels"] == "No Finding").astype(np.float64).to_numpy(),
        }
    )
    for name in NIH_LABELS:  # xrv's label matrix (columns in its sorted pathology order)
        meta[name] = ds.labels[:, ds.pathologies.index(name)].astype(np.float64)
    meta, skipped = _dedupe(meta, csv, on_error)
    if root is not None:
        meta["path"] = locate_files(root, meta["image_id"].tolist())
    return meta, skipped


def nih_as_chexpert(meta: pd.DataFrame) -> pd.DataFrame:
    """Add CheXpert-named label columns to NIH metadata (see :data:`NIH_TO_CHEXPERT`; others NaN)."""
    meta = meta.copy()
    for name in CHEXPERT_LABELS:
        if name in NIH_TO_CHEXPERT:
            meta[name] = meta[list(NIH_TO_CHEXPERT[name])].max(axis=1)
        elif name not in meta.columns:
            meta[name] = np.nan
    return meta


# --- MIMIC-CXR-JPG --------------------------------------------------------------------------------
# --- MIMIC-CXR-JPG --------------------------------------------------------------------------------
def mimic_meta(root, *, csv=None, metadata_csv=None, views: Sequence[str] = FRONTAL_VIEWS, on_error: OnError = "raise") -> tuple[pd.DataFrame, pd.DataFrame]:
    """MIMIC-CXR-JPG metadata from ``root`` (the ``mimic-cxr-jpg/2.0.0`` folder: the CheXpert-labeler
    CSV, the metadata CSV and ``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``). If the official
    ``mimic-cxr-2.0.0-split.csv.gz`` is there, its split (``validate`` -> ``val``) is in ``official_split``.
    Sex and age are not in these files (they live in MIMIC-IV ``patients.csv``): unknown here."""
    import torchxrayvision as xrv

    check_on_error(on_error)
    root = root_dir(root, "MIMIC-CXR-JPG")
    hint = "MIMIC-CXR-JPG (expected the mimic-cxr-jpg/2.0.0 folder)"
    csv = Path(csv) if csv is not None else _first_file(root, MIMIC_FILES["labels"], hint)
    metadata_csv = Path(metadata_csv) if metadata_csv is not None else _first_file(root, MIMIC_FILES["metadata"], hint)
    raw = read_csv_checked(csv, required=MIMIC_LABEL_COLUMNS, what="MIMIC label CSV")
    check_label_values(raw, CHEXPERT_LABELS, csv)
    read_csv_checked(metadata_csv, required=MIMIC_META_COLUMNS, what="MIMIC metadata CSV", nrows=0)
    imgpath = root / "files" if (root / "files").is_dir() else root
    ds = _xrv_call(
        lambda: xrv.datasets.MIMIC_Dataset(imgpath=str(imgpath), csvpath=str(csv), metacsvpath=str(metadata_csv), views=list(views), unique_patients=False),
        csv,
        "MIMIC CSVs",
    )
    c = ds.csv
    # xrv's label columns were edited in place (Support Devices zeroed for No Finding rows): re-read them.
    raw = raw[["subject_id", "study_id", *CHEXPERT_LABELS]].drop_duplicates(["subject_id", "study_id"])
    c = c[["subject_id", "study_id", "dicom_id", "view"]].merge(raw, on=["subject_id", "study_id"], how="left", validate="many_to_one")
    sid = c["subject_id"].astype(str)
    study = c["study_id"].astype(str)
    meta = pd.DataFrame(
        {
            "image_id": ("p" + sid.str[:2] + "/p" + sid + "/s" + study + "/" + c["dicom_id"].astype(str) + ".jpg").to_numpy(),
            "patient_id": sid.to_numpy(),
            "study": study.to_numpy(),
            "site": "mimic",
            "view": c["view"].astype(str).to_numpy(),
            "sex": None,
            "age": np.nan,
        }
    )
    meta = pd.concat([meta, _healthy_negative(c[list(CHEXPERT_LABELS)].apply(pd.to_numeric).reset_index(drop=True))], axis=1)
    split_csv = next((root / n for n in MIMIC_FILES["split"] if (root / n).is_file()), None)
    if split_csv is not None:
        sp = read_csv_checked(split_csv, required=("dicom_id", "split"), what="MIMIC split CSV")
        m = dict(zip(sp["dicom_id"].astype(str), sp["split"].replace({"validate": "val"})))
        meta["official_split"] = [m.get(d) for d in c["dicom_id"].astype(str)]
    meta["path"] = [str(imgpath / i) for i in meta["image_id"]]
    return _dedupe(meta, csv, on_error)


# --- the dataset over image files -----------------------------------------------------------------
# --- the dataset over image files -----------------------------------------------------------------
class FileDataset(CXRDataset):
    """Images read from files listed in ``meta["path"]`` (see :func:`read_image`).

    Built by :func:`cxrlib.data.load_dataset`; ``skipped`` lists what was left out and why."""

    def __init__(
        self,
        meta: pd.DataFrame,
        *,
        size: int = 64,
        label_names: Sequence[str] = CHEXPERT_LABELS,
        policy: LabelPolicy = LabelPolicy(),
        name: str = "files",
        verify: Verify = "exists",
        on_error: OnError = "raise",
        skipped: pd.DataFrame | None = None,
        root=None,
        max_pixels: int = MAX_PIXELS,
        min_side: int = MIN_SIDE,
        progress: bool = False,
    ):
        from ..utils import tqdm

        check_on_error(on_error)
        if verify not in ("none", "exists", "decode"):
            raise ValueError(f"verify={verify!r}; expected 'none', 'exists' or 'decode'")
        if "path" not in meta.columns:
            raise DataError(f"{name}: no image paths (metadata only, root=None?); pass root= the dataset folder")
        missing = [c for c in label_names if c not in meta.columns]
        if missing:
            raise DataError(f"{name}: no labels {missing} in this dataset; it has {[c for c in meta.columns if c in CHEXPERT_LABELS or c in NIH_ALL_LABELS or c in KERMANY_LABELS]}")
        self.size, self.label_names, self.policy, self.name = int(size), tuple(label_names), policy, name
        self.max_pixels, self.min_side = max_pixels, min_side
        meta = meta.reset_index(drop=True)
        present = [p for p in meta["path"] if isinstance(p, str) and os.path.exists(p)]
        if verify != "none" and len(meta) and not present:  # nothing at all: a wrong root, not bad files
            first = meta["path"].dropna().iloc[0] if meta["path"].notna().any() else meta["image_id"].iloc[0]
            raise DataError(
                f"{name}: none of the {len(meta)} images listed in the metadata exists under {show_path(root) if root is not None else 'root'} (first: {show_path(first)}); "
                f"expected {LAYOUTS.get(name, 'the image files under root')}"
            )
        problems = []
        if verify != "none":
            for i in tqdm(range(len(meta)), desc=f"checking {name} files", unit="file", **({} if progress else {"disable": True})):
                p = meta.at[i, "path"]
                try:
                    if p is None or (isinstance(p, float) and np.isnan(p)):
                        raise ImageReadError(str(meta.at[i, "image_id"]), "file not found under the dataset root")
                    if verify == "decode":
                        check_image_file(p, max_pixels=max_pixels, min_side=min_side)
                    elif not os.path.isfile(p):
                        raise ImageReadError(p, "file not found")
                    elif os.path.getsize(p) == 0:
                        raise ImageReadError(p, "empty file (0 bytes); expected a PNG or JPEG image")
                except ImageReadError as e:
                    if on_error == "raise":
                        raise DataError(f"{name}: {e} (on_error='skip' leaves such files out and counts them)") from None
                    problems.append((meta.at[i, "image_id"], p, e.problem))
        bad = skips_table(*zip(*problems)) if problems else NO_SKIPS
        self.meta = meta[~meta["image_id"].isin(bad["image_id"])].reset_index(drop=True) if len(bad) else meta
        self.skipped = pd.concat([s for s in (skipped, bad) if s is not None and len(s)], ignore_index=True) if (skipped is not None and len(skipped)) or len(bad) else NO_SKIPS
        if len(self.skipped):
            warnings.warn(f"{name}: skipped {len(self.skipped)} file(s)/row(s); see .skipped (first: {self.skipped['image_id'].iloc[0]}: {self.skipped['problem'].iloc[0]})", stacklevel=2)
        if len(self.meta) == 0:
            raise DataError(f"{name}: no usable images left ({len(self.skipped)} skipped; first: {self.skipped['image_id'].iloc[0] if len(self.skipped) else '-'})")

    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.meta.at[i, "path"], self.size, max_pixels=self.max_pixels, min_side=self.min_side)
