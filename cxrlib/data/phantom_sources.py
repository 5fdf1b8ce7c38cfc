"""Real inputs of the phantom: lung masks and label/demographic tables shipped by torchxrayvision.

* 517 lung segmentation masks (``semantic_masks_v7labs_lungs.zip``): each is cleaned (two largest
  components, holes filled), split into the patient's right lung (image left) and left lung (image
  right), cropped to the lungs' bounding box and resampled to a canonical 96 x 96 frame. Masks that
  do not hold two plausible lungs are dropped (the count is recorded in the bank).
* Label tables, one row per frontal image, CheXpert names, raw values 1/0/-1/NaN:
  CheXpert ``chexpert_train.csv.gz`` (the internal site), NIH ChestX-ray14
  ``Data_Entry_2017_v2020.csv.gz`` and PadChest ``PADCHEST_..._160K_01.02.19.csv.gz`` (the two
  external sites), with patient id, follow-up order, sex, age and view.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .labels import CHEXPERT_LABELS

CANON = 96  # side of the canonical lung-mask frame


def xrv_data_dir() -> Path:
    import torchxrayvision

    return Path(torchxrayvision.__file__).parent / "data"


def source_file(name: str) -> Path:
    path = xrv_data_dir() / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the phantom needs the data files shipped in the torchxrayvision wheel "
            "(pip install torchxrayvision==1.5.7)"
        )
    return path


MASKS_ZIP = "semantic_masks_v7labs_lungs.zip"
CHEXPERT_CSV = "chexpert_train.csv.gz"
NIH_CSV = "Data_Entry_2017_v2020.csv.gz"
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"


# ------------------------------------------------------------------------------------------------
# Lung masks
# ------------------------------------------------------------------------------------------------
def _clean_mask(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Return (right_lung, left_lung, aspect) in the canonical frame, or None if implausible."""
    from PIL import Image
    from scipy import ndimage

    m = img > 127
    if m.mean() < 0.05:
        return None
    lab, n = ndimage.label(m)
    if n < 2:
        return None
    areas = ndimage.sum(m, lab, index=np.arange(1, n + 1))
    order = np.argsort(areas)[::-1]
    a1, a2 = areas[order[0]], areas[order[1]]
    if a2 < 0.25 * a1 or a2 < 0.01 * m.size:
        return None  # one lung only, or a lung split in pieces
    comps = [ndimage.binary_fill_holes(lab == order[k] + 1) for k in (0, 1)]
    cx = [np.nonzero(c)[1].mean() for c in comps]
    if abs(cx[0] - cx[1]) < 0.15 * m.shape[1]:
        return None  # both components on one side
    right, left = (comps[0], comps[1]) if cx[0] < cx[1] else (comps[1], comps[0])  # image left = patient right
    both = right | left
    rows, cols = np.nonzero(both)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    aspect = (r1 - r0) / (c1 - c0)
    if not 0.6 < aspect < 1.6:
        return None
    out = []
    for part in (right, left):
        crop = part[r0:r1, c0:c1].astype(np.uint8) * 255
        res = Image.fromarray(crop).resize((CANON, CANON), Image.BILINEAR)
        out.append(np.asarray(res, dtype=np.float32) / 255.0)
    return out[0], out[1], float(aspect)


@functools.lru_cache(maxsize=1)
def lung_mask_bank() -> dict:
    """The cleaned mask bank: ``right``/``left`` float32 [K, 96, 96] in [0, 1], ``aspect`` [K].

    Built once from the wheel's zip (a few seconds) and cached as ``.npz`` next to the other cache
    entries, keyed by the zip's sha256."""
    from PIL import Image

    from .. import cache as C

    zpath = source_file(MASKS_ZIP)

    def produce(d):
        rights, lefts, aspects, names = [], [], [], []
        with zipfile.ZipFile(zpath) as zf:
            members = [n for n in sorted(zf.namelist()) if not n.endswith("/")]
            for name in members:
                im = Image.open(io.BytesIO(zf.read(name))).convert("L")
                im.thumbnail((320, 320), Image.BILINEAR)  # masks are ~800 px; 320 keeps the outline, 6x faster
                res = _clean_mask(np.asarray(im))
                if res is None:
                    continue
                rights.append(res[0])
                lefts.append(res[1])
                aspects.append(res[2])
                names.append(os.path.basename(name))
        np.savez_compressed(d / "bank.npz", right=np.stack(rights).astype(np.float32), left=np.stack(lefts).astype(np.float32),
                            aspect=np.asarray(aspects, np.float32), names=np.asarray(names), n_source=np.asarray(len(members)))

    k = C.key("phantom-source", {"table": "lung_masks", "version": 1, "canon": CANON}, inputs=[zpath])
    entry = C.get_or_create(k, produce, expected_bytes=5e6, description="cleaned lung-mask bank")
    with np.load(entry / "bank.npz") as z:
        return {k_: z[k_] for k_ in z.files}


# ------------------------------------------------------------------------------------------------
# Label tables
# ------------------------------------------------------------------------------------------------
TABLE_COLUMNS = ("source_patient", "source_order", "sex", "age", "view", *CHEXPERT_LABELS)


@functools.lru_cache(maxsize=1)
def chexpert_table() -> pd.DataFrame:
    """CheXpert train.csv, frontal images: the real joint distribution of labels, sex, age, view."""
    return _cached_table("chexpert", CHEXPERT_CSV, _build_chexpert)


def _source_table(patient, order, sex, age, view, label_values) -> pd.DataFrame:
    """A table of :data:`TABLE_COLUMNS`, sorted by patient and study order: ``label_values(label)``
    gives each CheXpert label's column (1 / 0 / -1 uncertain / NaN)."""
    out = pd.DataFrame({"source_patient": np.asarray(patient), "source_order": np.asarray(order), "sex": np.asarray(sex),
                        "age": np.asarray(age), "view": np.asarray(view)})
    for lab in CHEXPERT_LABELS:
        out[lab] = np.asarray(label_values(lab), dtype=np.float64)
    return out.sort_values(["source_patient", "source_order"], kind="stable").reset_index(drop=True)


def _mapped(found: pd.Series, mapping: dict[str, str], label: str) -> np.ndarray:
    """1.0 where a row's list of source labels holds one that ``mapping`` sends to ``label``, else 0.0."""
    srcs = {k for k, v in mapping.items() if v == label}
    return found.map(lambda fs: float(any(f in srcs for f in fs))).to_numpy()


def _build_chexpert(src: Path) -> pd.DataFrame:
    d = pd.read_csv(src)
    d = d[d["Frontal/Lateral"] == "Frontal"].copy()
    parts = d["Path"].str.extract(r"(patient\d+)/study(\d+)/")
    return _source_table(parts[0], parts[1].astype(int), d["Sex"].map({"Male": "M", "Female": "F"}),
                         pd.to_numeric(d["Age"], errors="coerce"), d["AP/PA"].map({"PA": "PA"}).fillna("AP"),
                         lambda lab: d[lab])


# NIH ChestX-ray14 finding -> CheXpert observation. Emphysema, Fibrosis and Hernia have no CheXpert
# counterpart (they are not rendered); Enlarged Cardiomediastinum, Fracture and Support Devices are
# not annotated in NIH, so they are NaN ("not annotated") there.
NIH_TO_CHEXPERT = {
    "No Finding": "No Finding",
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural_Thickening": "Pleural Other",
}
NIH_UNANNOTATED = ("Enlarged Cardiomediastinum", "Fracture", "Support Devices")


@functools.lru_cache(maxsize=1)
def nih_table() -> pd.DataFrame:
    return _cached_table("nih", NIH_CSV, _build_nih)


def _build_nih(src: Path) -> pd.DataFrame:
    d = pd.read_csv(src)
    findings = d["Finding Labels"].str.split("|")
    return _source_table(d["Patient ID"].astype(str), d["Follow-up #"].astype(int), d["Patient Gender"],
                         pd.to_numeric(d["Patient Age"], errors="coerce").clip(upper=95), d["View Position"],
                         lambda lab: np.full(len(d), np.nan) if lab in NIH_UNANNOTATED else _mapped(findings, NIH_TO_CHEXPERT, lab))


# PadChest label (lower case) -> CheXpert observation; every label is annotated (no uncertainty).
PADCHEST_TO_CHEXPERT = {
    "normal": "No Finding",
    "superior mediastinal enlargement": "Enlarged Cardiomediastinum",
    "mediastinal enlargement": "Enlarged Cardiomediastinum",
    "mediastinic lipomatosis": "Enlarged Cardiomediastinum",
    "cardiomegaly": "Cardiomegaly",
    "infiltrates": "Lung Opacity",
    "alveolar pattern": "Lung Opacity",
    "interstitial pattern": "Lung Opacity",
    "reticular interstitial pattern": "Lung Opacity",
    "reticulonodular interstitial pattern": "Lung Opacity",
    "ground glass pattern": "Lung Opacity",
    "increased density": "Lung Opacity",
    "nodule": "Lung Lesion",
    "multiple nodules": "Lung Lesion",
    "pulmonary mass": "Lung Lesion",
    "mass": "Lung Lesion",
    "lung metastasis": "Lung Lesion",
    "pulmonary edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "laminar atelectasis": "Atelectasis",
    "lobar atelectasis": "Atelectasis",
    "segmental atelectasis": "Atelectasis",
    "round atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleural effusion": "Pleural Effusion",
    "loculated pleural effusion": "Pleural Effusion",
    "costophrenic angle blunting": "Pleural Effusion",
    "pleural thickening": "Pleural Other",
    "apical pleural thickening": "Pleural Other",
    "calcified pleural thickening": "Pleural Other",
    "calcified pleural plaques": "Pleural Other",
    "callus rib fracture": "Fracture",
    "rib fracture": "Fracture",
    "clavicle fracture": "Fracture",
    "vertebral fracture": "Fracture",
    "humeral fracture": "Fracture",
    "fracture": "Fracture",
    "nsg tube": "Support Devices",
    "pacemaker": "Support Devices",
    "dual chamber device": "Support Devices",
    "single chamber device": "Support Devices",
    "electrical device": "Support Devices",
    "endotracheal tube": "Support Devices",
    "tracheostomy tube": "Support Devices",
    "central venous catheter via jugular vein": "Support Devices",
    "central venous catheter via subclavian vein": "Support Devices",
    "central venous catheter": "Support Devices",
    "reservoir central venous catheter": "Support Devices",
    "chest drain tube": "Support Devices",
}


def _parse_padchest_labels(s) -> list[str]:
    if not isinstance(s, str):
        return []
    try:
        return [x.strip().lower() for x in ast.literal_eval(s)]
    except (ValueError, SyntaxError):
        return []


@functools.lru_cache(maxsize=1)
def padchest_table() -> pd.DataFrame:
    """PadChest frontal images (PA, AP, AP_horizontal) with parseable labels. The derived table is
    cached as a small CSV next to the cache entries (the 17 MB source takes seconds to parse)."""
    return _cached_table("padchest", PADCHEST_CSV, _build_padchest)


def _build_padchest(src: Path) -> pd.DataFrame:
    d = pd.read_csv(src, low_memory=False, usecols=["PatientID", "StudyDate_DICOM", "PatientBirth", "PatientSex_DICOM", "Projection", "Labels"])
    d = d[d["Projection"].isin(["PA", "AP", "AP_horizontal"])]
    labels = d["Labels"].map(_parse_padchest_labels)
    keep = labels.map(len) > 0
    d, labels = d[keep], labels[keep]
    year = pd.to_numeric(d["StudyDate_DICOM"].astype(str).str[:4], errors="coerce")
    return _source_table(d["PatientID"].astype(str), pd.to_numeric(d["StudyDate_DICOM"], errors="coerce").fillna(0).astype(np.int64),
                         d["PatientSex_DICOM"].where(d["PatientSex_DICOM"].isin(["M", "F"])),
                         (year - pd.to_numeric(d["PatientBirth"], errors="coerce")).clip(0, 100),
                         np.where(d["Projection"].to_numpy() == "PA", "PA", "AP"), lambda lab: _mapped(labels, PADCHEST_TO_CHEXPERT, lab))


def _cached_table(name: str, filename: str, build) -> pd.DataFrame:
    """A derived label table, built once from the shipped CSV and kept in the (verified) cache."""
    from .. import cache as C

    src = source_file(filename)
    k = C.key("phantom-source", {"table": name, "version": 1}, inputs=[src])
    entry = C.get_or_create(k, lambda d: build(src).to_csv(d / "table.csv.gz", index=False),
                            expected_bytes=2e7, description=f"{name} label table")
    return pd.read_csv(entry / "table.csv.gz", dtype={"source_patient": str, "sex": object, "view": str})


SOURCE_TABLES = {"chexpert": chexpert_table, "nih": nih_table, "padchest": padchest_table}
SOURCE_FILES = {"chexpert": CHEXPERT_CSV, "nih": NIH_CSV, "padchest": PADCHEST_CSV}
