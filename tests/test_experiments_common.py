"""The shared study config and recipe helpers of experiments 2-8 (the pipelines themselves run in
the smoke book build)."""

import pytest

from cxrlib.config import ConfigError
from cxrlib.experiments import common as c
from cxrlib.experiments import synthetic as S


def test_profiles_resolve_and_validate():
    smoke = c.StudyConfig.from_params(profile="smoke")
    cpu = c.StudyConfig.from_params(profile="cpu")
    assert smoke.labels == c.SMOKE_LABELS and cpu.gen_steps > smoke.gen_steps
    assert cpu.clf_seeds() == [0, 1, 2]
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
