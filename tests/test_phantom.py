"""The embedded phantom dataset: determinism, real label statistics, sites, visible findings."""

import hashlib

import numpy as np
import pytest

from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.data.phantom import RENDERED, RENDERER_VERSION, SITES, PhantomDataset, phantom_meta, render_image
from cxrlib.data.phantom_render import Acquisition, Findings, render, sample_anatomy
from cxrlib.data.phantom_sources import chexpert_table, lung_mask_bank


@pytest.fixture(scope="module")
def meta():
    return phantom_meta("internal", 2000, seed=0)


def test_image_is_a_pure_function_of_seed_site_size_index(meta):
    a = render_image(meta.iloc[7], 32, 0)
    b = render_image(phantom_meta("internal", 8, 0).iloc[7], 32, 0)  # other n: same image 7
    assert a.dtype == np.uint8 and a.shape == (32, 32)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_image(phantom_meta("internal", 8, 1).iloc[7], 32, 1))  # seed matters
    ds = PhantomDataset("internal", 32, 0, indices=[7, 3], cache=False, progress=False)
    assert np.array_equal(ds.images[0], a)


def test_meta_prefix_stable_and_patients_have_followups(meta):
    small = phantom_meta("internal", 300, seed=0)
    assert small.equals(meta.iloc[:300].reset_index(drop=True))
    per_patient = meta.groupby("patient_id").size()
    assert per_patient.max() > 1 and per_patient.max() <= SITES["internal"].max_studies
    assert meta["image_id"].is_unique


def test_labels_follow_chexpert_joint_distribution(meta):
    # the phantom keeps each patient's first `max_studies` frontal images: compare like with like
    real = chexpert_table().groupby("source_patient", sort=False).head(SITES["internal"].max_studies)
    for lab in ("Support Devices", "Pleural Effusion", "Cardiomegaly", "No Finding"):
        p_ph = (meta[lab] == 1).mean()
        p_real = (real[lab] == 1).mean()
        assert abs(p_ph - p_real) < 0.03, (lab, p_ph, p_real)
    assert (meta[list(CHEXPERT_LABELS)] == -1).any().any()  # uncertain labels are kept
    nf = meta["No Finding"] == 1  # co-occurrence preserved: No Finding excludes effusion
    assert (meta.loc[nf, "Pleural Effusion"] == 1).sum() == 0


def test_latent_truth_follows_labels(meta):
    pos = meta["Cardiomegaly"] == 1
    assert (meta.loc[pos, "sev:Cardiomegaly"] >= 0.25).all()
    assert (meta.loc[meta["Cardiomegaly"] == 0, "sev:Cardiomegaly"] == 0).all()
    unc = meta["Cardiomegaly"] == -1
    frac = (meta.loc[unc, "sev:Cardiomegaly"] > 0).mean()
    assert 0.25 < frac < 0.75  # uncertain labels are a coin flip of a mild finding


def test_sites_differ_in_prevalence_and_look():
    nih = phantom_meta("nih", 1500, 0)
    pad = phantom_meta("padchest", 1500, 0)
    internal = phantom_meta("internal", 1500, 0)
    assert (nih["No Finding"] == 1).mean() > (internal["No Finding"] == 1).mean() + 0.2
    assert nih["Support Devices"].isna().all()  # not annotated by NIH
    assert (pad["Support Devices"] == 1).mean() < (internal["Support Devices"] == 1).mean()
    imgs = {s: PhantomDataset(s, 32, 0, n=40, cache=False, progress=False).images.astype(float) for s in SITES}
    # high-frequency energy (noise) differs: PadChest is noisier than the blurred NIH site
    hf = {s: np.abs(np.diff(x, axis=2)).mean() for s, x in imgs.items()}
    assert hf["padchest"] > hf["nih"] * 1.3


@pytest.mark.parametrize("finding", RENDERED)
def test_every_finding_changes_the_image(finding):
    bank = lung_mask_bank()
    anat = sample_anatomy(np.random.default_rng(1), bank, "F", 60.0)
    acq = Acquisition(noise=0.0, blur=0.0)

    def draw(sev):
        f = Findings({finding: sev} if sev else {})
        img, geo = render(64, anat, f, acq, "PA", bank, np.random.default_rng(5))
        return img.astype(float), geo

    none, geo0 = draw(0.0)
    mild, _ = draw(0.3)
    severe, geo1 = draw(1.0)
    d_mild, d_severe = np.abs(mild - none).mean(), np.abs(severe - none).mean()
    assert d_severe > 0.05, f"{finding} is invisible"
    assert d_severe >= d_mild * 0.9, f"{finding}: severity does not scale the change"
    if finding == "Cardiomegaly":
        assert geo1["ctr"] > 0.6 > geo0["ctr"]


def test_golden_checksum():
    """Renderer output is pinned: a change here must come with a RENDERER_VERSION bump."""
    ds = PhantomDataset("internal", 32, 0, n=6, cache=False, progress=False)
    digest = hashlib.sha256(ds.images.tobytes()).hexdigest()[:16]
    assert RENDERER_VERSION in GOLDEN, f"pin the checksum of renderer v{RENDERER_VERSION}: {digest}"
    assert digest == GOLDEN[RENDERER_VERSION], digest


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown phantom site 'mars'"):
        phantom_meta("mars", 10)
    with pytest.raises(ValueError, match="size must be >= 16"):
        render_image(phantom_meta("internal", 1).iloc[0], 8, 0)
    with pytest.raises(ValueError, match="unknown label"):
        PhantomDataset("internal", 32, n=2, labels=("Cardiomegally",), cache=False, progress=False)


def test_cache_roundtrip(cache_dir):
    a = PhantomDataset("internal", 32, 0, n=5, progress=False)
    assert len(list((cache_dir / "phantom").glob("*/images.npy"))) == 1
    b = PhantomDataset("internal", 32, 0, n=5, progress=False)
    assert np.array_equal(a.images, b.images)
    x = a[0]
    assert x["image"].shape == (1, 32, 32) and 0 <= float(x["image"].min()) and float(x["image"].max()) <= 1
    assert x["labels"].shape == (14,) and x["site"] == "internal"


GOLDEN = {"3": "792d33f8ee63f9b0"}  # renderer version -> sha256[:16] of 6 images at 32 px
