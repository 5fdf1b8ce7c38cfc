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
    pool = real_set(15, seed=2)
    pool.images = pool.images + 2
    arms, table = S.build_arms(cfg, r, {"R-only 1": syn, "pool-pretrained": pool})
    assert list(arms) == ["real", "real+synthetic 50% [R-only 1]", "real+synthetic 150% [R-only 1]", "synthetic 150% [R-only 1]",
                          "real+synthetic 50% [pool-pretrained]", "real+synthetic 150% [pool-pretrained]",
                          "synthetic 150% [pool-pretrained]", "real+duplicates 150%"]
    t = table.set_index("arm")
    assert t["n_train"].to_dict() == {"real": 10, "real+synthetic 50% [R-only 1]": 15, "real+synthetic 150% [R-only 1]": 25,
                                      "synthetic 150% [R-only 1]": 15, "real+synthetic 50% [pool-pretrained]": 15,
                                      "real+synthetic 150% [pool-pretrained]": 25, "synthetic 150% [pool-pretrained]": 15,
                                      "real+duplicates 150%": 25}
    assert t.loc["real+synthetic 50% [pool-pretrained]", "source_kind"] == "pool-pretrained"
    assert t.loc["synthetic 150% [R-only 1]", "source_kind"] == "R-only" and t.loc["real+duplicates 150%", "source"] == ""
    # the 50 % arm's synthetic images are the first 5 of the 150 % arm's (one stream, prefixes), per source
    half = arms["real+synthetic 50% [R-only 1]"][1].to_tensors()[0]
    full = arms["real+synthetic 150% [R-only 1]"][1].to_tensors()[0]
    assert torch.equal(half, full[:5]) and torch.equal(arms["synthetic 150% [R-only 1]"][0].to_tensors()[0], full)
    assert torch.equal(arms["real+synthetic 150% [pool-pretrained]"][1].to_tensors()[0], pool.to_tensors()[0])
    # the duplicate control adds real images only, count-matched to real+synthetic 150%
    dup = arms["real+duplicates 150%"][1].to_tensors()[0][:, 0, 0, 0] % 20
    assert len(arms["real+duplicates 150%"][1]) == 15 and (dup == 0).all()
    assert S.synthetic_needed(cfg, 10) == 15
    with pytest.raises(ValueError, match="'pool-pretrained' has 14 synthetic images, but the grid needs 15"):
        S.build_arms(cfg, r, {"R-only 1": syn, "pool-pretrained": pool.subset(np.arange(14))})


def test_sources_and_new_config_checks():
    full = S.Config.from_params(profile="cpu-full")
    assert S.source_names(full) == ["R-only 1", "R-only 2", "pool-pretrained"] and full.n_seeds >= 5
    assert max(full.supplement_percents) == 1000 and set(full.duplicate_percents) == set(full.supplement_percents) - {0}
    cpu = S.Config.from_params(profile="cpu")  # the hour book: two R-only generators, their duplicates control
    assert S.source_names(cpu) == ["R-only 1", "R-only 2"] and cpu.n_seeds >= 5
    assert set(cpu.duplicate_percents) == set(cpu.supplement_percents) - {0} == {100}
    assert S.source_names(S.Config.from_params(profile="smoke", n_generators=0, mixing_site="")) == ["pool-pretrained"]
    with pytest.raises(ConfigError, match="no synthetic source"):
        S.Config.from_params(profile="smoke", n_generators=0, pool_pretrained=False)
    with pytest.raises(ConfigError, match="'mixing_site': 'chexpert' is not one of the external sites"):
        S.Config.from_params(profile="smoke", mixing_site="chexpert")
    with pytest.raises(ConfigError, match="mixing_site"):
        S.Config.from_params(profile="smoke", external_sites=("padchest",))  # default mixing site nih not among them
    with pytest.raises(ConfigError, match="mixing_site"):
        S.Config.from_params(profile="smoke", n_generators=0)
    assert S.Config.from_params(profile="smoke", n_generators=0, mixing_site="").mixing_site == ""
    # the mixing arm takes its synthetic images from the first R-only source's stream
    cfg = S.Config.from_params(profile="smoke", supplement_percents=(0, 50), synthetic_only_percents=(), duplicate_percents=(),
                               mixing_percent=300)
    assert S.synthetic_needed(cfg, 10, source="R-only 1") == 30 and S.synthetic_needed(cfg, 10, source="pool-pretrained") == 5


def test_mixing_arms_and_summary():
    cfg = S.Config.from_params(profile="smoke", mixing_percent=50)
    site = real_set(8, seed=3)
    syn = real_set(10, seed=1)
    syn.images = syn.images + 1
    arms, table = S.mixing_arms(cfg, site, syn)
    assert list(arms) == ["nih real", "nih real + internal synthetic 50%", "nih real + duplicates 50%"]
    assert table.set_index("kind")["n_train"].to_dict() == {"site real": 8, "site real+synthetic": 12, "site real+duplicates": 12}
    assert torch.equal(arms["nih real + internal synthetic 50%"][1].to_tensors()[0], syn.to_tensors()[0][:4])
    with pytest.raises(ValueError, match="needs 4"):
        S.mixing_arms(cfg, site, syn.subset(np.arange(3)))
    rows = []
    for seed in range(4):
        for arm, auc in (("nih real", 0.70), ("nih real + internal synthetic 50%", 0.74 + 0.002 * seed),
                         ("nih real + duplicates 50%", 0.71)):
            rows.append(dict(test_set="internal", arm=arm, metric="auroc", label="macro", seed=seed, estimate=auc + 0.01 * seed))
    summary = S.mixing_summary(pd.DataFrame(rows), table)
    mixed = summary.set_index("arm").loc["nih real + internal synthetic 50%"]
    assert mixed.vs_real == pytest.approx(0.043) and mixed.vs_real_p < 0.001 and mixed.vs_duplicates == pytest.approx(0.033)
    assert len(S.plot_mixing(summary).axes) == 1


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
    """A results table shaped like run's (3 seeds and a pooled row) for two test sets and two R-only
    generators; seed k of an arm is its base AUROC + 0.01 k (+ a generator-specific offset)."""
    base = {"real": (0, "", 0.70), "real+synthetic 100% [R-only 1]": (100, "R-only 1", 0.72),
            "real+synthetic 200% [R-only 1]": (200, "R-only 1", 0.73), "real+synthetic 100% [R-only 2]": (100, "R-only 2", 0.70),
            "real+synthetic 200% [R-only 2]": (200, "R-only 2", 0.75), "synthetic 200% [R-only 1]": (200, "R-only 1", 0.69),
            "real+duplicates 100%": (100, "", 0.705), "real+duplicates 200%": (200, "", 0.705)}
    rows = []
    for t, shift in (("internal", 0.0), ("nih", -0.05)):
        for a, (p, src, auc) in base.items():
            for seed in (0, 1, 2, "pooled"):
                d = 0.0 if seed == "pooled" else 0.01 * seed + (0.001 * seed if "R-only 2" in a else 0.0)
                rows.append(dict(test_set=t, arm=a, label="macro", metric="auroc", seed=seed, estimate=auc + shift + d,
                                 ci_low=auc + shift + d - 0.02, ci_high=auc + shift + d + 0.02,
                                 p_value=np.nan if a == "real" else 0.03, p_adj=np.nan if a == "real" else 0.03,
                                 n_seeds=3 if seed == "pooled" else 1, ci_method="t", test="bootstrap"))
    table = pd.DataFrame([dict(arm=a, kind=a.split(" ")[0], source=src, source_kind="R-only" if src else "", percent=p,
                               n_train=0) for a, (p, src, _) in base.items()])
    return pd.DataFrame(rows), table


def test_auroc_curve_starts_every_line_at_real():
    res, table = fake_results()
    curve = S.auroc_curve(res, table)
    for k, src in (("real+synthetic", "R-only 1"), ("real+synthetic", "R-only 2"), ("synthetic", "R-only 1"),
                   ("real+duplicates", "")):
        line = curve[(curve.test_set == "internal") & (curve.kind == k) & (curve.source == src)].sort_values("percent")
        assert line.iloc[0].percent == 0 and line.iloc[0].estimate == pytest.approx(0.71)  # mean of 0.70, 0.71, 0.72
    nih = curve[(curve.test_set == "nih") & (curve.arm == "real+synthetic 200% [R-only 2]")].iloc[0]
    assert nih.estimate == pytest.approx(0.75 - 0.05 + 0.011) and nih.p_adj_seeds == pytest.approx(0.03)
    fig = S.plot_auroc_vs_percent(curve)
    assert len(fig.axes) == 2


def test_contrasts_pair_by_seed_and_average_generators():
    res, table = fake_results()
    c = S.contrasts(res, table, "internal").set_index(["source", "percent", "vs"])
    # R-only 1 at 200 %: 0.73 - 0.705 in every seed
    one = c.loc[("R-only 1", 200, "duplicates")]
    assert one.estimate == pytest.approx(0.025) and one.n_seeds == 3 and one.p == 0.0 and one.n_generators == 1
    # the mean over the two R-only generators, per seed: (0.73 + 0.01k + 0.75 + 0.011k) / 2 - (0.705 + 0.01k)
    mean = c.loc[(S.MEAN_R_ONLY, 200, "duplicates")]
    assert mean.estimate == pytest.approx(0.035 + 0.0005) and mean.n_generators == 2
    assert mean.ci_low < mean.estimate < mean.ci_high and mean.p < 0.01
    assert c.loc[(S.MEAN_R_ONLY, 100, "real")].estimate == pytest.approx(0.01 + 0.0005)
    assert len(S.plot_contrasts(c.reset_index()).axes) == 1


def test_regime_config_checks():
    assert S.Config.from_params(profile="cpu-full").regime_fractions == (0.1, 0.25, 0.5, 1.0)
    with pytest.raises(ConfigError, match="regime_fractions"):
        S.Config.from_params(profile="smoke", pool_pretrained=False)  # the map needs the pool-pretrained source
    assert S.Config.from_params(profile="smoke", pool_pretrained=False, regime_fractions=()).regime_fractions == ()
    with pytest.raises(ConfigError, match="regime_fractions"):
        S.Config.from_params(profile="smoke", regime_fractions=(0.5, 1.5))
    with pytest.raises(ConfigError, match="regime_percents"):
        S.Config.from_params(profile="smoke", regime_percents=(0,))


def test_regime_map_cells_are_paired_contrasts_with_holm():
    """Two fractions x one ratio, 4 seeds: at 10 % synthetic beats duplicates by 0.03 in every seed
    (p = 0 exactly), at 100 % they are equal up to seed noise."""
    from cxrlib.experiments import regime as RG

    rows, arms = [], []
    for f, gain in ((0.1, 0.03), (1.0, 0.0)):
        for kind, p in (("real", 0), ("synthetic", 100), ("duplicates", 100)):
            arms.append(dict(arm=RG.arm_name(f, kind, p), fraction=f, kind=kind, percent=p, n_real=int(f * 100), n_added=0))
        for seed in range(4):
            base = 0.7 + 0.01 * seed
            noise = (-1) ** seed * 0.004 if gain == 0 else 0.0
            for kind, auc in (("real", base), ("duplicates", base + 0.01), ("synthetic", base + 0.01 + gain + noise)):
                rows.append(dict(arm=RG.arm_name(f, kind, 0 if kind == "real" else 100), metric="auroc", label="macro",
                                 seed=seed, estimate=auc, test_set="internal", fraction=f))
    table = pd.DataFrame(arms)
    assert RG.arm_name(0.25, "synthetic", 300) == "R25% + synthetic 300%"
    m = RG.regime_map(pd.DataFrame(rows), table).set_index(["fraction", "vs"])
    lo = m.loc[(0.1, "duplicates")]
    assert lo.estimate == pytest.approx(0.03) and lo.p == 0.0 and lo.n_seeds == 4 and lo.labeled_images == 10
    hi = m.loc[(1.0, "duplicates")]
    assert hi.estimate == pytest.approx(0.0) and hi.ci_low < 0 < hi.ci_high and hi.p_holm == pytest.approx(1.0)
    assert m.loc[(0.1, "real")].estimate == pytest.approx(0.04)
    assert len(RG.plot_heatmap(m.reset_index()).axes) == 2 and len(RG.plot_lines(m.reset_index()).axes) == 1
