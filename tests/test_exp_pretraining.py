"""Experiment 4 (labeled-fraction pretraining): config checks, the nested labeled subsets, the
contrasts that test Huijben's claims, and the cache lookup chapter 6 relies on (tiny generators)."""

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.config import ConfigError
from cxrlib.data.base import ArrayDataset
from cxrlib.data.labels import LabelPolicy
from cxrlib.experiments import common, synthetic
from cxrlib.experiments import pretraining as P

LABELS = common.SMOKE_LABELS


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pool(n=40, size=32, seed=0):
    """A pool whose manifest assigns each image to the smallest nested labeled subset holding it."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i // 2}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 90, n).round(),
                         "labeled_frac": rng.choice([0.1, 0.25, 0.5, 1.0], n)})
    for lab in LABELS:
        meta[lab] = rng.choice([1.0, 0.0], n, p=[0.3, 0.7])
    return ArrayDataset(rng.integers(0, 256, (n, size, size), dtype=np.uint8), meta, label_names=LABELS,
                        policy=LabelPolicy(missing="ignore"), name="pool")


def fake_sets(cfg):
    p = pool()
    lab = p.meta["labeled_frac"].to_numpy()
    train = p.subset(np.flatnonzero(lab <= cfg.labeled_fraction))
    return common.RealSets(pool=p, train=train, val=p, test=p, external={})


def test_profiles_validate_and_reject_bad_designs():
    for prof in ("smoke", "cpu", "cpu-full", "paper"):
        cfg = P.Config.from_params(profile=prof)
        assert any(abs(f - cfg.labeled_fraction) < 1e-9 for f in cfg.scratch_fractions)
    assert P.Config.from_params(profile="paper").ft_fractions == (0.1, 0.25, 0.5, 1.0)
    with pytest.raises(ConfigError, match="scratch_fractions"):
        P.Config.from_params(profile="cpu", scratch_fractions=(0.5,))  # the main generator (25 %) must be the reference
    with pytest.raises(ConfigError, match="ft_fractions"):
        P.Config.from_params(profile="cpu", ft_fractions=(0.0,))
    with pytest.raises(ConfigError, match="ft_steps"):
        P.Config.from_params(profile="cpu", ft_steps=0)


def test_labeled_subsets_are_nested_and_reuse_R():
    cfg = P.Config.from_params(profile="cpu")  # labeled_fraction 0.25
    sets = fake_sets(cfg)
    lab = sets.pool.meta["labeled_frac"].to_numpy()
    assert P.labeled_subset(cfg, sets, 0.25) is sets.train  # same object: same fingerprint as the main generator's R
    assert P.labeled_subset(cfg, sets, 1.0) is sets.pool
    ids = {f: set(P.labeled_subset(cfg, sets, f).meta["image_id"]) for f in (0.1, 0.5)}
    assert ids[0.1] == set(sets.pool.meta["image_id"][lab <= 0.1]) and ids[0.1] < set(sets.train.meta["image_id"]) < ids[0.5]


def test_contrast_pairs_follow_the_design():
    # cpu (the hour book): no pretraining chain, so no contrast; the verdict says the claim was not tested
    cpu = P.Config.from_params(profile="cpu")
    assert cpu.ft_fractions == () and P.contrast_pairs(cpu) == []
    # the primary contrast: 25 % fine-tuned vs the 100 % fine-tuned reference, and vs the main generator
    primary = P.Config.from_params(profile="cpu-full", ft_fractions=(0.25, 1.0), scratch_fractions=(0.25,))
    assert P.contrast_pairs(primary) == [("pretraining vs scratch, same labels", "synthetic: pretrained+FT 25%", "synthetic: scratch 25%"),
                                     ("25% labels vs all labels", "synthetic: pretrained+FT 25%", "synthetic: pretrained+FT 100%")]
    assert primary.ft_steps >= 600
    for profile in ("cpu-full", "paper"):  # Huijben's grid, with the 100 % reference
        pairs = P.contrast_pairs(P.Config.from_params(profile=profile))
        assert len(pairs) == 4 + 3  # pretraining vs scratch at each fraction; 10/25/50 % vs all labels
        assert ("25% labels vs all labels", "synthetic: pretrained+FT 25%", "synthetic: scratch 100%") in pairs
    no_full = P.Config.from_params(profile="cpu-full", ft_fractions=(0.1, 0.25), scratch_fractions=(0.1, 0.25))
    assert all("all labels" not in q for q, _, _ in P.contrast_pairs(no_full))  # nothing to compare with: no pair
    assert P.reference_arm(cpu) == "synthetic: scratch 25%"


def test_cached_lookup_matches_training_and_fine_tuning(cache_dir):
    cfg = P.Config.from_params(profile="smoke", gen_channels=(8, 16), gen_batch_size=4, gen_steps=3, gen_checkpoints=(),
                               ft_steps=2)
    sets = fake_sets(cfg)
    assert P.pretrained(cfg, sets, cached_only=True) is None  # nothing trained yet, nothing trained by the lookup
    pre = synthetic.pretrained_generator(cfg, sets, progress=False)
    assert P.pretrained(cfg, sets, cached_only=True) == pre
    assert P.finetuned(cfg, sets.train, pre, cached_only=True) is None
    ft = P.finetuned(cfg, sets.train, pre, progress=False)
    assert P.finetuned(cfg, sets.train, pre, cached_only=True) == ft
    assert P.finetuned(cfg.replace(ft_steps=3), sets.train, pre, cached_only=True) is None  # another recipe
    gens = P.generators(cfg, sets, cached_only=True)  # the scratch generator was never trained: left out
    assert list(gens.index) == ["pretrained+FT 50%"] and gens.loc["pretrained+FT 50%", "path"] == str(ft)
    from cxrlib.generators.ddpm import load_generator
    info = load_generator(ft)
    assert info.generator_id != load_generator(pre).generator_id  # fine-tuning changed the weights


def test_summary_table_and_plots():
    cfg = P.Config.from_params(profile="cpu", real_fractions=(0.25,))
    gens = pd.DataFrame({"generator": ["pretrained+FT 25%", "scratch 25%"], "kind": ["pretrained+FT", "scratch"],
                         "fraction": [0.25, 0.25], "labeled_images": [10, 10], "unlabeled_steps": [5, 0],
                         "labeled_steps": [2, 5], "path": ["a", "b"]}).set_index("generator")
    arms = ["synthetic: scratch 25%", "synthetic: pretrained+FT 25%", "real 25%"]
    res = pd.DataFrame({"arm": arms, "label": "macro", "metric": "auroc", "seed": 0, "estimate": [0.6, 0.7, 0.8],
                        "ci_low": [0.55, 0.65, 0.75], "ci_high": [0.65, 0.75, 0.85], "p_value": [np.nan, 0.01, 0.001],
                        "p_adj": np.nan, "n": 100, "n_seeds": 1, "test": "bootstrap", "test_set": "internal"})
    fid = pd.DataFrame({"generator": ["pretrained+FT 25%", "scratch 25%", "real (validation)"], "metric": "fd",
                        "label": "all", "value": [2.0, 3.0, 0.1]})
    summ = P.summary(cfg, gens, res, fid)
    assert list(summ.generator) == ["pretrained+FT 25%", "scratch 25%", "real 25%", "real (validation)"]
    assert summ.set_index("generator").loc["pretrained+FT 25%", "auroc"] == 0.7
    assert summ.set_index("generator").loc["scratch 25%", "fd"] == 3.0
    import matplotlib

    matplotlib.use("Agg")
    P.plot_utility(summ)
    P.plot_fidelity(summ)


def test_conditions_are_chapter_2s_evaluation_conditions():
    """Chapters 2, 4 and 6 share synthetic sets through the cache only if their conditions agree."""
    from cxrlib.experiments import generators as G

    cfg = P.Config.from_params(profile="smoke")
    sets = fake_sets(cfg)
    g = G.Config.from_params(profile="smoke", n_eval=25)
    pd.testing.assert_frame_equal(P.conditions(cfg, sets, 25), G.eval_conditions(g, sets))
    assert P.Config().n_syn == G.Config().n_eval and P.Config.from_params(profile="smoke").n_syn == G.Config.from_params(profile="smoke").n_eval
    src = __import__("inspect").getsource(G)
    assert f'name="{P.SET_NAME}"' in src  # the set name (hence the per-image seeds) chapter 2 uses
