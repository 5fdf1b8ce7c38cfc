"""The researcher's ``paper`` path, kept alive: a chapter notebook at ``--profile paper`` on a real-data
layout (tests/paper_fixture.py: a tiny CheXpert-v1.0-small folder and a tiny NIH ChestX-ray14 folder
as the external test set), through ``cxr run`` (the runner the book uses), plus ``cxr data`` on the
same folders and the external-site parameter's errors.

Chapter 5 (supplementation) is the one run: it is the chapter that evaluates the external sites, and
with two arms it is the cheapest (about 25 s here). Sizes are tiny overrides of the paper profile; the
paper recipe's switches (v-prediction, cosine schedule, no label channels, DDIM, the competition
labels, labeled_fraction 1.0) are kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cxrlib.cli import main as cxr_main

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_supplementation.ipynb"
TINY = dict(image_size=32, n_pool=200, n_val=60, n_test=60, n_external=60, gen_channels=[8, 16], gen_layers=1,
            gen_steps=10, gen_checkpoints=[], gen_batch_size=16, gen_cond_hidden=32, gen_mixed_precision="no",
            sampler_steps=2, clf_arch="small_cnn", clf_steps=4, clf_eval_every=2, clf_batch_size=32, n_seeds=2,
            n_boot=20, supplement_percents=[0, 100], synthetic_only_percents=[], duplicate_percents=[], n_generators=1,
            pool_pretrained=False, regime_fractions=[])


@pytest.fixture(scope="module")
def paper_run(paper_world, tmp_path_factory):
    """``cxr run notebooks/05_supplementation.ipynb --profile paper -f tiny.yaml -p root ... -p external_sites
    [nih=...]`` in a fresh cache and runs folder; returns the run folder."""
    tmp = tmp_path_factory.mktemp("paper_run")
    params = tmp / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY))
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXR_MANIFEST_DIR", str(paper_world["manifests"]))
        mp.setenv("CXR_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("CXR_NO_PROGRESS", "1")
        code = cxr_main(["run", str(NOTEBOOK), "--profile", "paper", "-f", str(params), "--runs-dir", str(runs),
                         "-p", "root", str(paper_world["chexpert"]), "-p", "external_sites", f"[nih={paper_world['nih']}]"])
    assert code == 0, "the paper-profile run failed (see the stderr above)"
    (run_dir,) = (runs / "05_supplementation").glob("paper-*")
    return run_dir


def _outputs_text(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for mime in ("text/markdown", "text/plain", "text/html"):
                parts.append("".join(out.get("data", {}).get(mime, "")))
    return "\n".join(parts)


def test_paper_chapter_runs_on_chexpert_with_the_external_nih_set(paper_run, paper_world):
    cfg = json.loads((paper_run / "config.json").read_text())
    assert cfg["profile"] == "paper" and cfg["dataset"] == "chexpert" and cfg["root"] == str(paper_world["chexpert"])
    assert cfg["external_sites"] == [f"nih={paper_world['nih']}"]
    assert json.loads((paper_run / "run.json").read_text())["config_hash"] == paper_run.name.split("-", 1)[1]

    res = pd.read_csv(paper_run / "results.csv")
    assert set(res["test_set"]) == {"internal", "nih"}  # the external set was not silently dropped
    for test_set in ("internal", "nih"):
        auroc = res[(res.test_set == test_set) & (res.metric == "auroc") & (res.label == "macro")]
        assert set(auroc["arm"]) == {"real", "real+synthetic 100% [R-only 1]"} and auroc["estimate"].notna().all(), test_set
    nih = res[(res.test_set == "nih") & (res.metric == "auroc") & (res.seed.astype(str) != "pooled")]
    assert (nih["n"] == 60).all()  # n_external images of NIH's test split
    assert (res["optimizer_steps"].dropna() == TINY["clf_steps"]).all()

    text = _outputs_text(paper_run / NOTEBOOK.name)
    note = re.search(r"\*\*Data of this run:\*\*[^\n]*", text)
    assert note and "`chexpert`" in note.group(0) and "nih (" in note.group(0), note
    assert "phantom" not in text.lower()  # no output of a paper run speaks of the simulation
    assert "external: nih" in text  # the data table lists the external set
    assert "No mixing-sources arms in this run" in text  # mixing_site is '' at paper unless a second dataset is given
    # the chapter's own verdicts read its config while it runs (config.json is in the staging folder)
    assert "n = 0: no supplementation arm" not in text and re.search(r"raises AUROC\*\*.*n = 2", text)


@pytest.mark.parametrize("entry", ["nih", "nih=", "padchest", "chexpert2=/data"])
def test_bad_external_site_is_one_line_config_error(paper_world, entry, capsys, monkeypatch):
    monkeypatch.setenv("CXR_MANIFEST_DIR", str(paper_world["manifests"]))
    code = cxr_main(["run", str(NOTEBOOK), "--profile", "paper", "-p", "root", str(paper_world["chexpert"]),
                     "-p", "external_sites", f"[{entry}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("cxr: error: parameter 'external_sites'") and repr(entry) in err and "NAME=ROOT" in err


def test_data_summary_and_verify_on_the_fixture(paper_world, capsys, monkeypatch):
    monkeypatch.setenv("CXR_MANIFEST_DIR", str(paper_world["manifests"]))
    side = json.loads((paper_world["manifests"] / "chexpert.json").read_text())["counts"]["splits"]
    assert cxr_main(["data", "summary", "--dataset", "chexpert", "--root", str(paper_world["chexpert"])]) == 0
    out = capsys.readouterr().out
    images = next(line for line in out.splitlines() if line.startswith("images")).split()
    assert [int(v.replace(",", "")) for v in images[1:4]] == [side[s]["images"] for s in ("train", "val", "test")]
    assert "Pleural Effusion" in out and "Cardiomegaly" in out

    assert cxr_main(["data", "summary", "--dataset", "nih", "--root", str(paper_world["nih"]), "--split", "test",
                     "--labels", "Cardiomegaly", "Pleural Effusion", "Fracture"]) == 0
    out = capsys.readouterr().out
    assert "Pleural Effusion" in out and "n/a" in out  # Fracture: not annotated in NIH

    for name in ("chexpert", "nih"):
        manifest = paper_world["manifests"] / f"{name}.csv.gz"
        assert cxr_main(["data", "verify", "--manifest", str(manifest), "--root", str(paper_world[name])]) == 0
        assert capsys.readouterr().out.startswith("ok: ")
    # one image gone: verify names it and fails
    victim = next((paper_world["chexpert"] / "train").rglob("view1_frontal.jpg"))
    data = victim.read_bytes()
    victim.unlink()
    try:
        assert cxr_main(["data", "verify", "--manifest", str(paper_world["manifests"] / "chexpert.csv.gz"),
                         "--root", str(paper_world["chexpert"])]) == 1
        assert victim.relative_to(paper_world["chexpert"]).as_posix() in capsys.readouterr().out
    finally:
        victim.write_bytes(data)
