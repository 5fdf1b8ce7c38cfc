"""cxrlib.fidelity: metrics against independent computations and known values on constructed cases."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from cxrlib import fidelity as F
from cxrlib.fidelity.metrics import _mmd2_from_kernels, polynomial_kernel

# Most tests use deliberately small sets; the small-n warnings are tested explicitly where they matter.
pytestmark = pytest.mark.filterwarnings("ignore::cxrlib.fidelity.metrics.SmallSampleWarning")


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random 'radiograph-like' images, uint8 [n, 1, size, size]: upsampled 4x4 noise + a blob."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = torch.rand(n, 2, generator=g) - 0.5
    blob = torch.exp(-((xx - c[:, :1, None]) ** 2 + (yy - c[:, 1:, None]) ** 2) / 0.1)[:, None]
    x = 0.6 * x + 0.4 * blob
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class Identity(torch.nn.Module):
    """Feature 'network' for torchmetrics: the features are the input."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def tiny_cnn(n_out: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
        torch.nn.Linear(128, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out),
    )


def fd_scipy(x, y, eps=1e-6):
    """pytorch-fid's computation: scipy sqrtm of the product, eps*I offset when it is not finite."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


# --- Fréchet distance -------------------------------------------------------------------------------
def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 32))
    assert F.frechet_distance(x, x, warn=False)["value"] == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("n,d", [(400, 16), (40, 64)])  # full-rank and singular (n < D) covariances
def test_fd_matches_torchmetrics_and_scipy(n, d):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(n + 7, d)) * 1.3 + 0.2
    ours = F.frechet_distance(a, b, warn=False)
    assert ours["n_real"] == n and ours["n_syn"] == n + 7

    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=Identity(d))
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b), real=False)
    ref_tm = float(fid.compute())
    ref_sp = fd_scipy(a, b)
    assert ours["value"] == pytest.approx(ref_tm, rel=1e-6)
    assert ours["value"] == pytest.approx(ref_sp, rel=1e-5)


def test_fd_near_singular_is_finite_nonnegative_and_warns():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 3)) @ rng.normal(size=(3, 50))  # rank-3 covariance in 50-d
    with pytest.warns(F.SmallSampleWarning, match="singular"):
        v = F.frechet_distance(a, a + 1e-9 * rng.normal(size=a.shape))["value"]
    assert np.isfinite(v) and 0 <= v < 1e-6


# --- KID --------------------------------------------------------------------------------------------
def test_kid_matches_torchmetrics_on_the_same_features():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(150, 12)), rng.normal(size=(150, 12)) + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics' "features kept in memory" note
        kid = KernelInceptionDistance(feature=Identity(12), subsets=1, subset_size=150)
    kid.update(torch.from_numpy(a), real=True)
    kid.update(torch.from_numpy(b), real=False)
    ref = float(kid.compute()[0])  # one subset of all samples: permutation-invariant, so deterministic
    assert F.kernel_distance(a, b)["value"] == pytest.approx(ref, rel=1e-9)
    # the subset convention with subsets of the full size reproduces the full-set statistic
    sub = F.kernel_distance(a, b, subsets=3, subset_size=150)
    # the three subsets are permutations of the same sets: they differ only by summation order, whose
    # round-off is bounded by (number of kernel terms) * eps * |value| (dtype-derived, any CPU/BLAS)
    roundoff = 150**2 * np.finfo(np.float64).eps * abs(ref)
    assert sub["value"] == pytest.approx(ref, rel=1e-9) and sub["std"] == pytest.approx(0, abs=roundoff)
    # same distribution -> ~0 (unbiased, may be slightly negative)
    assert abs(F.kernel_distance(a, rng.normal(size=(150, 12)))["value"]) < 0.05
    with pytest.raises(ValueError, match="subset_size"):
        F.kernel_distance(a, b, subset_size=500)


def test_kid_bootstrap_weights_reduce_to_plain_statistic_and_skip_self_pairs():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, 5)), rng.normal(size=(25, 5))
    kxx, kyy, kxy = (polynomial_kernel(u, v) for u, v in ((a, a), (b, b), (a, b)))
    assert _mmd2_from_kernels(kxx, kyy, kxy, np.ones(20), np.ones(25)) == pytest.approx(_mmd2_from_kernels(kxx, kyy, kxy))
    # counts (2, 0, 1, 1, ...) must equal the U-statistic over distinct original points with those weights
    w = np.bincount(rng.integers(0, 20, 20), minlength=20).astype(float)
    sxx = sum(w[i] * w[j] * kxx[i, j] for i in range(20) for j in range(20) if i != j)
    nxx = sum(w[i] * w[j] for i in range(20) for j in range(20) if i != j)
    ones = np.ones(25)
    expected = sxx / nxx + (kyy.sum() - np.trace(kyy)) / (25 * 24) - 2 * (w @ kxy @ ones) / (w.sum() * 25)
    assert _mmd2_from_kernels(kxx, kyy, kxy, w, ones) == pytest.approx(expected)


def test_bootstrap_ci_brackets_and_is_reproducible():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(120, 8)), rng.normal(size=(100, 8)) + 0.5
    for metric in ("fd", "kid"):
        ci = F.bootstrap_ci(metric, a, b, n_boot=50, seed=1)
        assert ci["ci_low"] < ci["ci_high"] and ci["n_real"] == 120 and ci["n_syn"] == 100
        assert ci == F.bootstrap_ci(metric, a, b, n_boot=50, seed=1)
    # two samples of one distribution: FD's basic interval reaches down to (clipped) 0
    ci = F.bootstrap_ci("fd", a, rng.normal(size=(120, 8)), n_boot=100, seed=2)
    assert ci["ci_low"] == 0.0 < ci["value"]
    with pytest.raises(ValueError, match="metric"):
        F.bootstrap_ci("ssim", a, b)


@pytest.mark.slow
def test_fd_bootstrap_basic_interval_covers_truth():
    """The simulation behind bootstrap_ci's choice of the basic interval (FD is biased at finite n)."""
    d, n, runs = 16, 300, 40
    truth = d * 0.3**2 + d * (1 + 1.2**2 - 2 * 1.2)  # N(0, I) vs N(0.3, 1.44 I)
    hits = {"basic": 0, "percentile": 0}
    for r in range(runs):
        rng = np.random.default_rng(r)
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.2 + 0.3
        for m in hits:
            ci = F.bootstrap_ci("fd", a, b, n_boot=200, method=m, seed=r)
            hits[m] += ci["ci_low"] <= truth <= ci["ci_high"]
    assert hits["basic"] >= 0.85 * runs
    assert hits["percentile"] < hits["basic"]


def test_small_n_warns_and_reports_n():
    x = np.random.default_rng(6).normal(size=(50, 4))
    with pytest.warns(F.SmallSampleWarning, match="fd: n=50"):
        r = F.frechet_distance(x, x + 1)
    assert r["n_real"] == 50


# --- precision / recall / density / coverage --------------------------------------------------------
def test_prdc_known_values():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(100, 10))
    same = F.precision_recall_density_coverage(x, x, k=5, warn=False)
    assert (same["precision"], same["recall"], same["coverage"]) == (1.0, 1.0, 1.0)
    assert same["density"] == pytest.approx(1.0)
    far = F.precision_recall_density_coverage(x, x + 1000, k=5, warn=False)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0
    # half the synthetic set copies real points, half is far away: precision 1/2
    half = F.precision_recall_density_coverage(x, np.concatenate([x[:50], x[50:] + 1000]), k=5, warn=False)
    assert half["precision"] == 0.5 and 0.5 <= half["coverage"] < 1.0
    # a collapsed generator (all samples at one real point): high precision, coverage ~ 1/N-ish
    mode = F.precision_recall_density_coverage(x, np.repeat(x[:1], 30, axis=0) + 1e-9, k=5, warn=False)
    assert mode["precision"] == 1.0 and mode["coverage"] <= 0.1 and mode["recall"] <= 0.1


def test_prdc_matches_reference_implementation():
    prdc = pytest.importorskip("prdc")  # clovaai's reference code, if installed
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(80, 6)), rng.normal(size=(70, 6)) * 1.3 + 0.4
    ref = prdc.compute_prdc(real_features=a, fake_features=b, nearest_k=5)
    ours = F.precision_recall_density_coverage(a, b, k=5, warn=False)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(ref[key])


# --- diversity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_diversity(size):
    imgs = smooth_images(12, size=size, seed=1)
    clones = imgs[:1].repeat(12, 1, 1, 1)
    assert F.mean_pairwise_ms_ssim(clones, warn=False)["value"] == pytest.approx(1.0, abs=1e-4)
    varied = F.mean_pairwise_ms_ssim(imgs, warn=False)
    assert varied["n"] == 12 and varied["n_pairs"] == 66 and varied["value"] < 0.9
    sampled = F.mean_pairwise_ms_ssim(imgs, max_pairs=20, seed=3, warn=False)
    assert sampled["n_pairs"] == 20 and sampled == F.mean_pairwise_ms_ssim(imgs, max_pairs=20, seed=3, warn=False)
    with pytest.raises(ValueError, match="too small"):
        F.ms_ssim_settings(12)


# --- memorisation -----------------------------------------------------------------------------------
def test_memorization_flags_planted_copies_not_fresh_samples():
    train = smooth_images(300, seed=10)
    heldout = smooth_images(150, seed=11)
    fresh = smooth_images(100, seed=12)
    g = torch.Generator().manual_seed(0)
    pick = torch.arange(0, 300, 15)  # 20 planted copies, with a little noise
    copies = (train[pick].float() + 3 * torch.randn(20, 1, 32, 32, generator=g)).clamp(0, 255).round().to(torch.uint8)
    syn = torch.cat([copies, fresh])

    net = tiny_cnn()
    feats = {k: F.extract_features(net, v) for k, v in (("syn", syn), ("train", train), ("heldout", heldout))}
    audits = F.memorization_audit(syn, train, heldout, syn_features=feats["syn"], train_features=feats["train"], heldout_features=feats["heldout"])
    for space, audit in audits.items():
        t = audit.table
        assert t["flagged"].iloc[:20].all(), space
        assert (t["train_index"].iloc[:20].to_numpy() == pick.numpy()).all(), space
        assert t["flagged"].iloc[20:].mean() <= 3 * audit.quantile, space  # about the false-alarm rate
        assert 0 < audit.expected_fraction <= 2 * audit.quantile
        assert t["ratio"].iloc[:20].max() < t["ratio"].iloc[20:].median()
    fig = F.plot_closest_pairs(audits["pixel"], syn, train, n=4)
    assert len(fig.axes) == 8 and "FLAGGED" in fig.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def _leak_audit(heldout, train):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit = F.replica_audit(F.pixel_vectors(train[:5]), F.pixel_vectors(train), F.pixel_vectors(heldout), space="pixel")
    return audit, [str(w.message) for w in caught if "replica_audit" in str(w.message)]


@pytest.mark.parametrize("case", ["all", "one", "near"])
def test_memorization_finds_heldout_leaks(case):
    """Issue 11: a leak is found whatever the fraction that leaks, and a near-copy is not an exact one."""
    train = smooth_images(100, seed=1)
    fresh = smooth_images(100, seed=2)
    if case == "all":  # every held-out image is a copy: the median distance is itself 0
        heldout, exact, near = train[:10], 10, 0
    elif case == "one":  # 1 of 100
        heldout, exact, near = torch.cat([fresh[:99], train[7:8]]), 1, 0
    else:  # one pixel changed by one grey level
        copy = train[7:8].clone()
        copy[0, 0, 3, 4] += 1 if copy[0, 0, 3, 4] < 255 else -1
        heldout, exact, near = torch.cat([fresh[:99], copy]), 0, 1
    audit, messages = _leak_audit(heldout, train)
    assert (audit.heldout_exact_copies, audit.heldout_near_copies) == (exact, near)
    assert len(messages) == 1
    assert f"{exact} are exact copies and {near} are near-copies" in messages[0]
    assert audit.table["exact_copy"].all()  # the synthetic set here is train[:5]


def test_exact_copies_do_not_depend_on_blas_roundoff(monkeypatch):
    """The matrix-product distance of an image to itself is ~1e-7 on some BLAS builds (AVX-512 MKL),
    0 on others. Simulate the former: exact copies must still be found at distance exactly 0."""
    from cxrlib.fidelity import distances

    real_mm = distances._mm_squared

    def noisy(a, b, sq_a, sq_b):  # round-off-sized noise, inside the bound the module derives from the dtype
        d2 = real_mm(a, b, sq_a, sq_b)
        band = distances.roundoff_band(sq_a, sq_b, a.shape[1])
        g = torch.Generator().manual_seed(0)
        return (d2 + 0.49 * band * torch.rand(d2.shape, generator=g, dtype=torch.float64)).clamp_min(0)

    monkeypatch.setattr(distances, "_mm_squared", noisy)
    train = smooth_images(60, seed=1)
    audit, messages = _leak_audit(train[:10], train)
    assert audit.heldout_exact_copies == 10 and "10 are exact copies" in messages[0]
    idx, dist = F.nearest_neighbors(F.pixel_vectors(train[:10]), F.pixel_vectors(train))
    assert (idx == np.arange(10)).all() and (dist == 0).all()
    d = F.pairwise_distances(F.pixel_vectors(train), F.pixel_vectors(train))
    assert (np.diag(d) == 0).all() and (d[~np.eye(60, dtype=bool)] > 0).all()


def test_nearest_neighbor_prefers_the_exact_copy_over_a_near_copy():
    train = smooth_images(20, seed=3)
    near = train[4:5].clone()
    near[0, 0, 0, 0] ^= 1  # one grey level off
    ref = torch.cat([near, train])  # the near-copy comes first: a tie-blind argmin over round-off could pick it
    idx, dist = F.nearest_neighbors(F.pixel_vectors(train[4:5]), F.pixel_vectors(ref))
    assert idx[0] == 5 and dist[0] == 0


# --- label consistency ------------------------------------------------------------------------------
def test_label_consistency_auroc_and_filter():
    rng = np.random.default_rng(9)
    y = (rng.random((200, 3)) < 0.3).astype(float)
    y[:, 2] = 0  # label 2 never conditioned on: undefined
    scores = np.stack([y[:, 0] * 0.5 + 0.25 + 0.01 * rng.random(200), rng.random(200), rng.random(200)], 1)
    with pytest.warns(UserWarning, match="'C'.*undefined"):
        t = F.label_consistency(scores, y, ["A", "B", "C"])
    assert t.loc[0, "auroc"] == 1.0 and 0.35 < t.loc[1, "auroc"] < 0.65 and np.isnan(t.loc[2, "auroc"])
    assert t.loc[0, "n_pos"] == int(y[:, 0].sum()) and t.loc[2, "n_neg"] == 200

    keep = F.oracle_agreement_mask(np.array([[0.9, 0.1], [0.9, 0.9], [0.2, 0.1]]), np.array([[1, 0], [1, 0], [1, 0]]))
    assert keep.tolist() == [True, False, False]
    keep = F.oracle_agreement_mask(np.array([[0.9, 0.9], [0.2, 0.1]]), np.array([[1, 0], [1, 0]]), min_agreement=0.5)
    assert keep.tolist() == [True, True]
    keep = F.oracle_agreement_mask(np.array([[0.9, 0.9]]), np.array([[1, 0]]), mask=np.array([[True, False]]))
    assert keep.tolist() == [True]


def test_paired_label_effect_known_cases():
    rng = np.random.default_rng(4)
    off = rng.random(150) * 0.5
    # the label always raises the score by more than the spread: separable twins
    r = F.paired_label_effect(off + 0.6, off)
    assert r["auroc"] == 1.0 and r["frac_higher"] == 1.0 and r["p_value"] < 1e-10 and r["n"] == 150
    assert r["ci_low"] <= r["auroc"] <= r["ci_high"] and abs(r["mean_diff"] - 0.6) < 1e-12
    # the label changes nothing: AUROC 1/2 exactly, p = 1, no pair moved
    r = F.paired_label_effect(off, off.copy())
    assert r["auroc"] == 0.5 and r["p_value"] == 1.0 and r["frac_higher"] == 0.0
    # the label lowers the score: below 1/2
    assert F.paired_label_effect(off, off + 0.1)["auroc"] < 0.5
    # independent noise: the 95 % interval covers 1/2 in most of 40 simulations (coverage, not one draw)
    cover = [(lambda t: t["ci_low"] <= 0.5 <= t["ci_high"])(F.paired_label_effect(rng.random(80), rng.random(80), n_boot=300, seed=k))
             for k in range(40)]
    assert sum(cover) >= 34
    # a small but consistent shift inside wide noise: an AUROC near 1/2 that the paired test still detects
    base = rng.random(400)
    r = F.paired_label_effect(base + 0.05, base)
    assert r["auroc"] < 0.6 and r["p_value"] < 1e-6
    with pytest.raises(ValueError, match="same length"):
        F.paired_label_effect(off[:3], off[:4])
    with pytest.raises(ValueError, match="NaN"):
        F.paired_label_effect(np.r_[off[:3], np.nan], off[:4])


# --- feature extractors -----------------------------------------------------------------------------
def test_extract_features_interface_and_penultimate():
    from cxrlib.models.classifiers import build_classifier

    clf = build_classifier("small_cnn", 3, image_size=32)
    clf.train()
    imgs = smooth_images(10, seed=2)
    f8 = F.extract_features(clf, imgs, batch_size=3)
    ff = F.extract_features(clf, imgs.float() / 255, batch_size=10)
    assert f8.shape == (10, 256) and f8.dtype == np.float64
    np.testing.assert_allclose(f8, ff, rtol=1e-5, atol=1e-6)  # uint8 and float inputs, batch size invariant
    assert clf.training  # train/eval state restored
    # the penultimate features are what the head sees: head(features) == logits
    head = [m for m in clf.modules() if isinstance(m, torch.nn.Linear)][-1]
    clf.eval()
    with torch.no_grad():
        logits = clf(imgs.float() / 255)
    np.testing.assert_allclose(head(torch.from_numpy(f8).float()).detach().numpy(), logits.numpy(), rtol=1e-4, atol=1e-4)

    with pytest.raises(ValueError, match=r"\[N, 1, S, S\]"):
        F.extract_features(clf, torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.extract_features(clf, torch.full((2, 1, 32, 32), 2.0))
    with pytest.raises(ValueError, match="no nn.Linear head"):
        F.PenultimateFeatures(torch.nn.Conv2d(1, 1, 3))


def test_pretrained_extractors_are_a_clear_error_when_unavailable(monkeypatch, tmp_path):
    monkeypatch.delenv("CXR_XRV_WEIGHTS", raising=False)
    monkeypatch.delenv("CXR_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(F.FeatureWeightsUnavailable, match="densenet121-res224-all.*CXR_XRV_WEIGHTS"):
        F.get_extractor("xrv")
    with pytest.raises(F.FeatureWeightsUnavailable, match="does not exist"):
        F.get_extractor("xrv", weights=tmp_path / "missing.safetensors")
    with pytest.raises(F.FeatureWeightsUnavailable, match="torch-fidelity|weights-inception-2015-12-05"):
        F.get_extractor("inception")
    with pytest.raises(ValueError, match="needs classifier"):
        F.get_extractor("study")
    with pytest.raises(ValueError, match="unknown feature extractor 'fid'.*study"):
        F.get_extractor("fid")


# --- the report ---------------------------------------------------------------------------------------
def test_fidelity_report_table():
    labels = ["A", "B"]
    rng = np.random.default_rng(11)
    real, syn, train = smooth_images(60, seed=20), smooth_images(50, seed=21), smooth_images(80, seed=22)
    y_real = (rng.random((60, 2)) < 0.5).astype(float)
    y_syn = (rng.random((50, 2)) < 0.5).astype(float)
    oracle = np.clip(y_syn + 0.3 * rng.normal(size=y_syn.shape), 0, 1)
    ext = F.FeatureExtractor("tiny", F.PenultimateFeatures(tiny_cnn()))
    with pytest.warns(F.SmallSampleWarning, match="fidelity_report"):
        df = F.fidelity_report(real, y_real, syn, y_syn, ext, label_names=labels, train_images=train,
                               oracle_scores=oracle, n_boot=20, ms_ssim_pairs=30)
    assert tuple(df.columns) == F.REPORT_COLUMNS
    assert set(df["metric"]) == set(F.METRIC_DESCRIPTIONS)
    assert df.attrs["extractor"] == "tiny"
    one = df.set_index(["metric", "label"])
    assert set(one.loc["precision"].index) == {"all", "A", "B"}
    assert one.loc[("fd", "all"), "ci_low"] <= one.loc[("fd", "all"), "ci_high"]
    assert one.loc[("fd", "all"), "n_real"] == 60 and one.loc[("fd", "all"), "n_syn"] == 50
    assert one.loc[("precision", "A"), "n_real"] == int(y_real[:, 0].sum())
    assert one.loc[("label_auroc", "A"), "value"] > 0.8
    assert pd.isna(one.loc[("ms_ssim_syn", "all"), "n_real"])
    assert df["value"].notna().all()


@pytest.mark.slow  # a DenseNet-121 forward at 224 px: ~8 s of CPU
def test_xrv_extractor_loads_safetensors_weights(tmp_path):
    """The FXD plumbing with randomly initialised weights in the expected format (the real weights
    cannot be downloaded here): safetensors state dict in, 1024-d pooled features out."""
    import torchxrayvision as xrv
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "xrv.safetensors"
    save_file(xrv.models.DenseNet(weights=None).state_dict(), str(path))
    ext = F.get_extractor("xrv", weights=path)
    assert ext.name == "xrv"
    feats = F.extract_features(ext, smooth_images(2, seed=3), batch_size=2)
    assert feats.shape == (2, 1024) and np.isfinite(feats).all()
    torch.save({"x": torch.zeros(1)}, tmp_path / "pickled.pt")
    with pytest.raises(Exception, match="safetensors"):
        F.xrv_extractor(tmp_path / "pickled.pt")
