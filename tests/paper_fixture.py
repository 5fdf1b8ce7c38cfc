"""A tiny *real-data-layout* world for the ``paper`` profile's tests (tests/test_paper_path.py).

:func:`build_paper_world` writes, under one folder:

* ``CheXpert-v1.0-small/``: ``train.csv`` and ``valid.csv`` with CheXpert's columns (``Path`` starting
  ``CheXpert-v1.0-small/``, Sex, Age, Frontal/Lateral, AP/PA, the 14 labels with 1/0/-1/empty) and
  ``train/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`` (non-square JPEGs, as the -small release);
* ``ChestX-ray14/``: ``Data_Entry_2017.csv`` (the 2017 column names: ``Patient Gender``,
  ``OriginalImage[Width``...), ``train_val_list.txt``, ``test_list.txt`` and
  ``images_001/images/NNNNNNNN_NNN.png`` (NIH's release layout);
* ``manifests/``: ``chexpert.csv.gz`` / ``nih.csv.gz`` + sidecars: the *first patients of the committed
  manifests* (``data_manifests/``), with their committed split and labeled subset, written by
  :func:`cxrlib.data.manifests.write_manifest`. Point ``CXR_MANIFEST_DIR`` here: the loaders refuse a
  manifest row missing from the metadata, and the committed manifests list all 191,010 / 112,120
  images. Image ids and patient ids are therefore the real ones; only the pixels and the labels are
  made up. There is no phantom manifest in it, so a ``paper`` run that falls back to the phantom fails.

Labels are drawn per image (about 30 % positives for each competition label, with some uncertain
``-1`` and empty cells), and the images carry label-dependent structure (an enlarged heart, bright lung
bases, hazy lungs, a band, a patch), so a classifier can learn something in a few steps.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrlib.data.labels import CHEXPERT_LABELS, LabelPolicy
from cxrlib.data.manifests import find_manifest, write_manifest

CHEXPERT_DIR = "CheXpert-v1.0-small"
NIH_DIR = "ChestX-ray14"
FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
NIH_FINDING = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
               "Edema": "Edema", "Pleural Effusion": "Effusion"}


def render(findings: set[str], rng: np.random.Generator, w: int = 64, h: int = 72) -> np.ndarray:
    """A crude frontal radiograph (uint8, ``h`` x ``w``): bright body, two dark lungs, a heart, noise,
    and one visible sign per finding."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * 0.5, w * 0.5
    img = np.full((h, w), 170.0, np.float32)
    for side in (-1, 1):  # lungs
        lung = ((xx - (cx + side * w * 0.2)) / (w * 0.16)) ** 2 + ((yy - cy) / (h * 0.33)) ** 2 < 1
        img[lung] = 60.0
    r = 0.17 if "Cardiomegaly" in findings else 0.10  # heart
    img[((xx - cx - 2) / (w * r)) ** 2 + ((yy - cy - h * 0.12) / (h * r)) ** 2 < 1] = 200.0
    lungs = img < 100
    if "Pleural Effusion" in findings:
        img[lungs & (yy > h * 0.68)] = 190.0
    if "Edema" in findings:
        img[lungs] += 55.0
    if "Atelectasis" in findings:
        img[lungs & (np.abs(yy - h * 0.55) < 3)] = 185.0
    if "Consolidation" in findings:
        img[((xx - cx + w * 0.2) / 6) ** 2 + ((yy - h * 0.35) / 6) ** 2 < 1] = 210.0
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(a: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def committed_prefix(name: str, *, need: dict[str, int], max_rows: int = 20_000) -> pd.DataFrame:
    """The first whole patients of the committed manifest ``name`` holding at least ``need[split]``
    images of each split (the committed file is in patient order; read without its full sha256 check,
    which :func:`write_manifest` / ``read_manifest`` redo on the subset)."""
    with gzip.open(find_manifest(name), "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, nrows=max_rows, dtype={"image_id": str, "patient_id": str, "split": str},
                         keep_default_na=False, na_values={"labeled_frac": [""]})
    counts = {s: 0 for s in need}
    done_at = len(df)
    for i, s in enumerate(df["split"]):
        if s in counts:
            counts[s] += 1
        if all(counts[k] >= v for k, v in need.items()):
            done_at = i + 1
            break
    else:
        raise AssertionError(f"{name}: the first {max_rows} manifest rows do not hold {need}")
    last = df["patient_id"].iloc[done_at - 1]  # finish that patient's images
    more = df.index[(df.index >= done_at) & (df["patient_id"] == last)]
    return df.iloc[: (more.max() + 1 if len(more) else done_at)].reset_index(drop=True)


def _chexpert_row(rng: np.random.Generator) -> tuple[dict, set[str]]:
    row: dict = {c: np.nan for c in CHEXPERT_LABELS}
    shown = set()
    for c in FINDINGS:
        u = rng.random()
        if u < 0.30:
            row[c], _ = 1.0, shown.add(c)
        elif u < 0.36:
            row[c] = -1.0  # uncertain (not drawn)
        elif u < 0.70:
            row[c] = 0.0
    if not shown and rng.random() < 0.5:
        row["No Finding"] = 1.0
    if rng.random() < 0.2:
        row["Support Devices"] = 1.0
    return row, shown


def make_chexpert_small(root: Path, manifest: pd.DataFrame, rng: np.random.Generator) -> Path:
    """``root`` = a CheXpert-v1.0-small folder with every image of ``manifest`` (frontal) plus a lateral
    for every second study, and a small ``valid.csv`` + ``valid/`` of 4 patients."""
    recs = []
    for k, (image_id, pid) in enumerate(zip(manifest["image_id"], manifest["patient_id"])):
        row, shown = _chexpert_row(rng)
        sex = "Female" if int(pid) % 2 else "Male"
        age = int(30 + (int(pid) * 7) % 60)
        recs.append({"Path": f"{CHEXPERT_DIR}/{image_id}", "Sex": sex, "Age": age, "Frontal/Lateral": "Frontal",
                     "AP/PA": "AP" if k % 3 else "PA", **row})
        _put(root / image_id, _encode(render(shown, rng), "JPEG"))
        if k % 2 == 0 and image_id.endswith("view1_frontal.jpg"):  # a lateral: in the CSV, never in the manifest
            lateral = image_id.replace("view1_frontal", "view9_lateral")
            recs.append({**recs[-1], "Path": f"{CHEXPERT_DIR}/{lateral}", "Frontal/Lateral": "Lateral", "AP/PA": np.nan})
            _put(root / lateral, _encode(render(shown, rng).T.copy(), "JPEG"))
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    pd.DataFrame(recs)[cols].to_csv(root / "train.csv", index=False)
    valid = []
    for p in range(64541, 64545):  # the official validation patients' numbering
        rel = f"valid/patient{p}/study1/view1_frontal.jpg"
        row, shown = _chexpert_row(rng)
        valid.append({"Path": f"{CHEXPERT_DIR}/{rel}", "Sex": "Male", "Age": 55, "Frontal/Lateral": "Frontal", "AP/PA": "AP",
                      **{c: (0.0 if np.isnan(v) else v) for c, v in row.items()}})
        _put(root / rel, _encode(render(shown, rng), "JPEG"))
    pd.DataFrame(valid)[cols].to_csv(root / "valid.csv", index=False)
    return root


def make_nih(root: Path, manifest: pd.DataFrame, rng: np.random.Generator) -> Path:
    """``root`` = a ChestX-ray14 folder (2017 release) with every image of ``manifest``."""
    recs = []
    for image_id, pid in zip(manifest["image_id"], manifest["patient_id"]):
        shown = {c for c in FINDINGS if rng.random() < 0.3}
        names = sorted(NIH_FINDING[c] for c in shown) + (["Nodule"] if rng.random() < 0.05 else [])
        recs.append({"Image Index": image_id, "Finding Labels": "|".join(names) or "No Finding",
                     "Follow-up #": int(image_id.split("_")[1].split(".")[0]), "Patient ID": int(pid),
                     "Patient Age": int(20 + (int(pid) * 11) % 70), "Patient Gender": "F" if int(pid) % 2 else "M",
                     "View Position": "PA" if rng.random() < 0.6 else "AP", "OriginalImage[Width": 2500,
                     "Height]": 2048, "OriginalImagePixelSpacing[x": 0.143, "y]": 0.143})
        _put(root / "images_001" / "images" / image_id, _encode(render(shown, rng, 64, 64), "PNG"))
    df = pd.DataFrame(recs)
    df.to_csv(root / "Data_Entry_2017.csv", index=False)
    test = set(manifest.loc[manifest["split"] == "test", "image_id"])
    (root / "test_list.txt").write_text("".join(f"{i}\n" for i in df["Image Index"] if i in test))
    (root / "train_val_list.txt").write_text("".join(f"{i}\n" for i in df["Image Index"] if i not in test))
    return root


def build_paper_world(out: Path, *, chexpert_need=None, nih_need=None, seed: int = 0) -> dict[str, Path]:
    """Write the folders of the module docstring under ``out``; returns ``{"chexpert", "nih", "manifests"}``."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    mdir = out / "manifests"
    mdir.mkdir(parents=True, exist_ok=True)
    paths = {"manifests": mdir}
    for name, need, make, folder in (("chexpert", chexpert_need or {"train": 220, "val": 70, "test": 70}, make_chexpert_small, CHEXPERT_DIR),
                                     ("nih", nih_need or {"test": 70}, make_nih, NIH_DIR)):
        m = committed_prefix(name, need=need)
        write_manifest(m, mdir / f"{name}.csv.gz", seed=0, label_policy=LabelPolicy(),
                       notes=f"test fixture: the first {m['patient_id'].nunique()} patients of the committed data_manifests/{name}.csv.gz")
        paths[name] = make(out / folder, m, rng)
    return paths
