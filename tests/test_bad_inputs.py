"""The bad-input corpus (issue 7), built here in tmp_path and run through every loader and the CLI.

Each case gets either a correct result (16-bit, RGBA, palette converted; non-UTF-8 names loaded) or a
clear error naming the file and the problem; with ``on_error="skip"`` bad files are left out and
counted, never dropped silently.
"""

from __future__ import annotations

import io
import re
import os
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.cli import main
from cxrlib.data import DataError, ImageReadError, load_dataset, read_image
from cxrlib.data import real
from cxrlib.data.manifests import ManifestError, manifest_csv_bytes, sidecar_path
from cxrlib.io import sha256_bytes

from test_real_loaders import jpeg_bytes, make_chexpert, make_kermany, make_medmnist, make_mimic, make_nih, manifest_for


def _png(arr: np.ndarray, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` (a decompression bomb's shape) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def corpus() -> dict[str, tuple[bytes, str | None]]:
    """case -> (file bytes, expected problem regex or None = loads correctly)."""
    png16 = np.full((40, 40), 65535, np.uint16)
    png16[:, 20:] = 32768
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :20, 3] = 255  # left half opaque, right half fully transparent
    pal = Image.fromarray(np.tile(np.arange(2, dtype=np.uint8).repeat(20), (40, 1)), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)  # index 0 black, 1 white
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    good = jpeg_bytes(100)
    noisy_buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(noisy_buf, format="JPEG")
    noisy = noisy_buf.getvalue()
    return {
        "16-bit PNG": (_png(png16), None),
        "RGBA PNG": (_png(rgba, "RGBA"), None),
        "palette PNG": (buf.getvalue(), None),
        "truncated JPEG": (good[: len(good) // 2], "corrupt or truncated"),  # cut inside the header
        "truncated JPEG body": (noisy[: int(len(noisy) * 0.8)], "corrupt or truncated image data"),
        "zero-byte file": (b"", "empty file"),
        "non-image with an image extension": (b"<html>not an image</html>\n" * 8, "not an image"),
        "1x1 image": (_png(np.zeros((1, 1), np.uint8)), "only 1x1 pixels"),
        "very large image": (_png_header_only(10_000, 10_000), "exceeds the limit"),
    }


CASES = list(corpus())
BAD = [c for c in CASES if corpus()[c][1] is not None]


def check_converted(case: str, img: np.ndarray) -> None:
    """The documented conversions (see cxrlib.data.real): values at 32 x 32 after crop+resize."""
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
    left, right = float(x[:, :12].mean()), float(x[:, 20:].mean())
    if case == "16-bit PNG":  # full range [0, 65535] -> [0, 1], kept in float
        assert img.dtype == np.float32 and abs(left - 1.0) < 1e-3 and abs(right - 32768 / 65535) < 1e-3
    elif case == "RGBA PNG":  # composited onto black: transparent = 0
        assert abs(left - 200 / 255) < 0.01 and right < 0.01
    elif case == "palette PNG":  # expanded through the palette
        assert left < 0.01 and right > 0.99


@pytest.mark.parametrize("case", CASES)
def test_read_image_corpus(tmp_path, case):
    data, problem = corpus()[case]
    path = tmp_path / f"case_{CASES.index(case)}.png"
    path.write_bytes(data)
    if problem is None:
        check_converted(case, read_image(path, 32))
    else:
        with pytest.raises(ImageReadError, match=problem) as e:
            read_image(path, 32)
        assert str(path) in str(e.value)  # the error names the file


# --- every loader: the corpus placed in the image files of a fixture dataset ----------------------
def _build(name: str, tmp_path) -> tuple[dict, dict[str, str]]:
    """A fixture dataset whose images include every corpus case: (load_dataset kwargs, case -> image_id)."""
    c = corpus()
    if name == "kermany":
        extra = {f"train/PNEUMONIA/person{90 + i}_bacteria_1.jpeg": c[case][0] for i, case in enumerate(CASES)}
        root = make_kermany(tmp_path / "kermany", extra=extra)
        return {"name": "kermany", "root": root}, {case: f"train/PNEUMONIA/person{90 + i}_bacteria_1.jpeg" for i, case in enumerate(CASES)}
    replace = {i: c[case][0] for i, case in enumerate(CASES)}
    if name == "chexpert":
        root = make_chexpert(tmp_path / "chexpert", replace=replace)
        meta, _ = real.chexpert_meta(root, views=["*"])
    elif name == "nih":
        root = make_nih(tmp_path / "nih", replace=replace)
        meta, _ = real.nih_meta(root)
    else:
        root = make_mimic(tmp_path / "mimic", replace=replace)
        meta, _ = real.mimic_meta(root, views=["*"])
    ids = pd.read_csv(root / "train.csv")["Path"].str.replace("CheXpert-v1.0-small/", "") if name == "chexpert" else meta["image_id"]
    kw = {"name": name, "root": root}
    if name != "mimic":
        kw["manifest"] = manifest_for(meta, tmp_path / f"{name}.csv", labels=real.NIH_ALL_LABELS if name == "nih" else real.CHEXPERT_LABELS)
    return kw, {case: ids.iloc[i] for i, case in enumerate(CASES)}


@pytest.mark.parametrize("loader", ["chexpert", "nih", "mimic", "kermany"])
def test_corpus_through_loader(tmp_path, loader):
    kw, where = _build(loader, tmp_path)
    name = kw.pop("name")
    views = ("PA", "AP", "LATERAL", "L")  # keep every image of the fixture
    # raise (default): the first bad file stops the load with a message naming it
    with pytest.raises(DataError) as e:
        load_dataset(name, **kw, size=32, views=views, verify="decode")
    msg = str(e.value)
    assert any(where[c] in msg or os.path.basename(where[c]) in msg for c in BAD) and "on_error='skip'" in msg

    # skip: every bad case left out, each counted with its problem; the convertible ones load
    with pytest.warns(UserWarning, match=f"skipped {len(BAD)}"):
        ds = load_dataset(name, **kw, size=32, views=views, verify="decode", on_error="skip")
    skipped = ds.skipped.set_index("image_id")["problem"]
    assert len(skipped) == len(BAD)
    for case in BAD:
        assert re.search(corpus()[case][1], skipped[where[case]]), (case, skipped[where[case]])
    for case in CASES:
        if case not in BAD:
            i = int(np.flatnonzero(ds.meta["image_id"] == where[case])[0])
            check_converted(case, np.asarray(ds.load_image(i)))
            assert ds[i]["image"].shape == (1, 32, 32)

    # the default verify="exists" catches the zero-byte file up front; others fail when read, naming the file
    with pytest.raises(DataError, match="empty file"):
        load_dataset(name, **kw, size=32, views=views)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = load_dataset(name, **kw, size=32, views=views, on_error="skip")
    assert len(ds.skipped) == 1
    i = int(np.flatnonzero(ds.meta["image_id"] == where["truncated JPEG"])[0])
    with pytest.raises(ImageReadError, match=f"{os.path.basename(where['truncated JPEG'])}.*corrupt or truncated"):
        ds[i]


def test_non_utf8_file_name_kermany(tmp_path):
    """A file name that is not UTF-8 loads; its image_id shows the bad byte as \\xff; the CLI prints it."""
    root = make_kermany(tmp_path / "k", extra={b"train/PNEUMONIA/person7_bacteria_\xff.jpeg": jpeg_bytes(50)})
    ds = load_dataset("kermany", root=root, split="train", size=32, verify="decode")
    row = ds.meta[ds.meta["patient_id"] == "person7"]
    assert row["image_id"].tolist() == ["train/PNEUMONIA/person7_bacteria_\\xff.jpeg"]
    assert ds[int(row.index[0])]["image"].shape == (1, 32, 32)
    # a non-UTF-8 name that also does not parse: the error text is printable
    root2 = make_kermany(tmp_path / "k2", extra={b"train/PNEUMONIA/\xe9t\xe9.jpeg": jpeg_bytes(50)})
    with pytest.raises(DataError, match=r"\\xe9t\\xe9\.jpeg: cannot tell bacterial from viral"):
        load_dataset("kermany", root=root2)
    assert main(["data", "summary", "--dataset", "kermany", "--root", str(root2), "--on-error", "skip"]) == 0


def test_kermany_other_files_are_counted(tmp_path):
    root = make_kermany(tmp_path / "k", extra={"train/NORMAL/.DS_Store": b"x", "train/NORMAL/notes.txt": b"x"})
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = load_dataset("kermany", root=root, split="train")
    assert len(ds) == 5 and sorted(ds.skipped["image_id"]) == ["train/NORMAL/.DS_Store", "train/NORMAL/notes.txt"]
    assert (ds.skipped["problem"].str.contains("not an image file name")).all()


# --- metadata CSVs ---------------------------------------------------------------------------------
def _edit_csv(path, fn):
    df = pd.read_csv(path)
    fn(df).to_csv(path, index=False)


@pytest.mark.parametrize("loader", ["chexpert", "mimic"])
def test_label_csv_problems(tmp_path, loader):
    """Missing columns, unknown label names, values outside {1, 0, -1, empty}, non-UTF-8, duplicates."""
    make = make_chexpert if loader == "chexpert" else make_mimic
    csv_name = "train.csv" if loader == "chexpert" else "mimic-cxr-2.0.0-chexpert.csv.gz"
    meta_fn = real.chexpert_meta if loader == "chexpert" else real.mimic_meta

    root = make(tmp_path / "a")
    _edit_csv(root / csv_name, lambda d: d.drop(columns=["Edema"]))
    with pytest.raises(DataError, match=rf"{csv_name}.*lacks the columns \['Edema'\]"):
        meta_fn(root)

    root = make(tmp_path / "b")
    _edit_csv(root / csv_name, lambda d: d.rename(columns={"Pleural Effusion": "Pleural_Effusion"}))
    with pytest.raises(DataError, match=r"'Pleural_Effusion' -> 'Pleural Effusion'"):
        meta_fn(root)

    for bad in (2, "yes"):
        root = make(tmp_path / f"c{bad}")
        _edit_csv(root / csv_name, lambda d: d.assign(Edema=d["Edema"].astype(object).where(d.index != 3, bad)))
        with pytest.raises(DataError, match=rf"{csv_name}.*'Edema'.*outside \{{1, 0, -1, empty\}}.*line 5"):
            meta_fn(root)

    root = make(tmp_path / "d")
    with pytest.raises(ValueError, match="unknown label 'Pneumonitis'.*Valid labels"):
        load_dataset(loader, root=root, labels=["Pneumonitis"])

    if loader == "chexpert":
        root = make(tmp_path / "e")
        text = (root / csv_name).read_bytes().replace(b"patient00003/study1", "patient00003/\u00e9tude1".encode("latin-1"), 1)
        (root / csv_name).write_bytes(text)
        with pytest.raises(DataError, match=r"train\.csv.*is not UTF-8"):
            meta_fn(root)

        root = make(tmp_path / "f")
        _edit_csv(root / csv_name, lambda d: pd.concat([d, d.iloc[[0]]], ignore_index=True))
        with pytest.raises(DataError, match=r"1 duplicate image path.*patient00001/study1/view1_frontal\.jpg"):
            meta_fn(root)
        meta, skipped = meta_fn(root, on_error="skip")
        assert len(skipped) == 1 and meta["image_id"].is_unique


def test_nih_csv_problems(tmp_path):
    root = make_nih(tmp_path / "a")
    _edit_csv(root / "Data_Entry_2017_v2020.csv", lambda d: d.drop(columns=["Patient ID"]))
    with pytest.raises(DataError, match=r"lacks the columns \['Patient ID'\]"):
        real.nih_meta(root)
    root = make_nih(tmp_path / "b")
    _edit_csv(root / "Data_Entry_2017_v2020.csv", lambda d: d.assign(**{"Finding Labels": d["Finding Labels"].where(d.index != 4, "Cardiomegaly|Pleural Effusion")}))
    with pytest.raises(DataError, match=r"unknown finding 'Pleural Effusion' \(did you mean 'Effusion'\?\) on line 6"):
        real.nih_meta(root)
    root = make_nih(tmp_path / "c")
    _edit_csv(root / "Data_Entry_2017_v2020.csv", lambda d: pd.concat([d, d.iloc[[2]]], ignore_index=True))
    with pytest.raises(DataError, match="duplicate image path.*00000002_000.png"):
        real.nih_meta(root)


def test_manifest_with_patients_in_two_splits(tmp_path):
    """A manifest whose patients overlap across splits is refused, naming the file and the patients,
    even when its sidecar hash matches (so the hash is no excuse for a leak)."""
    root = make_chexpert(tmp_path / "cx")
    meta, _ = real.chexpert_meta(root)
    df = pd.DataFrame({"image_id": meta["image_id"], "patient_id": meta["patient_id"], "split": ["train", "test"] * (len(meta) // 2), "labeled_frac": np.nan})
    df.loc[df["split"] == "train", "labeled_frac"] = 1.0
    path = tmp_path / "leaky.csv"
    data = manifest_csv_bytes(df)
    path.write_bytes(data)
    sidecar_path(path).write_text(f'{{"sha256": "{sha256_bytes(data)}"}}')
    with pytest.raises(ManifestError, match=r"leaky\.csv.*patient\(s\) appear in more than one split"):
        load_dataset("chexpert", root=root, manifest=path)
    assert main(["data", "verify", "--manifest", str(path), "--root", str(root)]) == 2


def test_medmnist_bad_files(tmp_path):
    root = make_medmnist(tmp_path / "m")
    f = root / "pneumoniamnist.npz"
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"pneumoniamnist\.npz.*not a readable \.npz"):
        load_dataset("pneumoniamnist", root=f, split="train")
    np.savez(f, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"lacks the arrays \['train_labels'\]"):
        load_dataset("pneumoniamnist", root=f, split="train")
    np.savez(f, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.array([[0], [2]]))
    with pytest.raises(DataError, match="expected 0/1"):
        load_dataset("pneumoniamnist", root=f, split="train")
    np.savez(f, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 14)))
    with pytest.raises(DataError, match=r"expected \(2, 1\) for pneumoniamnist"):
        load_dataset("pneumoniamnist", root=f, split="train")
    np.savez(f, train_images=np.array([object(), object()], dtype=object), train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError, match="without pickle"):  # object arrays would need pickle: refused
        load_dataset("pneumoniamnist", root=f, split="train")


# --- the CLI: one line, exit code 2, for every user error ------------------------------------------
def _one_line_error(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cxr: error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_corpus_through_cli(tmp_path, capsys):
    kw, where = _build("kermany", tmp_path)
    root = str(kw["root"])
    _one_line_error(capsys, ["data", "summary", "--dataset", "kermany", "--root", root, "--check-images"], "person9")
    assert main(["data", "summary", "--dataset", "kermany", "--root", root, "--check-images", "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert f"skipped: {len(BAD)} file(s)" in out
    for case in BAD:
        assert re.search(corpus()[case][1], out), case

    # verify: every bad file reported, exit code 1 (a finding, not a usage error)
    manifest = tmp_path / "files.csv"
    pd.DataFrame({"image_id": [where[c] for c in CASES] + ["train/NORMAL/missing.jpeg"]}).to_csv(manifest, index=False)
    assert main(["data", "verify", "--manifest", str(manifest), "--root", root]) == 1
    out = capsys.readouterr().out
    assert f"{len(BAD) + 1} of {len(CASES) + 1} file(s)" in out and "missing" in out
    for case in BAD:
        assert f"{where[case]}: " in out

    # metadata problems and bad roots through the CLI
    bad = make_chexpert(tmp_path / "cx")
    _edit_csv(bad / "train.csv", lambda d: d.drop(columns=["Sex"]))
    _one_line_error(capsys, ["data", "summary", "--dataset", "chexpert", "--root", str(bad)], "train.csv", "lacks the columns ['Sex']")
    _one_line_error(capsys, ["data", "summary", "--dataset", "kermany", "--root", str(tmp_path / "nope")], "nope", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["data", "summary", "--dataset", "nih", "--root", str(empty)], "empty", "expected")
    _one_line_error(capsys, ["data", "summary", "--dataset", "pneumoniamnist", "--root", str(empty)], "no pneumoniamnist.npz")
    _one_line_error(capsys, ["data", "verify", "--manifest", str(tmp_path / "none.csv"), "--root", root], "none.csv", "does not exist")
