"""Real-dataset loaders on tiny fixture folders the tests create (CheXpert, NIH, MIMIC, Kermany, MedMNIST).

The builders here (``make_chexpert`` ...) are also used by test_bad_inputs.py and test_data_cli.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib.data import DataError, LabelPolicy, load_dataset, load_meta
from cxrlib.data import kermany, medmnist, real
from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.data.manifests import build_splits, write_manifest

FINDINGS = [c for c in CHEXPERT_LABELS if c != "No Finding"]


def jpeg_bytes(value: int, w: int = 40, h: int = 48) -> bytes:
    """A small grayscale JPEG: a flat image at ``value`` with a bright square (visible after resizing)."""
    a = np.full((h, w), value, np.uint8)
    a[h // 3 : h // 2, w // 3 : w // 2] = 255
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png_bytes(value: int, w: int = 40, h: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w), value, np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _chexpert_labels(p: int, s: int) -> dict:
    """A varied raw label row: 1/0/-1/NaN; patient 1 study 1 is 'No Finding' with a support device."""
    if (p, s) == (1, 1):
        row = {c: np.nan for c in FINDINGS}
        row.update({"No Finding": 1.0, "Support Devices": 1.0})
        return row
    row = {"No Finding": np.nan}
    for j, c in enumerate(FINDINGS):
        row[c] = [1.0, 0.0, -1.0, np.nan][(p + s + j) % 4]
    return row


def make_chexpert(root: Path, *, n_patients: int = 8, replace: dict[int, bytes] | None = None, rows: list[dict] | None = None) -> Path:
    """``root/train.csv`` + ``root/train/patientNNNNN/studyN/view{1_frontal,2_lateral}.jpg``.

    ``replace`` = {row: bytes} puts other bytes in the image file of that CSV row (bad-input corpus)."""
    recs = []
    for p in range(1, n_patients + 1):
        for s in (1, 2):
            for view in ("frontal", "lateral"):
                if view == "lateral" and s == 2:
                    continue
                rel = f"train/patient{p:05d}/study{s}/view{1 if view == 'frontal' else 2}_{view}.jpg"
                recs.append(
                    {
                        "Path": f"CheXpert-v1.0-small/{rel}",
                        "Sex": "Female" if p % 2 else "Male",
                        "Age": 40 + p,
                        "Frontal/Lateral": "Frontal" if view == "frontal" else "Lateral",
                        "AP/PA": ("AP" if p % 3 else "PA") if view == "frontal" else np.nan,
                        **_chexpert_labels(p, s),
                    }
                )
    df = pd.DataFrame(recs + (rows or []))
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "train.csv", index=False)
    for i, path in enumerate(df["Path"]):
        _put(root / path.replace("CheXpert-v1.0-small/", ""), (replace or {}).get(i, jpeg_bytes(20 + 10 * i)))
    return root


def make_nih(root: Path, *, n_patients: int = 8, replace: dict[int, bytes] | None = None) -> Path:
    """``root/Data_Entry_2017_v2020.csv`` + ``root/images_001/images/*.png`` (NIH's release layout)."""
    findings = ["No Finding", "Cardiomegaly", "Mass|Effusion", "Nodule", "Pneumonia|Infiltration", "Hernia"]
    recs = []
    for p in range(1, n_patients + 1):
        for k in range(2):
            recs.append(
                {
                    "Image Index": f"{p:08d}_{k:03d}.png",
                    "Finding Labels": findings[(p + k) % len(findings)],
                    "Follow-up #": k,
                    "Patient ID": p,
                    "Patient Age": 30 + p,
                    "Patient Sex": "M" if p % 2 else "F",  # the v2020 file's name for 'Patient Gender'
                    "View Position": "PA" if p % 2 else "AP",
                    "OriginalImage[Width": 2048,
                    "Height]": 2048,
                    "OriginalImagePixelSpacing[x": 0.14,
                    "y]": 0.14,
                }
            )
    df = pd.DataFrame(recs)
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    for i, name in enumerate(df["Image Index"]):
        _put(root / "images_001" / "images" / name, (replace or {}).get(i, png_bytes(30 + 10 * i)))
    return root


def make_mimic(root: Path, *, n_patients: int = 6, replace: dict[int, bytes] | None = None) -> Path:
    """MIMIC-CXR-JPG: label, metadata and split CSVs (gzipped) + ``files/pNN/pNNNNNNNN/sNNNNNNNN/*.jpg``."""
    labels, meta, split = [], [], []
    for p in range(n_patients):
        sid = 10000000 + p
        for s in range(2):
            study = 50000000 + 10 * p + s
            lab = {"subject_id": sid, "study_id": study, **_chexpert_labels(p + 1, s + 1)}
            labels.append(lab)
            for v, view in enumerate(("PA" if p % 2 else "AP", "LATERAL")):
                dicom = f"d{p}{s}{v}"
                meta.append({"dicom_id": dicom, "subject_id": sid, "study_id": study, "ViewPosition": view, "StudyDate": 21000101 + s})
                split.append({"dicom_id": dicom, "study_id": study, "subject_id": sid, "split": ["train", "train", "validate", "test", "train", "test"][p]})
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    for i, m in enumerate(meta):
        sid, study = str(m["subject_id"]), str(m["study_id"])
        _put(root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{study}" / f"{m['dicom_id']}.jpg", (replace or {}).get(i, jpeg_bytes(40 + 5 * i)))
    return root


KERMANY_FILES = {
    "train/NORMAL/IM-0115-0001.jpeg": 60,
    "train/NORMAL/NORMAL2-IM-0771-0001.jpeg": 70,
    "train/PNEUMONIA/person1_bacteria_1.jpeg": 80,
    "train/PNEUMONIA/person1_bacteria_2.jpeg": 90,
    "train/PNEUMONIA/person3_virus_6.jpeg": 100,
    "val/NORMAL/IM-0200-0001.jpeg": 110,
    "val/PNEUMONIA/person20_virus_51.jpeg": 120,
    "test/NORMAL/IM-0300-0001.jpeg": 130,
    "test/PNEUMONIA/person40_bacteria_2.jpeg": 140,
}


def make_kermany(root: Path, *, extra: dict[str | bytes, bytes] | None = None) -> Path:
    """The published layout; ``extra`` = {relative name: bytes} adds files (names may be bytes: non-UTF-8)."""
    for rel, v in KERMANY_FILES.items():
        _put(root / rel, jpeg_bytes(v))
    for rel, data in (extra or {}).items():
        if isinstance(rel, bytes):
            import os

            p = os.path.join(os.fsencode(root), rel)
            with open(p, "wb") as f:
                f.write(data)
        else:
            _put(root / rel, data)
    return root


def make_medmnist(root: Path, flavor: str = "pneumoniamnist", n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    n_labels = len(medmnist.MEDMNIST_LABELS[flavor])
    arrays = {}
    for s, k in (("train", n), ("val", 2), ("test", 3)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (k, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (k, n_labels), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / f"{flavor}.npz", **arrays)
    return root


def manifest_for(meta: pd.DataFrame, path: Path, labels=CHEXPERT_LABELS) -> Path:
    """A tiny manifest (50/25/25) for a fixture dataset."""
    df = build_splits(meta, fractions=(0.5, 0.25, 0.25), seed=0, stratify=[c for c in labels if c in meta.columns])
    return write_manifest(df, path, seed=0, label_policy=LabelPolicy())


def check_sample(ds, size: int) -> dict:
    s = ds[0]
    assert s["image"].shape == (1, size, size) and s["image"].dtype == torch.float32
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert s["labels"].shape == (len(ds.label_names),) and s["label_mask"].dtype == torch.bool
    assert s["sex"] in (0, 1, -1) and isinstance(s["patient_id"], str) and s["patient_id"]
    return s


# --- CheXpert --------------------------------------------------------------------------------------
def test_chexpert_loader(tmp_path):
    root = make_chexpert(tmp_path / "CheXpert-v1.0-small")
    meta, skipped = real.chexpert_meta(root)
    assert len(skipped) == 0
    assert len(meta) == 16 and set(meta["view"]) == {"AP", "PA"}  # laterals dropped
    m = manifest_for(meta, tmp_path / "chexpert.csv")

    train = load_dataset("chexpert", root=root, manifest=m, split="train", size=32)
    test = load_dataset("chexpert", root=root, manifest=m, split="test", size=32)
    s = check_sample(train, 32)
    assert s["site"] == "chexpert" and s["view"] in ("AP", "PA")
    assert not set(train.meta["patient_id"]) & set(test.meta["patient_id"])
    assert train.meta["patient_id"].str.fullmatch(r"\d{5}").all()  # xrv's patient id: the digits
    # images: the bright square of the fixture survives the center crop + resize
    x = s["image"][0]
    assert float(x.max()) > 0.9 and float(x.min()) < 0.5

    # raw values kept (xrv would turn -1 into NaN and drop 'No Finding'); the policy decides
    everything = load_dataset("chexpert", root=root, manifest=m, size=32)
    raw = everything.raw_labels()
    assert set(np.unique(raw[~np.isnan(raw)])) == {-1.0, 0.0, 1.0}
    assert "No Finding" in everything.label_names and "Pleural Effusion" in everything.label_names
    row = everything.meta.index[everything.meta["image_id"] == "train/patient00001/study1/view1_frontal.jpg"][0]
    r = everything.meta.loc[row]
    assert r["No Finding"] == 1 and r["Support Devices"] == 1  # the device is not zeroed
    assert r["Cardiomegaly"] == 0  # No Finding = 1: empty findings become explicit negatives
    assert r["sex"] == "F" and r["age"] == 41

    unc = raw == -1
    y1, m1 = LabelPolicy(uncertain="ones").apply(raw)
    y2, m2 = LabelPolicy(uncertain="ignore", missing="ignore").apply(raw)
    assert (y1[unc] == 1).all() and (~m2[unc]).all() and (~m2[np.isnan(raw)]).all()
    ds = load_dataset("chexpert", root=root, manifest=m, size=32, policy=LabelPolicy(uncertain="ignore"))
    imgs, y, mask = ds.to_tensors()
    assert imgs.dtype == torch.uint8 and imgs.shape == (len(ds), 1, 32, 32)
    assert (~mask.numpy()[unc]).all()

    # views, labels, n_max, labeled subsets
    pa = load_dataset("chexpert", root=root, manifest=m, size=32, views=("PA",))
    assert set(pa.meta["view"]) == {"PA"} and 0 < len(pa) < len(everything)
    five = load_dataset("chexpert", root=root, manifest=m, size=32, labels=["Edema", "Atelectasis"], n_max=3)
    assert len(five) == 3 and five[0]["labels"].shape == (2,)
    with pytest.raises(ValueError, match="labeled_fraction=0.3"):
        load_dataset("chexpert", root=root, manifest=m, split="train", labeled_fraction=0.3)
    sub = load_dataset("chexpert", root=root, manifest=m, split="train", labeled_fraction=0.5, size=32)
    assert set(sub.meta["image_id"]) <= set(train.meta["image_id"]) and len(sub) < len(train)


@pytest.mark.slow  # parses CheXpert's full train.csv (~5 s)
def test_chexpert_labels_only_from_torchxrayvision_csv():
    """Without a root, the label CSV shipped in torchxrayvision + the committed manifest (no images)."""
    meta, _ = load_meta("chexpert", split="val", n_max=50)
    assert len(meta) == 50 and (meta["split"] == "val").all() and "path" not in meta.columns
    with pytest.raises(FileNotFoundError, match="root=None"):
        load_dataset("chexpert", split="val")


# --- NIH -------------------------------------------------------------------------------------------
def test_nih_loader(tmp_path):
    root = make_nih(tmp_path / "nih")
    meta, _ = real.nih_meta(root)
    assert len(meta) == 16 and meta["path"].notna().all()  # found inside images_001/images/
    m = manifest_for(meta, tmp_path / "nih.csv", labels=real.NIH_ALL_LABELS)
    ds = load_dataset("nih", root=root, manifest=m, size=32)
    check_sample(ds, 32)
    assert ds.label_names == real.NIH_LABELS
    r = ds.meta.set_index("image_id").loc["00000002_000.png"]  # 'Mass|Effusion'
    assert r["Mass"] == 1 and r["Effusion"] == 1 and r["Nodule"] == 0 and r["No Finding"] == 0
    assert r["sex"] == "F" and r["age"] == 32

    # asked for CheXpert names: mapped where defensible, NaN (not annotated) elsewhere
    cx = load_dataset("nih", root=root, manifest=m, size=32, labels=["Pleural Effusion", "Lung Lesion", "Fracture"], policy=LabelPolicy(missing="ignore"))
    r = cx.meta.set_index("image_id")
    assert r.loc["00000002_000.png", "Pleural Effusion"] == 1 and r.loc["00000002_000.png", "Lung Lesion"] == 1
    assert r.loc["00000003_000.png", "Lung Lesion"] == 1  # Nodule
    assert r["Fracture"].isna().all()
    _, mask = cx.targets()
    assert not mask[:, 2].any() and mask[:, :2].all()


# --- MIMIC -----------------------------------------------------------------------------------------
def test_mimic_loader(tmp_path):
    root = make_mimic(tmp_path / "mimic-cxr-jpg" / "2.0.0")
    train = load_dataset("mimic", root=root, split="train", size=32)  # the official split file
    check_sample(train, 32)
    assert set(train.meta["view"]) <= {"AP", "PA"} and len(train) == 6  # 3 train patients x 2 frontal
    val = load_dataset("mimic", root=root, split="val", size=32)
    assert set(val.meta["patient_id"]) == {"10000002"}
    # xrv's MIMIC class zeroes Support Devices where No Finding = 1: we keep the CSV's 1
    r = train.meta.set_index("study")
    assert r.loc["50000000", "Support Devices"] == 1 and r.loc["50000000", "No Finding"] == 1
    assert r.loc["50000000", "Edema"] == 0
    with pytest.raises(ValueError, match="manifest"):
        load_dataset("mimic", root=root, split="train", labeled_fraction=0.5)
    # a manifest works too
    meta, _ = real.mimic_meta(root)
    m = manifest_for(meta[meta["view"].isin(["AP", "PA"])], tmp_path / "mimic.csv")
    assert len(load_dataset("mimic", root=root, manifest=m, size=32)) == 12


# --- Kermany ---------------------------------------------------------------------------------------
def test_kermany_loader(tmp_path):
    root = make_kermany(tmp_path / "chest_xray")
    ds = load_dataset("kermany", root=root, split="train", size=32)
    check_sample(ds, 32)
    assert ds.label_names == ("Pneumonia", "Bacterial Pneumonia", "Viral Pneumonia")
    r = ds.meta.set_index("image_id")
    assert r.loc["train/PNEUMONIA/person1_bacteria_2.jpeg", "patient_id"] == "person1"
    assert r.loc["train/PNEUMONIA/person3_virus_6.jpeg", ["Pneumonia", "Bacterial Pneumonia", "Viral Pneumonia"]].tolist() == [1, 0, 1]
    assert r.loc["train/PNEUMONIA/person1_bacteria_1.jpeg", ["Pneumonia", "Bacterial Pneumonia", "Viral Pneumonia"]].tolist() == [1, 1, 0]
    assert r.loc["train/NORMAL/IM-0115-0001.jpeg", "Pneumonia"] == 0
    assert r.loc["train/NORMAL/NORMAL2-IM-0771-0001.jpeg", "patient_id"] == "NORMAL2-IM-0771"
    assert len(load_dataset("kermany", root=root, split="test")) == 2
    assert len(load_dataset("kermany", root=root)) == len(KERMANY_FILES)
    assert kermany.parse_kermany_name("person1_virus_6.jpeg", "PNEUMONIA") == ("person1", "virus")
    with pytest.raises(ValueError, match="bacterial from viral"):
        kermany.parse_kermany_name("person1_6.jpeg", "PNEUMONIA")


# --- MedMNIST --------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", ["pneumoniamnist", "chestmnist"])
def test_medmnist_loader(tmp_path, flavor):
    root = make_medmnist(tmp_path / "medmnist", flavor)
    ds = load_dataset(flavor, root=root, split="train", size=32)  # the folder; the file works too
    check_sample(ds, 32)
    assert len(ds) == 6 and ds.label_names == medmnist.MEDMNIST_LABELS[flavor]
    with np.load(root / f"{flavor}.npz") as z:
        assert np.array_equal(ds.raw_labels(), z["train_labels"].astype(float))
        # upsampled 28 -> 56 keeps the mean intensity
        big = load_dataset(flavor, root=root / f"{flavor}.npz", split="val", size=56)
        assert abs(float(big[1]["image"].mean()) - z["val_images"][1].mean() / 255) < 0.02
    assert len(load_dataset(flavor, root=root, split="test", n_max=2)) == 2


# --- a missing root, an empty folder, a wrong layout: errors that name the path --------------------
@pytest.mark.parametrize("name", ["chexpert", "nih", "mimic", "kermany", "pneumoniamnist", "chestmnist"])
def test_missing_empty_wrong_layout(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises((FileNotFoundError, DataError), match="nowhere"):
        load_dataset(name, root=missing, split="train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises((FileNotFoundError, DataError), match="empty") as e:
        load_dataset(name, root=empty, split="train")
    assert "expected" in str(e.value) or "no " in str(e.value)
    wrong = tmp_path / "wrong"
    (wrong / "images").mkdir(parents=True)
    (wrong / "images" / "a.png").write_bytes(png_bytes(10))
    with pytest.raises((FileNotFoundError, DataError), match="wrong"):
        load_dataset(name, root=wrong, split="train")


def test_kermany_layout_errors(tmp_path):
    root = make_kermany(tmp_path / "outer" / "chest_xray")
    with pytest.raises(DataError, match=r"did you mean root=.*chest_xray"):
        load_dataset("kermany", root=tmp_path / "outer")
    (root / "val" / "NORMAL").rename(root / "val" / "normal_images")
    with pytest.raises(DataError, match="lacks NORMAL/"):
        load_dataset("kermany", root=root)


def test_dataset_images_missing_on_disk(tmp_path):
    """The CSV lists images the folder does not have: an error naming one, or skipped with a count."""
    root = make_chexpert(tmp_path / "cx")
    meta, _ = real.chexpert_meta(root)
    m = manifest_for(meta, tmp_path / "m.csv")
    (root / "train/patient00002/study1/view1_frontal.jpg").unlink()
    with pytest.raises(DataError, match="patient00002/study1/view1_frontal.jpg: file not found"):
        load_dataset("chexpert", root=root, manifest=m)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = load_dataset("chexpert", root=root, manifest=m, on_error="skip")
    assert len(ds) == 15 and ds.skipped["problem"].tolist() == ["file not found"]
