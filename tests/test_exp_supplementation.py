"""Experiment 5 (supplementation): the chunked natural-prevalence stream, arm assembly, the duplicate
control, the AUROC-vs-percentage summary and the config checks. Tiny data, CPU, seconds."""

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.config import ConfigError
from cxrlib.data.base import ArrayDataset
from cxrlib.experiments import supplementation as S
from cxrlib.experiments import synthetic as SY

LABELS = ("Cardiomegaly", "Edema", "Pleural Effusion")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def real_set(n=10, size=16, seed=0):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"image_id": range(n), "patient_id": [f"p{i // 2}" for i in range(n)], "study": 0, "site": "x",
                         "view": "PA", "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 90, n).round()})
    for lab in LABELS:
        meta[lab] = rng.choice([1.0, 0.0], n, p=[0.3, 0.7])
    images = (np.arange(n)[:, None, None] * 20 + np.zeros((n, size, size))).astype(np.uint8)  # image i is filled with 20 i
    return ArrayDataset(images, meta, label_names=LABELS, name="R")


def test_config_checks_percentages():
    cfg = S.Config.from_params(profile="smoke")
    assert 0 in cfg.supplement_percents and S.Config.from_params(profile="paper").supplement_percents == S.FULL_GRID
    with pytest.raises(ConfigError, match="supplement_percents"):
        S.Config.from_params(profile="smoke", supplement_percents=(0, -100))
    with pytest.raises(ConfigError, match="duplicate_percents"):
        S.Config.from_params(profile="smoke", duplicate_percents=(0, 100))
    with pytest.raises(ConfigError, match="supplement_percents"):
        S.Config.from_params(profile="smoke", supplement_percents=(100, 100))


def test_duplicates_cycle_the_real_set():
    r = real_set(4)
    d = SY.duplicates(r, 10)
    x = d.to_tensors()[0][:, 0, 0, 0].numpy()
    assert len(d) == 10 and x.tolist() == [0, 20, 40, 60, 0, 20, 40, 60, 0, 20]
    assert d.meta["patient_id"].tolist()[:5] == ["p0", "p0", "p1", "p1", "p0"]


def test_build_arms_sizes_prefixes_and_controls():
    cfg = S.Config.from_params(profile="smoke", supplement_percents=(0, 50, 150), synthetic_only_percents=(150,),
                               duplicate_percents=(150,))
    r = real_set(10)
    syn = real_set(15, seed=1)
    syn.images = syn.images + 1  # tell synthetic from real
    arms, table = S.build_arms(cfg, r, syn)
    assert list(arms) == ["real", "real+synthetic 50%", "real+synthetic 150%", "synthetic 150%", "real+duplicates 150%"]
    assert table.set_index("arm")["n_train"].to_dict() == {"real": 10, "real+synthetic 50%": 15, "real+synthetic 150%": 25,
                                                          "synthetic 150%": 15, "real+duplicates 150%": 25}
    # the 50 % arm's synthetic images are the first 5 of the 150 % arm's (one stream, prefixes)
    half = arms["real+synthetic 50%"][1].to_tensors()[0]
    full = arms["real+synthetic 150%"][1].to_tensors()[0]
    assert torch.equal(half, full[:5]) and torch.equal(arms["synthetic 150%"][0].to_tensors()[0], full)
    # the duplicate control adds real images only, count-matched to real+synthetic 150%
    dup = arms["real+duplicates 150%"][1].to_tensors()[0][:, 0, 0, 0] % 20
    assert len(arms["real+duplicates 150%"][1]) == 15 and (dup == 0).all()
    assert S.synthetic_needed(cfg, 10) == 15
    with pytest.raises(ValueError, match="needs 15"):
        S.build_arms(cfg, r, syn.subset(np.arange(14)))


def test_natural_stream_is_chunked_and_prefix_stable(tmp_path, cache_dir):
    """Real sampling with a tiny generator: chunks of ceil(|R|/4) images, cached one by one; a smaller
    set is a prefix of a larger one; conditions are rows of R; patient ids are unique across chunks."""
    from cxrlib.generators.ddpm import save_generator
    from cxrlib.experiments.common import StudyConfig
    from cxrlib.models.unet import ConditionalUNet, generator_config

    torch.manual_seed(0)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = ConditionalUNet(generator_config(image_size=16, labels=LABELS, channels=(8, 16), layers_per_block=1,
                                                 attention=(False, False), norm_groups=4, cond_hidden=16))
        gen_dir = save_generator(model, tmp_path / "gen")
        cfg = StudyConfig.from_params(profile="smoke", labels=LABELS, sampler="ddim", sampler_steps=2, guidance=0.0)
        r = real_set(10)  # chunks of 3 images
        assert SY.chunk_size(10) == 3
        small = SY.natural_synthetic(cfg, gen_dir, r, 4, progress=False)
        big = SY.natural_synthetic(cfg, gen_dir, r, 8, progress=False)
    finally:
        torch.set_num_threads(n_threads)
    assert len(small) == 4 and len(big) == 8
    assert torch.equal(small.to_tensors()[0], big.to_tensors()[0][:4])
    assert len(list((cache_dir / "synthetic").iterdir())) == 3  # chunks 0, 1, 2 (the second call sampled only chunk 2)
    assert big.meta["patient_id"].is_unique and big.meta["patient_id"].iloc[3] == "natural-1-0"
    # labels are the conditions: rows of R drawn with replacement, chunk by chunk
    c0 = SY.chunk_conditions(cfg, r, 0)
    assert np.array_equal(big.meta[list(LABELS)].to_numpy()[:3], c0[list(LABELS)].to_numpy())
    assert np.array_equal(c0[list(LABELS)].to_numpy(), r.meta[list(LABELS)].to_numpy()[c0["source_row"]])
    assert not c0.equals(SY.chunk_conditions(cfg, r, 1))


def fake_results():
    """A results table shaped like run's (2 seeds and their pooled rows) for two test sets."""
    arms = {"real": (0, 0.70), "real+synthetic 100%": (100, 0.72), "real+synthetic 200%": (200, 0.73),
            "synthetic 100%": (100, 0.60), "synthetic 200%": (200, 0.69), "real+duplicates 200%": (200, 0.705)}
    rows = []
    for t, shift in (("internal", 0.0), ("nih", -0.05)):
        for a, (p, auc) in arms.items():
            for seed, d, p_adj in ((0, -0.01, 0.03), (1, 0.01, 0.001), ("pooled", 0.0, 0.5)):
                rows.append(dict(test_set=t, arm=a, label="macro", metric="auroc", seed=seed, estimate=auc + shift + d,
                                 ci_low=auc + shift + d - 0.02, ci_high=auc + shift + d + 0.02,
                                 p_value=np.nan if a == "real" else p_adj, p_adj=np.nan if a == "real" else p_adj,
                                 n_seeds=2 if seed == "pooled" else 1, ci_method="t", test="bootstrap"))
    table = pd.DataFrame([dict(arm=a, kind=a.split(" ")[0] if a != "real" else "real", percent=p, n_train=0)
                          for a, (p, _) in arms.items()])
    return pd.DataFrame(rows), table


def test_auroc_curve_and_verdict():
    res, table = fake_results()
    curve = S.auroc_curve(res, table)
    # every kind's curve starts at the real arm (0 %)
    for k in ("real+synthetic", "synthetic", "real+duplicates"):
        start = curve[(curve.test_set == "internal") & (curve.kind == k)].sort_values("percent").iloc[0]
        assert start.percent == 0 and start.estimate == pytest.approx(0.70)
    v = S.verdict(curve, "nih")
    # mean over the two seeds, the worst seed's p-value (not the pooled row's)
    assert v["real"] == pytest.approx(0.65) and v["largest"]["gain"] == pytest.approx(0.03)
    assert v["largest"]["p_adj_seeds"] == pytest.approx(0.03) and v["real_ci"] == pytest.approx((0.62, 0.68))
    assert v["best"]["arm"] == "real+synthetic 200%" and v["n_better"] == 2
    assert v["synthetic_matches_real_at"] == 200  # 0.64 + 0.02 >= 0.65 only at 200 %
    assert v["duplicates_largest"]["gain"] == pytest.approx(0.005)
    fig = S.plot_auroc_vs_percent(curve)
    assert len(fig.axes) == 2
    text = S.reproduction_text([v])
    assert "+0.030" in text and "**reproduces**" in text and "from 200 %" in text
