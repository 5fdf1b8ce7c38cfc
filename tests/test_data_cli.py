"""``cxr data summary | verify | manifests`` through ``cxrlib.cli.main``."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from cxrlib.cli import main
from cxrlib.data import CHEXPERT_LABELS, LabelPolicy
from cxrlib.data.manifests import build_splits, manifest_dir, sidecar_path, write_manifest

from test_real_loaders import KERMANY_FILES, jpeg_bytes, make_kermany, make_medmnist


def _table(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def test_summary_phantom(tmp_path, capsys, cache_dir):
    """`cxr data summary --dataset phantom`: images, patients and per-label positives per split."""
    pytest.importorskip("cxrlib.data.phantom")
    from cxrlib.data.phantom import phantom_meta

    committed = [p for p in (manifest_dir() / "phantom.csv", manifest_dir() / "phantom.csv.gz") if p.is_file()]
    if committed:
        argv, side = [], json.loads(sidecar_path(committed[0]).read_text())
    else:  # until the lead commits data_manifests/phantom.csv: the same call on a small manifest
        df = build_splits(phantom_meta("internal", 120, 0), seed=0, stratify=CHEXPERT_LABELS)
        m = write_manifest(df, tmp_path / "phantom.csv", seed=0, label_policy=LabelPolicy())
        argv, side = ["--manifest", str(m)], json.loads(sidecar_path(m).read_text())
    assert main(["data", "summary", "--dataset", "phantom", *argv]) == 0
    lines = _table(capsys.readouterr().out)
    assert lines[1].split() == ["train", "val", "test", "all"]
    images = lines[2].split()
    assert images[0] == "images" and [int(v.replace(",", "")) for v in images[1:4]] == [side["counts"]["splits"][s]["images"] for s in ("train", "val", "test")]
    assert lines[3].startswith("patients")
    labels = [line for line in lines if line.startswith(("Cardiomegaly", "Pleural Effusion", "Support Devices"))]
    assert len(labels) == 3 and all("%" in line for line in labels)


def test_summary_nih_from_shipped_csv(capsys):
    """No root: the committed manifest over the label CSV shipped in torchxrayvision."""
    assert main(["data", "summary", "--dataset", "nih", "--split", "val", "--labels", "Effusion", "Fracture"]) == 0
    out = capsys.readouterr().out
    side = json.loads((manifest_dir() / "nih.json").read_text())
    n_val = side["counts"]["splits"]["val"]["images"]
    images = next(line for line in out.splitlines() if line.startswith("images"))
    assert images.split()[1] == f"{n_val:,}"
    assert "Fracture" in out and "n/a" in out  # not annotated in NIH: n/a, not 0 %


def test_summary_kermany_and_medmnist(tmp_path, capsys):
    root = make_kermany(tmp_path / "chest_xray")
    assert main(["data", "summary", "--dataset", "kermany", "--root", str(root)]) == 0
    lines = _table(capsys.readouterr().out)
    assert lines[2].split()[1:] == ["5", "2", "2", str(len(KERMANY_FILES))]  # images per split
    assert lines[3].split()[1:] == ["4", "2", "2", "8"]  # patients (person1 has two images)
    assert lines[5].split()[:3] == ["Bacterial", "Pneumonia", "2"]
    m = make_medmnist(tmp_path / "mm")
    assert main(["data", "summary", "--dataset", "pneumoniamnist", "--root", str(m), "--split", "test"]) == 0
    assert "test" in capsys.readouterr().out


def test_verify_folder_and_checksums(tmp_path, capsys):
    """A synthetic set: PNG files + a manifest with a sha256 per file; verify finds tampering."""
    root = tmp_path / "synthetic"
    root.mkdir()
    rows = []
    for i in range(4):
        data = jpeg_bytes(40 * i)
        (root / f"img{i}.jpg").write_bytes(data)
        rows.append({"path": f"img{i}.jpg", "sha256": hashlib.sha256(data).hexdigest(), "seed": i})
    manifest = tmp_path / "synthetic.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    assert main(["data", "verify", "--manifest", str(manifest), "--root", str(root)]) == 0
    assert "ok: 4 file(s)" in capsys.readouterr().out

    (root / "img2.jpg").write_bytes(jpeg_bytes(7))  # same kind of file, other content
    (root / "img3.jpg").unlink()
    assert main(["data", "verify", "--manifest", str(manifest), "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "2 of 4 file(s)" in out and "img2.jpg: sha256 mismatch" in out and "img3.jpg: missing" in out


def test_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "summary", "--dataset", "chexpertt"])
    assert e.value.code == 2
    assert main(["data", "summary", "--dataset", "kermany"]) == 2
    assert "root=None" in capsys.readouterr().err
    assert main(["data", "verify", "--manifest", str(tmp_path / "x.csv"), "--root", str(tmp_path)]) == 2
    assert main(["data", "manifests", "--dataset", "padchest", "--out", str(tmp_path)]) == 2
    assert "no manifest builder for ['padchest']" in capsys.readouterr().err


@pytest.mark.slow  # parses the NIH and CheXpert CSVs (~15 s)
def test_manifests_rebuild_is_identical(tmp_path, capsys):
    """`cxr data manifests --check`: rebuilding from torchxrayvision's CSVs gives the committed bytes."""
    assert main(["data", "manifests", "--dataset", "chexpert", "nih", "--check"]) == 0
    out = capsys.readouterr().out
    assert "chexpert: identical" in out and "nih: identical" in out
