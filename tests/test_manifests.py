"""Patient-level splits, nested labeled subsets, checksummed sidecars, and the committed manifests."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from cxrlib.data import LabelPolicy
from cxrlib.data.manifests import (
    ManifestError,
    build_splits,
    check_manifest,
    manifest_csv_bytes,
    manifest_dir,
    read_manifest,
    select,
    sidecar_path,
    write_manifest,
)
from cxrlib.io import sha256_bytes, sha256_file


def fake_meta(n_patients=400, seed=0) -> pd.DataFrame:
    """Patients with 1-5 images each and three labels of prevalence ~40 %, ~10 %, ~2 % (patient-level)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        k = int(rng.integers(1, 6))
        base = rng.random(3) < (0.4, 0.1, 0.02)
        for j in range(k):
            rows.append({"image_id": f"p{p}/img{j}.png", "patient_id": f"P{p:04d}", "A": float(base[0]), "B": float(base[1]), "C": float(base[2] and j == 0)})
    return pd.DataFrame(rows)


def test_build_splits_patient_level_stratified_nested():
    meta = fake_meta()
    df = build_splits(meta, seed=0, stratify=["A", "B", "C"])
    check_manifest(df)  # no patient in two splits, subsets nested at patient level
    assert df["image_id"].tolist() == meta["image_id"].tolist()
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    frac = df["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.02 and abs(frac["val"] - 0.1) < 0.02 and abs(frac["test"] - 0.2) < 0.02
    # stratified: each label's positives are split ~70/10/20 (the rare label C has ~8 positives)
    for lab in "ABC":
        pos = meta[lab] == 1
        share = df.loc[pos, "split"].value_counts(normalize=True)
        tol = 0.05 if lab != "C" else 0.15
        assert abs(share.get("train", 0) - 0.7) < tol and share.get("val", 0) > 0 and share.get("test", 0) > 0, (lab, share)
    # nested labeled subsets of train: 10 c 25 c 50 c 100 %, sizes close to the targets, stratified
    train = df[df["split"] == "train"]
    assert set(train["labeled_frac"]) == {0.1, 0.25, 0.5, 1.0} and df.loc[df["split"] != "train", "labeled_frac"].isna().all()
    prev = set()
    for p in (0.1, 0.25, 0.5, 1.0):
        ids = set(train.loc[train["labeled_frac"] <= p, "image_id"])
        assert prev <= ids
        assert abs(len(ids) / len(train) - p) < 0.03
        prev = ids
    sub = train[train["labeled_frac"] <= 0.25]
    assert abs((meta.loc[sub.index, "A"] == 1).mean() - (meta.loc[train.index, "A"] == 1).mean()) < 0.06


def test_build_splits_deterministic_and_order_free():
    meta = fake_meta(150)
    a = build_splits(meta, seed=3, stratify=["A", "B"])
    b = build_splits(meta.sample(frac=1.0, random_state=1), seed=3, stratify=["A", "B"])
    assert a.set_index("image_id").sort_index().equals(b.set_index("image_id").sort_index())
    c = build_splits(meta, seed=4, stratify=["A", "B"])
    assert not a["split"].equals(c["split"])


def test_build_splits_validates():
    meta = fake_meta(20)
    with pytest.raises(ValueError, match="fractions"):
        build_splits(meta, seed=0, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="lacks columns.*'Z'"):
        build_splits(meta, seed=0, stratify=["Z"])
    with pytest.raises(ValueError, match="duplicate image_id"):
        build_splits(pd.concat([meta, meta.head(1)]), seed=0)
    with pytest.raises(ValueError, match="subsets"):
        build_splits(meta, seed=0, subsets=(0.5, 0.25))


def test_write_read_roundtrip_deterministic_and_tamper_evident(tmp_path):
    meta = fake_meta(60)
    df = build_splits(meta, seed=0, stratify=["A"])
    src = tmp_path / "labels.csv"
    meta.to_csv(src, index=False)
    for name in ("m.csv", "m.csv.gz"):
        p = write_manifest(df, tmp_path / name, source=src, seed=0, label_policy=LabelPolicy(uncertain="ignore"), notes="test")
        first = p.read_bytes()
        write_manifest(df, tmp_path / name, source=src, seed=0, label_policy=LabelPolicy(uncertain="ignore"), notes="test")
        assert p.read_bytes() == first  # deterministic bytes (gzip without time stamp)
        side = json.loads(sidecar_path(p).read_text())
        assert side["sha256"] == sha256_bytes(manifest_csv_bytes(df)) and side["file_sha256"] == sha256_file(p)
        assert side["source"]["sha256"] == sha256_file(src) and side["seed"] == 0
        assert "uncertain (-1) -> ignore" in side["label_policy"]
        assert side["counts"]["splits"]["train"]["images"] == int((df["split"] == "train").sum())
        assert set(side["counts"]["labeled_subsets"]) == {"0.1", "0.25", "0.5", "1"} and side["cxrlib_version"]
        back = read_manifest(p)
        assert back["image_id"].tolist() == df["image_id"].tolist()
        assert back["patient_id"].tolist() == df["patient_id"].tolist()  # ids stay strings ("P0001")
        np.testing.assert_array_equal(back["labeled_frac"].to_numpy(), df["labeled_frac"].to_numpy())

    # an edited manifest no longer matches its sidecar: an error naming the file
    p = tmp_path / "m.csv"
    p.write_bytes(p.read_bytes().replace(b",test,", b",train,", 1))
    with pytest.raises(ManifestError, match=r"m\.csv.*does not match its sidecar"):
        read_manifest(p)
    sidecar_path(p).unlink()
    with pytest.raises(ManifestError, match="has no sidecar"):
        read_manifest(p)


def test_check_manifest_rejects_leaks_and_broken_nesting():
    df = build_splits(fake_meta(40), seed=0)
    leak = df.copy()
    i = leak.index[leak["split"] == "test"][0]
    j = leak.index[(leak["split"] == "train")][0]
    leak.loc[i, "patient_id"] = leak.loc[j, "patient_id"]
    with pytest.raises(ManifestError, match="more than one split"):
        check_manifest(leak)
    multi = df.groupby("patient_id").filter(lambda g: len(g) > 1 and (g["split"] == "train").all())
    broken = df.copy()
    broken.loc[multi.index[0], "labeled_frac"] = 0.1 if broken.loc[multi.index[0], "labeled_frac"] != 0.1 else 0.5
    with pytest.raises(ManifestError, match="not patient-level"):
        check_manifest(broken)
    with pytest.raises(ManifestError, match="val/test rows have a labeled_frac"):
        check_manifest(df.assign(labeled_frac=0.5))


def test_select():
    df = build_splits(fake_meta(80), seed=0)
    assert (select(df, "val")["split"] == "val").all()
    assert len(select(df, "train", 0.25)) < len(select(df, "train", 0.5)) < len(select(df, "train"))
    with pytest.raises(ValueError, match="split='train' only"):
        select(df, "test", 0.5)
    with pytest.raises(ValueError, match="expected one of"):
        select(df, "validation")


# --- the committed manifests -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["chexpert", "nih", "phantom"])
def test_committed_manifest(name):
    """Each committed manifest: sidecar hash, source file hash, patient disjointness, nesting, counts."""
    path = next((p for p in (manifest_dir() / f"{name}.csv.gz", manifest_dir() / f"{name}.csv") if p.is_file()), None)
    if path is None:
        if name == "phantom":
            pytest.skip("data_manifests/phantom.csv is not built yet (the lead builds it)")
        pytest.fail(f"data_manifests/{name}.csv.gz is missing: run `cxr data manifests`")
    df = read_manifest(path)  # verifies the sha256 against the sidecar and runs check_manifest
    side = json.loads(sidecar_path(path).read_text())
    assert len(df) == side["rows"]
    for s, c in side["counts"]["splits"].items():
        part = df[df["split"] == s]
        assert c == {"images": len(part), "patients": part["patient_id"].nunique()}
    assert not (set(df.loc[df.split == "train", "patient_id"]) & set(df.loc[df.split == "test", "patient_id"]))
    train = df[df["split"] == "train"]
    sizes = [int((train["labeled_frac"] <= p).sum()) for p in (0.1, 0.25, 0.5, 1.0)]
    assert sizes == sorted(sizes) and sizes[-1] == len(train)
    if side.get("source") and side["source"].get("package") == "torchxrayvision":
        from cxrlib.data.real import xrv_data_file

        src = xrv_data_file(side["source"]["path"].removeprefix("data/"))
        assert sha256_file(src) == side["source"]["sha256"], f"{src} changed since the manifest was built"
    assert path.stat().st_size < 3_000_000
    if path.name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).startswith(b"image_id,patient_id,split,labeled_frac\n")
