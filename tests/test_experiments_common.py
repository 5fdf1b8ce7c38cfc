"""The shared study config and recipe helpers of experiments 2-8 (the pipelines themselves run in
the smoke book build)."""

import pytest

from cxrlib.config import ConfigError
from cxrlib.experiments import common as c
from cxrlib.experiments import synthetic as S
from toy_data import toy_set as _toy


def test_profiles_resolve_and_validate():
    smoke = c.StudyConfig.from_params(profile="smoke")
    cpu = c.StudyConfig.from_params(profile="cpu")
    assert smoke.labels == c.SMOKE_LABELS and cpu.gen_steps > smoke.gen_steps
    assert cpu.clf_seeds() == [0, 1, 2, 3, 4]  # ≥ 5 seeds at cpu (seed-level inference)
    with pytest.raises(ConfigError, match="gen_checkpoints"):
        c.StudyConfig.from_params(gen_steps=100, gen_checkpoints=(100,))
    with pytest.raises(ConfigError, match="sampler"):
        c.StudyConfig.from_params(sampler="euler")
    with pytest.raises(ConfigError, match="unknown label"):
        c.StudyConfig.from_params(labels=("Cardiomegally",))


def test_merge_profiles_keeps_study_presets():
    merged = c.merge_profiles({"smoke": {"n_seeds": 2}})
    assert merged["smoke"]["n_seeds"] == 2 and merged["smoke"]["gen_steps"] == c.STUDY_PROFILES["smoke"]["gen_steps"]
    assert merged["cpu"] == c.STUDY_PROFILES["cpu"]


def test_generator_options_follow_the_config():
    cfg = c.StudyConfig.from_params(profile="smoke", gen_channels=(24, 48), gen_lr=5e-4)
    o = S.generator_options(cfg)
    assert o["channels"] == (24, 48) and o["lr"] == 5e-4 and o["labels"] == c.SMOKE_LABELS
    assert all(ch % o["norm_groups"] == 0 for ch in o["channels"]) and o["attention"] == (False, True)
    assert o["lr_schedule"] == "constant"  # snapshots are extensions of one run


def test_work_folder_past_a_missing_snapshot_restarts(tmp_path, monkeypatch):
    """A run interrupted at step 6 under one checkpoint schedule cannot give the snapshot at step 3 that
    another schedule asks for: the work folder is discarded (with a warning), not an error."""
    from cxrlib import cache as C

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    cfg = c.StudyConfig.from_params(profile="smoke", n_pool=40, n_val=20, n_test=20, external_sites=(),
                                    gen_channels=(8, 16), gen_batch_size=4)
    train = c.real_sets(cfg, progress=False).train
    real_get_or_create = C.get_or_create

    def interrupted(key, produce, **kw):
        if kw.get("description", "").endswith("@ 8 steps"):
            raise KeyboardInterrupt
        return real_get_or_create(key, produce, **kw)

    monkeypatch.setattr(C, "get_or_create", interrupted)
    with pytest.raises(KeyboardInterrupt):
        S.train_cached_generator(cfg, train, name="t", steps=8, checkpoints=(6,), progress=False)
    monkeypatch.setattr(C, "get_or_create", real_get_or_create)
    with pytest.warns(UserWarning, match="past the snapshot at step 3"):
        snaps = S.train_cached_generator(cfg, train, name="t", steps=8, checkpoints=(3,), progress=False)
    assert sorted(snaps) == [3, 8] and all((p / "model").is_dir() for p in snaps.values())


def test_arms_of_different_sizes_get_the_same_step_budget(cache_dir):
    """The fair protocol end to end: under clf_steps a set 3x larger trains the same number of
    optimizer steps, and its record says which validated step was kept."""
    cfg = c.StudyConfig.from_params(profile="smoke", image_size=16, clf_steps=6, clf_eval_every=2, clf_batch_size=16)
    val = _toy(24, 9)
    small = c.train_cached_classifier(cfg, [_toy(32, 0)], val, seed=0, progress=False)
    large = c.train_cached_classifier(cfg, [_toy(32, 0), _toy(64, 1)], val, seed=0, progress=False)
    assert small.training_record["optimizer_steps"] == large.training_record["optimizer_steps"] == 6
    assert large.training_record["selected_step"] in (2, 4, 6)
    legacy = c.train_cached_classifier(cfg.replace(clf_steps=None, clf_epochs=1), [_toy(32, 0), _toy(64, 1)], val, seed=0,
                                       progress=False)
    assert legacy.training_record["optimizer_steps"] == 6  # one pass over 96 images, batch 16


def test_results_carry_the_budget_and_unequal_budgets_are_refused():
    import pandas as pd

    cfg = c.StudyConfig.from_params(profile="smoke", clf_steps=10)
    results = pd.DataFrame({"seed": [0, 0, 1, 1, "pooled", "pooled"], "arm": ["real", "syn"] * 3})
    trained = pd.DataFrame({"seed": [0, 0, 1, 1], "arm": ["real", "syn"] * 2, "optimizer_steps": [10] * 4,
                            "selected_step": [4, 8, 6, 10]})
    out = c.with_training_budget(results, trained, cfg)
    assert out["optimizer_steps"].tolist() == [10] * 6
    assert out["selected_step"].tolist() == [4, 8, 6, 10, 5, 9]
    with pytest.raises(ValueError, match="unequal training budgets"):
        c.with_training_budget(results, trained.assign(optimizer_steps=[10, 30, 10, 30]), cfg)
    # without a step budget (epochs), unequal steps are what happens, and are reported
    out = c.with_training_budget(results, trained.assign(optimizer_steps=[10, 30, 10, 30]), cfg.replace(clf_steps=None))
    assert out["optimizer_steps"].tolist() == [10, 30, 10, 30, 10, 30]


def test_external_sites_are_never_dropped_silently(monkeypatch):
    """On real data an external site is 'NAME=ROOT' and is loaded from ROOT; a phantom site name on real
    data, or an unknown site on the phantom, is an error naming it (it used to be ignored)."""
    from cxrlib.experiments import comparison

    with pytest.raises(ConfigError, match=r"'external_sites'.*'NAME=ROOT'.*'nih'"):
        c.StudyConfig.from_params(profile="smoke", dataset="chexpert", external_sites=["nih"])
    with pytest.raises(ConfigError, match=r"'external_sites': 'mars' is not a phantom site"):
        c.StudyConfig.from_params(profile="smoke", external_sites=["mars"])
    with pytest.raises(ConfigError, match="given twice"):
        c.StudyConfig.from_params(profile="smoke", external_sites=["nih", "nih"])
    cfg = c.StudyConfig.from_params(profile="smoke", dataset="chexpert", root="/data/cx", external_sites=["nih=/data/NIH"])
    assert c.external_sites(cfg) == {"nih": "/data/NIH"}
    with pytest.raises(ConfigError, match=r"'test_sets': \['padchest'\]"):
        comparison.Config.from_params(profile="smoke", dataset="chexpert", root="/x", external_sites=["nih=/data/NIH"],
                                      test_sets=["internal", "padchest"])
    calls = []

    def fake_load(name, **kw):
        calls.append((name, kw.get("root"), kw.get("split"), kw.get("site")))
        return _toy(8, len(calls))

    monkeypatch.setattr("cxrlib.data.load_dataset", fake_load)
    sets = c.real_sets(cfg.replace(labeled_fraction=1.0), progress=False)
    assert ("nih", "/data/NIH", "test", None) in calls and set(sets.external) == {"nih"}


def test_fingerprint_of_files_needs_no_decoding_and_is_memoized(tmp_path, monkeypatch):
    """Real data is keyed by its files (path, size, mtime) and preprocessing, not by decoding every
    image (which cost ~1 ms per 256 px image, minutes per call on CheXpert); any dataset's key is
    computed once per object."""
    import os

    import numpy as np
    import pandas as pd
    from PIL import Image

    from cxrlib.data.labels import CHEXPERT_LABELS
    from cxrlib.data.real import FileDataset

    rows = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(p)
        rows.append({"image_id": f"i{i}", "patient_id": f"p{i}", "sex": "F", "age": 50.0, "path": str(p),
                     **{lab: float(i % 2) for lab in CHEXPERT_LABELS}})
    meta = pd.DataFrame(rows)
    ds = FileDataset(meta, size=32, name="files")
    monkeypatch.setattr(FileDataset, "load_image", lambda self, i: (_ for _ in ()).throw(AssertionError("decoded")))
    key = c.fingerprint(ds)
    assert key == c.fingerprint(FileDataset(meta, size=32, name="again"))  # same files, same key
    assert key != c.fingerprint(FileDataset(meta, size=16, name="smaller"))  # preprocessing is part of it
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(rows[0]["path"])
    os.utime(rows[0]["path"], ns=(1, 1))
    assert key != c.fingerprint(FileDataset(meta, size=32, name="changed"))  # a changed file changes it
    toy = _toy(8, 0)
    original, calls = type(toy).to_tensors, []

    def counted(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(type(toy), "to_tensors", counted)
    first = c.fingerprint(toy)
    assert c.fingerprint(toy) == first and len(calls) == 1


def test_the_oracle_has_its_own_overridable_recipe(monkeypatch):
    """The fidelity oracle (chapters 2, 4, 6, 7, 8) trains with oracle_arch / oracle_epochs, which a
    run can shrink (-p oracle_epochs 1); it keeps epoch training even under a step budget."""
    seen = []
    monkeypatch.setattr(c, "train_cached_classifier", lambda cfg, train_sets, val, **kw: seen.append(cfg) or "model")
    cfg = c.StudyConfig.from_params(profile="cpu", oracle_arch="resnet18", oracle_epochs=1)
    sets = c.RealSets(pool="pool", train="R", val="val", test="test", external={})
    assert c.oracle(cfg, sets) == "model"
    (used,) = seen
    assert used.clf_arch == "resnet18" and used.clf_epochs == 1 and used.clf_steps is None
    assert c.StudyConfig.from_params(profile="paper").oracle_arch == "densenet121"


def test_under_a_step_budget_the_epoch_count_is_not_in_the_classifier_key(monkeypatch):
    """Chapter 3's cpu profile sets clf_epochs 6 and chapter 5's 8; both train 400 steps, so the same
    classifier of R must be one cache entry (found, not retrained); in epoch mode the count matters."""
    from cxrlib import cache as C

    keys = []

    def stop(k, *a, **kw):
        keys.append(k)
        raise StopIteration

    monkeypatch.setattr(C, "get_or_create", stop)
    monkeypatch.setattr(c, "fingerprint", lambda d: d)
    for epochs, steps in ((6, 400), (8, 400), (6, None), (8, None)):
        cfg = c.StudyConfig.from_params(profile="cpu").replace(clf_epochs=epochs, clf_steps=steps)
        with pytest.raises(StopIteration):
            c.train_cached_classifier(cfg, ["R"], "val", seed=0)
    assert keys[0] == keys[1] and keys[2] != keys[3] and keys[0] != keys[2]


def test_arms_on_two_dask_workers_equal_the_serial_run(tmp_path, monkeypatch):
    """The arms x seeds grid of evaluate_arms on a two-worker Dask cluster gives the serial run's results
    table, and the run record counts the classifiers the workers trained. A Dask worker computes with one
    thread (its nanny sets OMP_NUM_THREADS=1), so the serial run does too: the same arithmetic, hence
    the same bits on one machine (the thread count changes the order of float reductions)."""
    from types import SimpleNamespace

    import pandas as pd
    import torch
    from distributed import LocalCluster

    from cxrlib import cache

    cfg = c.StudyConfig.from_params(profile="smoke", image_size=16, clf_steps=4, clf_eval_every=2, clf_batch_size=16,
                                    n_seeds=2, n_boot=20)
    arms = {"real": [_toy(32, 0)], "real+more": [_toy(32, 0), _toy(32, 1)]}
    sets, tests = SimpleNamespace(val=_toy(24, 9)), {"internal": _toy(40, 7)}

    def run(executor):
        return c.evaluate_arms(cfg.replace(executor=executor), arms, sets, reference="real", metrics=("auroc",),
                               test_sets=tests, progress=False)

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "serial"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run("serial")
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "dask"))  # nothing cached: the workers train everything
    before = len(cache.events())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        parallel = run(cluster.scheduler_address)
    pd.testing.assert_frame_equal(serial, parallel)
    trained_by_workers = [e for e in cache.events()[before:] if e["event"] == "miss" and e.get("worker")]
    assert len(trained_by_workers) == 4 and all(e["key"].startswith("classifier/") for e in trained_by_workers)


def test_the_executor_is_checked_before_the_run():
    from cxrlib.config import ConfigError

    with pytest.raises(ConfigError, match=r"parameter 'executor'.*local:N"):
        c.StudyConfig.from_params(profile="smoke", executor="locale")
    cfg = c.StudyConfig.from_params(profile="smoke")
    assert cfg.replace(executor="local:2").hash() == cfg.hash()  # where classifiers train is not what a run computes
