"""Issue 7, repeatable runs: the same pipeline with the same seed in two fresh caches gives identical
results tables and identical synthetic images (bit for bit on the CPU)."""

import hashlib

import pandas as pd
import pytest

from cxrlib.experiments import common as c
from cxrlib.experiments import synthetic as S
from cxrlib.generators.conditions import prevalence_conditions
def _pipeline():
    cfg = c.StudyConfig.from_params(profile="smoke", n_pool=120, n_val=60, n_test=80, external_sites=(), gen_steps=6,
                                    gen_checkpoints=(3,), gen_channels=(8, 16), gen_batch_size=8, sampler_steps=3, n_boot=20)
    sets = c.real_sets(cfg, progress=False)
    gen = S.main_generator(cfg, sets, progress=False)
    syn = S.synthetic_set(cfg, gen, prevalence_conditions(sets.train, 16, label_names=cfg.labels, seed=0), name="t",
                          progress=False)
    res = c.evaluate_arms(cfg, {"real": [sets.train], "real+syn": [sets.train, syn]}, sets, reference="real", progress=False)
    return res, hashlib.sha256(syn.to_tensors()[0].numpy().tobytes()).hexdigest()


def test_same_seed_same_bytes(tmp_path, monkeypatch):
    out = []
    for run in ("a", "b"):
        monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / run))
        out.append(_pipeline())
    (res_a, syn_a), (res_b, syn_b) = out
    assert syn_a == syn_b
    pd.testing.assert_frame_equal(res_a, res_b)
    assert len(res_a) > 0 and res_a["estimate"].notna().any()


def _file_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in {".png", ".csv"}}


@pytest.mark.slow
def test_smoke_notebook_twice_same_results_and_synthetic_bytes(tmp_path, monkeypatch):
    """The imbalance chapter (a trained generator, a synthetic set, classifier arms, statistics) run twice
    at the smoke profile in two fresh caches: byte-identical results tables and synthetic images."""
    from pathlib import Path

    from cxrlib.execution import run_notebook

    nb = Path(__file__).resolve().parents[1] / "notebooks" / "03_imbalance.ipynb"
    runs = []
    for run in ("a", "b"):
        monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / run / "cache"))
        res = run_notebook(nb, profile="smoke", runs_dir=tmp_path / run / "runs", progress=False)
        runs.append(res.run_dir)
    a, b = runs
    assert a.name == b.name  # same config hash
    for table in ("results.csv", "summary.csv"):
        assert (a / table).read_bytes() == (b / table).read_bytes(), table
    syn_a, syn_b = (_file_hashes(tmp_path / r / "cache" / "synthetic") for r in ("a", "b"))
    assert syn_a and sum(k.endswith(".png") for k in syn_a) > 10
    assert syn_a == syn_b
